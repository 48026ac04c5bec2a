"""Local CDA validation: the CDA XSD (lxml), then the official schematron (saxonche).

Done in the gateway's order (cda.md section 1): XML syntax and XSD first; when
they fail nothing else runs. The schematron is then picked by the ``@root`` of
the document's FIRST ``templateId``, the highest version for that root; a
failed assert is an error, a fired report a warning. Which type a root and a
schematron file name stand for is each type's declaration (mappings/<TYPE>.toml
``[document]``: ``template_root``, ``schematron``); versions come from the
schematron file names (``schematronFSE_LAB_v27.1.sch`` is LAB 27.1).

Rules are data the user installs (``fse-bridge rules install``):
``<rules_dir>/schema/POCD_MT000040UV02/CDA.xsd`` and ``<rules_dir>/schematron/*.sch``.
:class:`Rules` compiles each schematron once, on first use, and serialises the
calls into lxml's schema object and saxon behind one lock, so one ``Rules``
may be shared by worker threads; saxon itself runs on its own thread
(:mod:`bridge.cda.saxon`: a saxon object freed on another thread ends the process).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from bridge.cda import schematron
from bridge.cda.saxon import SAXON
from bridge.errors import NotProcessable
from bridge.model import DocumentType

CDA_NS = "urn:hl7-org:v3"
XSD_FOLDER = "POCD_MT000040UV02"
"""The only CDA schema the gateway knows, chosen by ``typeId/@extension``."""

CATALOGUE_ARCHIVE = "https://github.com/ministero-salute/it-fse-catalogs/archive/refs/heads/main.zip"
"""The official catalogue repository's archive: ``fse-bridge rules install`` takes it as it is."""

# schematronFSE_LAB_v27.1.sch, schematron_RSA_v8.3.sch, schematronFSE_RAP_1.4.sch: the type's
# ``schematron`` name (mappings/<TYPE>.toml [document]) and the version.
_SCHEMATRON_NAME = re.compile(r"(?:^|[_-])([A-Za-z]+)[_-]v?(\d+(?:\.\d+)*)\.sch$")


def type_of_root(template_root: str) -> DocumentType | None:
    """The declared type whose first templateId has this root."""
    return next((t for t in DocumentType if t.template_root == template_root), None)


def type_of_schematron(name: str) -> DocumentType | None:
    """The declared type a schematron file name's type part names (LAB, rsa...)."""
    return next((t for t in DocumentType if t.schematron and t.schematron.upper() == name.upper()), None)


@dataclass(frozen=True)
class Issue:
    rule_id: str
    """Assertion id or message prefix (``ERRORE-b27``, ``W002``); XSD: libxml2's error type."""
    message: str
    """The rule's own text; it may quote document content (a CF): do not log it at INFO."""
    location: str
    """XPath-like location (``/ClinicalDocument[1]/recordTarget[1]``), XSD: with the line."""
    severity: str = "error"
    """``error`` or ``warning``."""

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.rule_id} at {self.location}: {self.message}"


@dataclass
class ValidationReport:
    xsd_errors: list[Issue] = field(default_factory=list)
    schematron_errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    schematron: str | None = None
    """File name of the schematron that ran (None when it did not run)."""
    doc_type: DocumentType | None = None

    @property
    def ok(self) -> bool:
        return not self.xsd_errors and not self.schematron_errors

    @property
    def errors(self) -> list[Issue]:
        return self.xsd_errors + self.schematron_errors

    def summary(self) -> str:
        kind = self.doc_type.name if self.doc_type else "unknown type"
        against = f"XSD + {self.schematron}" if self.schematron else "XSD"
        if self.xsd_errors:
            verdict = f"INVALID: {len(self.xsd_errors)} XSD error(s), schematron not run"
        elif self.schematron_errors:
            verdict = f"INVALID: {len(self.schematron_errors)} schematron error(s)"
        else:
            verdict = "valid"
        warnings = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return f"{kind} ({against}): {verdict}{warnings}"


@dataclass(frozen=True)
class SchematronFile:
    doc_type: DocumentType
    version: tuple[int, ...]
    path: Path

    @property
    def root(self) -> str:
        return self.doc_type.template_root

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def parse_schematron_name(path: Path) -> SchematronFile | None:
    """Type and version from a schematron file name, None when it names neither."""
    match = _SCHEMATRON_NAME.search(path.name)
    if not match:
        return None
    doc_type = type_of_schematron(match.group(1))
    if doc_type is None:
        return None
    version = tuple(int(p) for p in match.group(2).split("."))
    return SchematronFile(doc_type, version, path)


def latest_schematrons(paths) -> dict[DocumentType, SchematronFile]:
    """The highest version per type among *paths* (others are ignored)."""
    latest: dict[DocumentType, SchematronFile] = {}
    for path in paths:
        found = parse_schematron_name(Path(path))
        if found and (found.doc_type not in latest or found.version > latest[found.doc_type].version):
            latest[found.doc_type] = found
    return latest


class _SchemaFolderResolver(etree.Resolver):
    """Resolve an XSD include by file name inside the schema folder.

    CDA.xsd includes ``./coreschemas/POCD_MT000040UV02.xsd`` while the file
    sits next to it; the gateway looks includes up by name (reference/README.md).
    """

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def resolve(self, url, pubid, context):
        candidate = self.folder / Path(url.split("?")[0]).name
        if candidate.is_file():
            return self.resolve_filename(str(candidate), context)
        return None


class Rules:
    """Installed validation rules: the CDA XSD and the schematron per type.

    Keep one per process (the service, the simulator): each schematron is
    compiled by the first document of its type, then reused.
    """

    def __init__(self, rules_dir: Path, schematrons: dict[DocumentType, SchematronFile]):
        self.rules_dir = Path(rules_dir)
        self.schema_dir = self.rules_dir / "schema" / XSD_FOLDER
        self.schematrons = dict(schematrons)
        self._lock = threading.Lock()
        self._xsd: etree.XMLSchema | None = None
        self._saxon_owner = SAXON.new_owner(self)
        self._compiled: set[DocumentType] = set()

    def warm(self) -> None:
        """Load the XSD and compile every schematron now (RulesError names a broken file)."""
        with self._lock:
            self._schema()
            for doc_type in self.schematrons:
                self._compile_once(doc_type)

    def schematron_for(self, doc_type: DocumentType) -> SchematronFile | None:
        return self.schematrons.get(doc_type)

    def check_xsd(self, doc: etree._ElementTree) -> list[Issue]:
        with self._lock:
            schema = self._schema()
            try:
                if schema.validate(doc):
                    return []
            except etree.XMLSchemaValidateError as exc:
                return [Issue("XSD", f"the document could not be checked against the XSD: {exc}", "/")]
            return [Issue(e.type_name, e.message, f"line {e.line}: {_readable_path(doc, e.path)}")
                    for e in schema.error_log]

    def check_schematron(self, xml_text: str, doc_type: DocumentType) -> list[Issue]:
        """Findings of the type's schematron (errors and warnings) on *xml_text*."""
        from saxonche import PySaxonApiError

        with self._lock:
            self._compile_once(doc_type)
            try:
                output = SAXON.transform(self._saxon_owner, doc_type.name, xml_text)
            except PySaxonApiError as exc:
                # A rule's XPath failed on this document (e.g. one item expected, two found):
                # the document cannot be accepted, and the service must not crash.
                return [Issue("SCHEMATRON-RUNTIME", f"the schematron could not evaluate the document: {exc}",
                              "/ClinicalDocument[1]")]
        return read_findings(output)

    def _schema(self) -> etree.XMLSchema:
        if self._xsd is None:
            parser = etree.XMLParser(no_network=True, resolve_entities=False)
            parser.resolvers.add(_SchemaFolderResolver(self.schema_dir))
            main = self.schema_dir / "CDA.xsd"
            try:
                self._xsd = etree.XMLSchema(etree.parse(str(main), parser))
            except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
                raise RulesError(f"cannot load the CDA schema {main}: {exc}") from None
        return self._xsd

    def _compile_once(self, doc_type: DocumentType) -> None:
        """The type's schematron compiled (once) on the saxon thread."""
        if doc_type not in self._compiled:
            from saxonche import PySaxonApiError  # slow import: only when used

            source = self.schematrons[doc_type].path
            try:
                text = schematron.translate(source).decode("utf-8")
                SAXON.compile(self._saxon_owner, doc_type.name, text)
            except (schematron.SchematronError, PySaxonApiError) as exc:
                raise RulesError(f"cannot compile the schematron {source.name}: {exc}") from None
            self._compiled.add(doc_type)


def _readable_path(doc: etree._ElementTree, path: str | None) -> str:
    """libxml2's ``/*/*[3]`` as ``/ClinicalDocument[1]/recordTarget[1]``, the schematron's style."""
    try:
        found = doc.xpath(path) if path else []
    except etree.XPathError:
        found = []
    if not found or not isinstance(found[0], etree._Element):
        return path or ""
    steps = []
    for element in [*reversed(list(found[0].iterancestors())), found[0]]:
        name = etree.QName(element).localname
        same = [s for s in element.itersiblings(preceding=True) if s.tag == element.tag]
        steps.append(f"/{name}[{len(same) + 1}]")
    return "".join(steps)


def read_findings(output: str) -> list[Issue]:
    """Issues from the output of a stylesheet made by :func:`bridge.cda.schematron.translate`."""
    results = etree.fromstring(output.encode("utf-8"))
    issues = []
    for finding in results.iter(f"{{{schematron.OUT}}}finding"):
        rule_id = finding.get("id", "")
        message = " ".join((finding.text or "").split())
        # The id is also the message prefix ("ERRORE-b27| ..."): keep the text only.
        if rule_id and message.startswith(rule_id):
            message = message[len(rule_id):].lstrip(" |")
        issues.append(Issue(rule_id, message, finding.get("location", ""), finding.get("severity", "error")))
    return issues


class RulesError(NotProcessable):
    """The installed rules are unusable (a broken XSD or schematron file): names the file.

    AR 207: the message is fine, this installation cannot check it now.
    """


def load_rules(rules_dir: Path) -> Rules | None:
    """The rules installed in *rules_dir*, or None when there are none.

    Installed means ``schema/POCD_MT000040UV02/CDA.xsd`` and at least one
    schematron whose name gives its type and version. Nothing is compiled here.
    """
    rules_dir = Path(rules_dir)
    if not (rules_dir / "schema" / XSD_FOLDER / "CDA.xsd").is_file():
        return None
    folder = rules_dir / "schematron"
    if not folder.is_dir():
        return None
    schematrons = latest_schematrons(sorted(folder.glob("*.sch")))
    if not schematrons:
        return None
    return Rules(rules_dir, schematrons)


def no_rules_message(rules_dir: Path) -> str:
    """The loud notice when nothing is installed (validate, render, service start-up)."""
    return (f"LOCAL VALIDATION IS OFF: no validation rules in {rules_dir}\n"
            f"  (needs schema/{XSD_FOLDER}/CDA.xsd and schematron/*.sch).\n"
            f"  Install the official ones with:\n"
            f"    fse-bridge rules install {CATALOGUE_ARCHIVE}\n"
            f"  or from a folder or archive laid out the same way: fse-bridge rules install SOURCE")


def select_type(root: etree._Element) -> tuple[DocumentType | None, str]:
    """The document type the first ``templateId/@root`` selects, and that root."""
    first = root.find(f"{{{CDA_NS}}}templateId")
    template_root = first.get("root", "") if first is not None else ""
    return type_of_root(template_root), template_root


def validate_cda(xml: bytes, rules: Rules, doc_type: DocumentType | None = None) -> ValidationReport:
    """Validate a CDA as the gateway does: XSD, then the schematron of its type.

    *doc_type* forces the schematron; by default the first templateId picks it.
    """
    report = ValidationReport(doc_type=doc_type)
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False, huge_tree=False)
    try:
        doc = etree.ElementTree(etree.fromstring(xml, parser))
    except etree.XMLSyntaxError as exc:
        report.xsd_errors.append(Issue("XML", f"not well-formed XML: {exc.msg}", f"line {exc.lineno}"))
        return report
    root = doc.getroot()
    if root.getroottree().docinfo.internalDTD is not None or root.getroottree().docinfo.doctype:
        # No CDA has one; entities would reach the XSD and saxon unresolved.
        report.xsd_errors.append(Issue("XML", "a DOCTYPE is not allowed in a CDA document", "line 1"))
        return report
    if root.tag != f"{{{CDA_NS}}}ClinicalDocument":
        report.xsd_errors.append(Issue("XML", f"the root element is {root.tag}, not ClinicalDocument",
                                       "/"))
        return report
    type_id = root.find(f"{{{CDA_NS}}}typeId")
    extension = type_id.get("extension") if type_id is not None else None
    if extension != XSD_FOLDER:
        report.xsd_errors.append(Issue(
            "typeId", f"typeId/@extension is {extension!r}: only {XSD_FOLDER} has a schema",
            "/ClinicalDocument[1]/typeId[1]"))
        return report
    template_root = ""
    if doc_type is None:
        doc_type, template_root = select_type(root)
        report.doc_type = doc_type
    report.xsd_errors = rules.check_xsd(doc)
    if report.xsd_errors:
        return report
    chosen = rules.schematron_for(doc_type) if doc_type else None
    if chosen is None:
        if doc_type is None:
            why = f"the first templateId root {template_root!r} selects no schematron"
        else:
            why = (f"no schematron serves {doc_type.name} (template {doc_type.template_root}): "
                   + ("none installed for it" if doc_type.schematron else "its declaration names none"))
        report.schematron_errors.append(Issue("SCHEMATRON", why, "/ClinicalDocument[1]/templateId[1]"))
        return report
    report.schematron = chosen.path.name
    for issue in rules.check_schematron(etree.tostring(doc, encoding="unicode"), doc_type):
        (report.warnings if issue.severity == "warning" else report.schematron_errors).append(issue)
    return report
