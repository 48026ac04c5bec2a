"""A generated message through the product's stages, as a worker runs them, and the checks on the result.

:func:`run` calls what the service calls (bridge.mapping.analysis.analyse,
then bridge.service.stages render / validate / package) and reports the first
stage that fails. :func:`validate_independently` runs the reference
validator (../shared/tools/validate_cda.py) on many CDAs in one subprocess.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lxml import etree
from pyhanko.pdf_utils.reader import PdfFileReader
from pypdf import PdfReader

from bridge import certs
from bridge.config import from_dict
from bridge.errors import BridgeError
from bridge.gateway.identifiers import document_ids
from bridge.mapping.analysis import analyse, unsupported
from bridge.model import Action, DocumentType
from bridge.pdf.package import extract_cda
from bridge.pdf.sign import PdfSigner
from bridge.service import stages as worker

from shared_data import CHECKOUT, REFERENCE, VALIDATOR

from .strategies import Generated

HL7 = "urn:hl7-org:v3"


def make_stages(pki_dir: Path) -> worker.Stages:
    """The worker's stages over the checkout's mappings and templates, the official rules, a dev signer."""
    config = from_dict({"certificates": {"development": True},
                        "validation": {"rules_dir": str(REFERENCE.resolve())}},
                       base_dir=CHECKOUT / "etc")
    stages = worker.Stages(config)
    pki = certs.generate_development_pki(pki_dir, fiscal_code=config.structure.fiscal_code, vendor="PIPOHOUSE")
    stages.signer = PdfSigner.from_credential(certs.load_credential(pki.sign_cert, pki.sign_key))
    return stages


@dataclass
class Outcome:
    stage: str
    """"ok", or the first stage that failed: analyse, route, map, notices, render, validate, content, package,
    pdf text."""
    detail: str = ""
    cda: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.stage == "ok"


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def missing_texts(cda: bytes, generated: Generated) -> list[tuple[str, str]]:
    """(kind, value) of what a reader cannot find in the CDA: names, fiscal code, narrative sentences."""
    root = etree.fromstring(cda)
    text = _words(" ".join(root.itertext()))
    flat = _words("".join(root.itertext()))
    missing = [("name", v) for v in (generated.family, generated.given) if v not in text]
    if generated.fiscal_code not in cda.decode("utf-8"):
        missing.append(("fiscal code", generated.fiscal_code))
    # A sentence may be split over elements (a highlight): look in the text joined without spaces too.
    missing += [("text", s) for s in generated.texts if _words(s) not in text and _words(s) not in flat]
    narrative = "".join("".join(t.itertext()) for t in root.iter(f"{{{HL7}}}text"))
    missing += [("attachment kept out of the narrative", a) for a in generated.absent if a in narrative]
    return missing


def unsigned_bytes(pdf: bytes) -> str:
    """Why *pdf* is not one signature over the whole file, or "" (tests/package checks the signature itself)."""
    signatures = PdfFileReader(io.BytesIO(pdf)).embedded_signatures
    if len(signatures) != 1:
        return f"{len(signatures)} signatures in the PDF"
    start, length, after, rest = (int(n) for n in signatures[0].sig_object["/ByteRange"])
    if start != 0 or after + rest != len(pdf):
        return "the signature does not cover the whole file"
    return ""


def unreadable(pdf: bytes, generated: Generated) -> str:
    """What of the PDF a reader cannot read: the patient's names not on page 1, letters the font lacks."""
    pages = [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]
    first = _words(pages[0]).casefold()
    names = [n for n in (generated.family, generated.given) if _words(n).casefold() not in first]
    if names:
        return f"page 1 does not read {names!r}"
    # A character the font has no glyph for is drawn as nothing and read back as NUL.
    blank = next((n for n, text in enumerate(pages, start=1) if "\x00" in text), 0)
    return f"page {blank} has characters without a glyph" if blank else ""


def run(stages: worker.Stages, generated: Generated, *, package: bool = True) -> Outcome:
    """*generated* through analyse → render → validate (→ package), as the service does it."""
    try:
        analysis = analyse(stages, generated.raw)
    except BridgeError as exc:
        return Outcome("analyse", f"{exc.ack_code} {exc.err_code} {exc.location}: {exc.message}")
    if unsupported(analysis) is not None:
        return Outcome("analyse", str(unsupported(analysis)))
    try:
        routed = analysis.routed()
    except BridgeError as exc:
        return Outcome("route", f"{exc.ack_code} {exc.err_code} {exc.location}: {exc.message}")
    if routed.action is not Action.PUBLISH or routed.doc_type.name != generated.doc_type:
        return Outcome("route", f"{routed.doc_type.name} {routed.action.value} ({routed.reason})")
    try:
        report = analysis.mapped_report()
    except BridgeError as exc:
        return Outcome("map", f"{exc.ack_code} {exc.err_code} {exc.location}: {exc.message}")
    notices = {(n.severity, n.location) for n in report.notices}
    if notices != generated.notices:
        return Outcome("notices", f"ERR {sorted(notices)}, expected {sorted(generated.notices)}")
    structure = stages.config.structure
    ids = document_ids(structure.fiscal_code, routed.doc_type.name, structure.repository, routed.accession,
                       repository_index=structure.repository_index)
    try:
        cda = worker.render(stages, report, ids)
    except Exception as exc:       # noqa: BLE001 - any failure here is the finding
        return Outcome("render", repr(exc))
    result = worker.validate(stages, cda, DocumentType[generated.doc_type])
    if not result.ok:
        return Outcome("validate", "; ".join(str(i) for i in result.errors), cda)
    missing = missing_texts(cda, generated)
    if missing:
        kind, example = missing[0]
        return Outcome("content", f"{len(missing)} {kind} not in the CDA, e.g. {example!r}", cda)
    if package:
        try:
            pdf = worker.package(stages, cda)
        except Exception as exc:   # noqa: BLE001
            return Outcome("package", repr(exc), cda)
        if extract_cda(pdf) != cda:
            return Outcome("package", "the embedded cda.xml differs from the CDA", cda)
        unsigned = unsigned_bytes(pdf)
        if unsigned:
            return Outcome("package", unsigned, cda)
        unread = unreadable(pdf, generated)
        if unread:
            return Outcome("pdf text", unread, cda)
    return Outcome("ok", "", cda)


def validate_independently(cdas: list[bytes]) -> list[str]:
    """The reference validator's verdict on each CDA ("" when 0 XSD and 0 schematron errors), in one run."""
    if not cdas:
        return []
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for n, cda in enumerate(cdas):
            path = Path(folder) / f"{n:05d}.xml"
            path.write_bytes(cda)
            paths.append(str(path))
        proc = subprocess.run([sys.executable, str(VALIDATOR), "--reference", str(REFERENCE), *paths],
                              capture_output=True, text=True, timeout=600)
    if proc.returncode == 2:
        raise RuntimeError(f"validate_cda.py could not run: {proc.stderr.strip()}")
    verdicts = {}
    for block in re.split(r"^(?=# )", proc.stdout, flags=re.M):
        head = re.match(r"# (\S+?): ", block)
        if not head:
            continue
        problems = [line for line in block.splitlines() if line.startswith(("XSD ", "ERROR "))]
        summary = re.search(r"^xsd=(\w+) schematron_errors=(\d+)", block, flags=re.M)
        if summary and (summary.group(1) != "ok" or summary.group(2) != "0") and not problems:
            problems = [summary.group(0)]
        verdicts[Path(head.group(1)).name] = "; ".join(problems)
    return [verdicts.get(Path(p).name, "no verdict from validate_cda.py") for p in paths]
