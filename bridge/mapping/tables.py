"""Loading mappings/: header.toml, one <TYPE>.toml per document type, the CSV code tables
and the practitioners, checked once at start (a bad file names itself and the key).

What the files mean is the mapper's (bridge.mapping.mapper and the modules it calls); this
module only reads and checks them.
"""

from __future__ import annotations

import csv
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from stdnum.it import codicefiscale

from bridge.errors import ConfigError
from bridge.hl7.path import parse_path
from bridge.mapping.doctypes import load_document_types
from bridge.mapping.sections import check_declaration
from bridge.model import DocumentType


@dataclass(frozen=True, slots=True)
class Practitioner:
    fiscal_code: str
    family: str
    given: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TypeMapping:
    doc_type: DocumentType
    settings: dict[str, Any]
    """The type file merged over header.toml (the type's [header] wins)."""
    file: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Mappings:
    types: dict[DocumentType, TypeMapping]
    tables: dict[str, tuple[dict[str, str], ...]]
    """CSV code tables by file name, rows as dicts."""
    practitioners: dict[str, Practitioner]
    directory: FsPath

    def lookup(self, table: str, key: str, column: str = "key", **match: str) -> dict[str, str] | None:
        """The first row of *table* whose *column* equals *key* (and the *match* columns).

        Tables are small (tens of rows): a scan keeps Mappings immutable and shareable by threads.
        """
        rows = self.tables.get(table)
        if rows is None:
            raise ConfigError("code table not found", file=str(self.directory / table))
        for row in rows:
            if row.get(column, "") == key and all(row.get(k, "") == v for k, v in match.items()):
                return row
        return None


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_toml(path: FsPath) -> dict:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read mapping: {exc.strerror}", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from None


def _read_csv(path: FsPath) -> tuple[dict[str, str], ...]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(line for line in handle if not line.startswith("#"))]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read code table: {exc}", file=str(path)) from None
    return tuple({k.strip(): (v or "").strip() for k, v in row.items() if k} for row in rows)


def load_practitioners(path: FsPath | None) -> dict[str, Practitioner]:
    """The practitioners table (header ``id,fiscal_code,family,given``), CFs checked."""
    if path is None:
        return {}
    rows = _read_csv(FsPath(path))
    out = {}
    for n, row in enumerate(rows, start=2):
        if set(("id", "fiscal_code", "family", "given")) - set(row):
            raise ConfigError("header must be id,fiscal_code,family,given", file=str(path))
        cf = row["fiscal_code"].upper()
        if not codicefiscale.is_valid(cf):
            raise ConfigError(f"line {n}: invalid fiscal code", file=str(path), key="fiscal_code")
        out[row["id"]] = Practitioner(cf, row["family"], row["given"])
    return out


_LOOKS_LIKE_PATH = re.compile(r"^[A-Z][A-Z0-9]{2}-")


def _check_paths(node: Any, file: str, key: str = "") -> None:
    """Every HL7 path in a mapping must parse: a typo is a start-up error, not an AE later."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name not in ("map",):
                _check_paths(value, file, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for value in node:
            _check_paths(value, file, key)
    elif isinstance(node, str) and _LOOKS_LIKE_PATH.match(node):
        try:
            parse_path(node)
        except ValueError as exc:
            raise ConfigError(str(exc), file=file, key=key) from None


def _check_participations(table: dict, file: str) -> None:
    """[participations] keys are fields (``OBR-32``), values lists of PRT-4 role codes."""
    for field, roles in table.items():
        try:
            parse_path(field)
        except ValueError as exc:
            raise ConfigError(str(exc), file=file, key="participations") from None
        if not isinstance(roles, list):
            raise ConfigError(f"{field}: a list of PRT-4 role codes", file=file, key="participations")


def load_mappings(mapping_dir: str | FsPath, practitioners_csv: str | FsPath | None) -> Mappings:
    """Read header.toml, every <TYPE>.toml (its [document] declares the type) and the CSV tables of
    *mapping_dir*, once."""
    directory = FsPath(mapping_dir)
    header = _read_toml(directory / "header.toml")
    types = {}
    for doc_type in load_document_types(directory).values():
        path = directory / f"{doc_type.name}.toml"
        own = _read_toml(path)
        own.pop("document")  # the type's facts: doc_type
        settings = _merge(header, own.pop("header", {}))
        settings.update(own)
        _check_paths(settings, str(path))
        _check_participations(settings.get("participations", {}), str(path))
        check_declaration(settings.get("sections", {}).get("required", {}), str(path))
        types[doc_type] = TypeMapping(doc_type=doc_type, settings=settings, file=str(path))
    practitioners_path = FsPath(practitioners_csv) if practitioners_csv else None
    tables = {p.name: _read_csv(p) for p in sorted(directory.glob("*.csv"))
              if practitioners_path is None or p.resolve() != practitioners_path.resolve()}
    return Mappings(types=types, tables=tables, practitioners=load_practitioners(practitioners_path),
                    directory=directory)


# --------------------------------------------------------------------------- text and times
