"""Document types as data: the ``[document]`` table of each ``mappings/<TYPE>.toml``.

A type's facts (LOINC code, CDA template and its root, title, the gateway
metadata it implies, the schematron that validates it) are declared once, in
its mapping file; the model, routing, validation, the gateway request and the
accreditation run read them from the :class:`DocumentType` loaded here. A
sixth type is one more file (and its template), not a change to Python. The
Region's identifiers still know five types only: the gateway layer refuses
any other (bridge.gateway.bodies).

Every type loaded in this process is declared by name, so that
``DocumentType["LAB"]``, ``DocumentType.LAB`` and ``for t in DocumentType``
keep working for callers that hold only a name (the journal, the CLI). Until
a mappings folder is loaded, those read the checkout's own ``mappings/``.
A worker process should load its configured folder before it looks a type up
by name or root (validation's schematron names), as the service does.
Loading a folder again returns the objects already declared when their facts
are the same, so a type is one object however often it is loaded.
"""

from __future__ import annotations

import tomllib
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from bridge.errors import ConfigError

LOINC = "2.16.840.1.113883.6.1"
#: The checkout's mappings folder: the declarations read before a configuration loads its own.
DEFAULT_MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"

_declared: dict[str, "DocumentType"] = {}
#: The folders loaded so far: until one is, the checkout's is (a type unpickled in a worker
#: process declares itself alone; it must not hide the others).
_folders: set[Path] = set()


class _Declared(type):
    """Name look-ups over the declared types (the way the former enum was used)."""

    def __getitem__(cls, name: str) -> "DocumentType":
        return _registry()[name]

    def __getattr__(cls, name: str) -> "DocumentType":
        if name.startswith("_") or not name.isupper():
            raise AttributeError(name)
        try:
            return _registry()[name]
        except KeyError:
            raise AttributeError(f"no document type {name} is declared") from None

    def __iter__(cls):
        return iter(tuple(_registry().values()))

    def __len__(cls) -> int:
        return len(_registry())

    def __contains__(cls, item) -> bool:
        return isinstance(item, DocumentType) and _registry().get(item.name) == item


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class DocumentType(metaclass=_Declared):
    """One document type as its mapping declares it (``[document]``)."""

    name: str
    """LAB, RAD...: the file's name, the routing rules' value, the identifiers' <TYPE>."""
    loinc: str
    """ClinicalDocument/code (LOINC)."""
    display: str
    """ClinicalDocument/code/@displayName."""
    title: str
    """ClinicalDocument/title."""
    template: str
    """The Jinja2 template under the templates folder."""
    template_root: str
    """The first templateId/@root: the gateway picks the schematron by it."""
    template_version: str
    """That templateId's @extension."""
    schematron: str
    """The type's name in schematron file names (``schematronFSE_LAB_v27.1.sch``); "" for none."""
    class_code: str
    """tipoDocumentoLivAlto (gateway.md section 4, set B)."""
    clinical_activity: str
    """tipoAttivitaClinica (set C)."""
    inpatient: bool = False
    """tipologiaStruttura Ospedale when the message names no patient class (PV1-2)."""

    @property
    def resource_hl7_type(self) -> str:
        """The JWT claim value that must equal the CDA's code (gateway.md section 3)."""
        return f"('{self.loinc}^^{LOINC}')"

    def __repr__(self) -> str:
        return f"DocumentType.{self.name}"

    def __reduce__(self):
        # Pickled to a worker process by value, declared again there (one object per type).
        return _revive, astuple(self)


def _revive(*values) -> DocumentType:
    return declare(DocumentType(**{f.name: v for f, v in zip(fields(DocumentType), values)}))


_REQUIRED = ("loinc", "display", "title", "template", "template_root", "template_version",
             "class_code", "clinical_activity")


def declare(doc_type: DocumentType) -> DocumentType:
    """The declared object with these facts: an equal one already declared, else *doc_type* (it wins)."""
    known = _declared.get(doc_type.name)
    if known == doc_type:
        return known
    _declared[doc_type.name] = doc_type
    return doc_type


def _registry() -> dict[str, DocumentType]:
    if not _folders:
        load_document_types(DEFAULT_MAPPINGS)
    return _declared


def type_files(directory: Path) -> list[Path]:
    """The type files of a mappings folder: ``<TYPE>.toml``, the name in capitals."""
    return sorted(p for p in Path(directory).glob("*.toml") if p.stem.isupper())


def read_declaration(name: str, table, file: str) -> DocumentType:
    """The DocumentType of one ``[document]`` table; a missing or mistyped key names itself."""
    if not isinstance(table, dict):
        raise ConfigError("missing table", file=file, key="document")
    for key in _REQUIRED:
        if not isinstance(table.get(key), str) or not table[key]:
            raise ConfigError("missing key (a non-empty string)", file=file, key=f"document.{key}")
    unknown = set(table) - {f.name for f in fields(DocumentType)}
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}", file=file, key="document")
    return DocumentType(name=name, **{k: table[k] for k in _REQUIRED},
                        schematron=str(table.get("schematron", "")), inpatient=bool(table.get("inpatient", False)))


def load_document_types(directory: str | Path) -> dict[str, DocumentType]:
    """The types declared in *directory*, by name, in file-name order; each one declared in the process."""
    out = {}
    for path in type_files(Path(directory)):
        try:
            table = tomllib.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read mapping: {exc.strerror}", file=str(path)) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from None
        out[path.stem] = declare(read_declaration(path.stem, table.get("document"), str(path)))
    _folders.add(Path(directory).resolve())
    return out
