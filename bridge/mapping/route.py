"""Decide what a message makes: document type, action, accession (issue 3 part 1).

The rules are data (mappings/routing.toml): an interface engineer adds a rule
for a sender without touching Python. One message makes one document.
Whether "publish" means create or replace is decided later by the pipeline
from the journal's document registry.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path as FsPath

from bridge.errors import ConfigError, MissingField, UnknownDocumentType
from bridge.hl7.message import ParsedMessage
from bridge.hl7.path import Path, Reader, parse_path
from bridge.mapping.doctypes import load_document_types
from bridge.model import Action, DocumentType


@dataclass(frozen=True, slots=True, kw_only=True)
class TypeRule:
    path: Path
    map: dict[str, DocumentType]
    application: str = ""
    facility: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderDefault:
    application: str
    facility: str
    doc_type: DocumentType


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingRules:
    rules: tuple[TypeRule, ...]
    defaults: tuple[SenderDefault, ...]
    accession: tuple[Path, ...]
    delete: tuple[tuple[Path, frozenset[str]], ...]
    status: Path
    publish: frozenset[str]
    metadata: tuple[tuple[Path, frozenset[str]], ...] = ()
    """Conditions that make a message a metadata update of the published document."""
    metadata_set: tuple[tuple[str, Path], ...] = ()
    """(gateway field name, HL7 path) pairs read for a metadata update."""
    not_final: tuple[tuple[Path, frozenset[str]], ...] = ()
    """Conditions that hold a report said final as not final yet (results still pending)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    doc_type: DocumentType
    action: Action
    """PUBLISH, DELETE or IGNORE (not final yet)."""
    accession: str
    reason: str
    corrected: bool = False
    """Some group has status C (a correction; the same as F for publishing)."""
    settings: tuple[str, ...] = ()
    """METADATA: ``KEY=VALUE`` changes (gateway field names), as bridge.publish.metadata takes them."""


def _doc_type(value: str, types: dict[str, DocumentType], file: str, key: str) -> DocumentType:
    try:
        return types[value.strip().upper()]
    except KeyError:
        raise ConfigError(f"unknown document type {value!r} (declared: {', '.join(types)})",
                          file=file, key=key) from None


#: A rule's ``map`` given as this string: each declared type's own LOINC code gives that type.
BY_LOINC = "document.loinc"


def _type_map(spec, types: dict[str, DocumentType], file: str, key: str) -> dict[str, DocumentType]:
    """A rule's value → type table: its own, or the declared types by their LOINC (:data:`BY_LOINC`)."""
    if spec == BY_LOINC:
        return {t.loinc.upper(): t for t in types.values()}
    if not isinstance(spec, dict):
        raise ConfigError(f'a table of value = "TYPE", or "{BY_LOINC}"', file=file, key=key)
    return {str(k).upper(): _doc_type(v, types, file, f"{key}.{k}") for k, v in spec.items()}


def _path(text, file: str, key: str) -> Path:
    try:
        return parse_path(str(text))
    except ValueError as exc:
        raise ConfigError(str(exc), file=file, key=key) from None


def load_routing(mapping_dir: str | FsPath) -> RoutingRules:
    """Read mapping_dir/routing.toml; errors name the file and key.

    A rule's type is one the folder declares (a <TYPE>.toml with its [document]) or, for a folder
    of rules only, one already declared in this process.
    """
    types = load_document_types(mapping_dir) or {t.name: t for t in DocumentType}
    path = FsPath(mapping_dir) / "routing.toml"
    file = str(path)
    try:
        table = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read routing rules: {exc.strerror}", file=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    rules = []
    for i, rule in enumerate(table.get("rule", [])):
        key = f"rule[{i}]"
        sender = rule.get("sender", {})
        rules.append(TypeRule(
            path=_path(rule.get("path", ""), file, f"{key}.path"),
            map=_type_map(rule.get("map", {}), types, file, f"{key}.map"),
            application=sender.get("application", ""), facility=sender.get("facility", "")))
    defaults = tuple(
        SenderDefault(application=d.get("application", ""), facility=d.get("facility", ""),
                      doc_type=_doc_type(d.get("type", ""), types, file, f"default[{i}].type"))
        for i, d in enumerate(table.get("default", [])))
    action = table.get("action", {})
    return RoutingRules(
        rules=tuple(rules), defaults=defaults,
        accession=tuple(_path(p, file, "accession")
                        for p in table.get("accession", ["OBR-3.1", "ORC-3.1", "OBR-2.1", "ORC-2.1"])),
        delete=tuple((_path(d["path"], file, "action.delete"), frozenset(v.upper() for v in d["values"]))
                     for d in action.get("delete", [])),
        status=_path(action.get("status", "OBR-25"), file, "action.status"),
        publish=frozenset(v.upper() for v in action.get("publish", ["F", "C"])),
        metadata=tuple((_path(d["path"], file, "action.metadata"), frozenset(v.upper() for v in d["values"]))
                       for d in action.get("metadata", [])),
        metadata_set=tuple((name, _path(p, file, f"action.metadata_set.{name}"))
                           for name, p in action.get("metadata_set", {}).items()),
        not_final=tuple((_path(d["path"], file, "action.not_final"), frozenset(v.upper() for v in d["values"]))
                        for d in action.get("not_final", [])))


def _sender_matches(application: str, facility: str, reader: Reader) -> bool:
    msh = reader.occurrences("MSH")[0]
    return ((not application or reader.value(msh, parse_path("MSH-3.1")) == application)
            and (not facility or reader.value(msh, parse_path("MSH-4.1")) == facility))


def _group_values(reader: Reader, path: Path) -> list[str]:
    """The value at *path* in each occurrence of its segment, upper case."""
    return [reader.value(i, path).upper() for i in reader.occurrences(path.segment)]


def route(parsed: ParsedMessage, rules: RoutingRules) -> Route:
    """Type, action and accession of *parsed*.

    Raises UnknownDocumentType (AR, ERR-3 207) when no rule or sender default
    decides the type, and MissingField when no accession can be found.
    """
    reader = Reader(parsed)
    if not reader.occurrences("OBR"):
        raise MissingField("no OBR segment", location="OBR^1")
    accession = ""
    for path in rules.accession:
        found = reader.occurrences(path.segment)
        if found and (accession := reader.value(found[0], path)):
            break
    if not accession:
        raise MissingField("no accession number (OBR-3, ORC-3, OBR-2, ORC-2)", location="OBR^1^3")

    doc_type = None
    for rule in rules.rules:
        if (rule.application or rule.facility) and not _sender_matches(rule.application, rule.facility, reader):
            continue
        for value in _group_values(reader, rule.path):
            if value in rule.map:
                doc_type = rule.map[value]
                break
        if doc_type:
            break
    if doc_type is None:
        for default in rules.defaults:
            if _sender_matches(default.application, default.facility, reader):
                doc_type = default.doc_type
                break
    if doc_type is None:
        raise UnknownDocumentType("document type cannot be determined", location="OBR^1^24")

    for path, values in rules.delete:
        if any(v in values for v in _group_values(reader, path)):
            return Route(doc_type=doc_type, action=Action.DELETE, accession=accession,
                         reason=f"{path} cancels the report")
    for path, values in rules.metadata:
        if any(v in values for v in _group_values(reader, path)):
            settings = tuple(
                f"{name}=" + ",".join(v for i in reader.occurrences(p.segment)[:1] for v in reader.values(i, p)
                                      if v.strip())
                for name, p in rules.metadata_set)
            return Route(doc_type=doc_type, action=Action.METADATA, accession=accession,
                         reason=f"{path} asks for a metadata update", settings=settings)
    statuses = _group_values(reader, rules.status)
    for path, values in rules.not_final:
        pending = sorted({v for v in _group_values(reader, path) if v in values})
        if pending:
            return Route(doc_type=doc_type, action=Action.IGNORE, accession=accession,
                         reason=f"report not final yet ({path} {','.join(pending)})")
    if statuses and all(s in rules.publish for s in statuses):
        return Route(doc_type=doc_type, action=Action.PUBLISH, accession=accession,
                     reason="final report", corrected="C" in statuses)
    pending = ",".join(sorted({s or "empty" for s in statuses if s not in rules.publish}))
    return Route(doc_type=doc_type, action=Action.IGNORE, accession=accession,
                 reason=f"report not final yet ({rules.status} {pending})")
