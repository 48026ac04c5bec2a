"""Every corpus message has one written-down outcome, and the product gives exactly that.

corpus_expected.toml holds, per message, what SHOULD happen (issue 13 item 7):

* ../shared/corpus/hl7-public (each message inside each file, ``file#n``):
  the type the message is forced to, and "valid" (a CDA that passes the XSD
  and the schematron) or the refusal ``AE|AR <HL7 error code> <location>``,
  or "delete" / "not final" (no document). The patient, facility and every
  practitioner are first replaced by known ones (:func:`known_header`): these
  are foreign messages, and the test is about how their bodies map.
* ../shared/corpus/italian-dialects: the outcome its README gives, through
  the default routing: "published" (valid CDA of the type, and a signed PDF
  whose embedded cda.xml is the CDA byte for byte) or the refusal.

A mapping error is never a pass: an entry whose outcome the product does not
give yet because of a known bug is marked ``xfail`` (strict, with what fails),
so that the marker fails as soon as the product is fixed.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from bridge import certs
from bridge.errors import BridgeError
from bridge.gateway.identifiers import document_ids
from bridge.hl7.message import parse_message
from bridge.mapping.analysis import unsupported
from bridge.mapping.mapper import map_report
from bridge.mapping.tables import load_mappings
from bridge.mapping.route import SenderDefault, load_routing, route
from bridge.model import Action, DocumentType
from bridge.cda.render import make_environment, render_cda
from bridge.cda.validate import validate_cda
from bridge.pdf.package import extract_cda, package_pdf
from bridge.pdf.sign import PdfSigner

from fse_helpers import CORPUS, DIALECTS

from .conftest import CHECKOUT, STRUCTURE

PUBLIC = CORPUS
EXPECTED = tomllib.loads((Path(__file__).with_name("corpus_expected.toml")).read_text("utf-8"))

# A message starts at an MSH segment (after an optional UTF-8 BOM) at the start
# of the file or of a line; "MSH" inside a field (MSH_MRN) starts nothing.
_MESSAGE_START = re.compile(rb"(?:^|(?<=[\r\n]))(?:\xef\xbb\xbf)?MSH")

# Fields that name a person (XCN), replaced by a practitioner of practitioners.csv.
_PRACTITIONER_FIELDS = {"ORC": (12,), "OBR": (16, 33, 34), "OBX": (16,), "PV1": (7, 8, 9, 17), "PRT": (5,)}
_KNOWN_HEADER = {"MSH": {3: "LABPRIV"}, "PID": {3: "RMSLSO31M04Z404R^^^^NNITA"}, "OBR": {32: "M001&Rossi&Mario"}}


def split_messages(raw: bytes) -> list[bytes]:
    """The messages of one file (a batch or several MSH); envelope segments stay with their neighbour."""
    starts = [m.start() for m in _MESSAGE_START.finditer(raw)]
    return [raw[a:b] for a, b in zip(starts, starts[1:] + [len(raw)])]


def message_type(raw: bytes) -> str:
    """MSH-9.1 read off the bytes, without the product's parser (whose refusals are under test)."""
    msh = re.split(rb"[\r\n]", raw.removeprefix(b"\xef\xbb\xbf"), maxsplit=1)[0].decode("latin-1")
    fields = msh.split(msh[3:4] or "|")
    return fields[8].split(msh[4:5] or "^")[0] if len(fields) > 8 else ""


def public_messages() -> dict[str, bytes]:
    """``file#n`` → bytes, for every ORU message of hl7-public."""
    return {f"{path.name}#{n}": raw
            for path in sorted(PUBLIC.glob("*.hl7"))
            for n, raw in enumerate(split_messages(path.read_bytes())) if message_type(raw) == "ORU"}


def known_header(text: str) -> str:
    """*text* with the facility, the patient's CF and every practitioner replaced by known ones."""
    lines = []
    for line in text.split("\r"):
        fields = line.split("|")
        wanted = dict(_KNOWN_HEADER.get(fields[0], {}))
        for index in _PRACTITIONER_FIELDS.get(fields[0], ()):
            if index < len(fields) and fields[index].strip():
                wanted[index] = "M002^Bianchi^Laura"
        for index, value in wanted.items():
            fields += [""] * (index + 1 - len(fields))
            fields[index] = value
        lines.append("|".join(fields))
    return "\r".join(lines)


def _params(corpus: str, names) -> list:
    params = []
    for name in names:
        entry = EXPECTED[corpus].get(name, {})
        # raises: only the outcome assertion is expected to fail; a crash is never an xfail.
        marks = ([pytest.mark.xfail(strict=True, raises=AssertionError, reason=entry["xfail"])]
                 if "xfail" in entry else [])
        params.append(pytest.param(name, id=name, marks=marks))
    return params


PUBLIC_MESSAGES = public_messages()
DIALECT_FILES = sorted(p.name for p in DIALECTS.glob("*.hl7"))


@pytest.fixture(scope="module")
def stages():
    """Routing rules (the default ones and one forcing each type), mappings, templates."""
    routing = load_routing(CHECKOUT / "mappings")
    forced = {t.name: dataclasses.replace(routing, rules=(), defaults=(
        SenderDefault(application="", facility="", doc_type=t),)) for t in DocumentType}
    return (routing, forced, load_mappings(CHECKOUT / "mappings", CHECKOUT / "mappings" / "practitioners.csv"),
            make_environment(CHECKOUT / "templates"))


@pytest.fixture(scope="module")
def signer(tmp_path_factory) -> PdfSigner:
    pki = certs.generate_development_pki(tmp_path_factory.mktemp("pki"), fiscal_code="01386030488",
                                         vendor="PIPOHOUSE")
    return PdfSigner.from_credential(certs.load_credential(pki.sign_cert, pki.sign_key))


def outcome(parsed, routing, mappings, env, rules) -> tuple[str, bytes | None]:
    """What the product makes of a parsed message: ("valid TYPE", cda), a refusal, or no document."""
    refusal = unsupported(parsed)
    if refusal is not None:
        return f"{refusal.ack_code} {refusal.err_code} {refusal.location}", None
    try:
        routed = route(parsed, routing)
        if routed.action is Action.DELETE:
            return "delete", None
        if routed.action is not Action.PUBLISH:
            return "not final", None
        report = map_report(parsed, routed, mappings, STRUCTURE)
    except BridgeError as exc:
        return f"{exc.ack_code} {exc.err_code} {exc.location}", None
    ids = document_ids(STRUCTURE.fiscal_code, routed.doc_type.name, STRUCTURE.repository, routed.accession)
    cda = render_cda(report, env, ids)
    result = validate_cda(cda, rules, routed.doc_type)
    if not result.ok:
        return f"invalid {routed.doc_type.name}: " + "; ".join(str(i) for i in result.errors), cda
    return f"valid {routed.doc_type.name}", cda


def _wanted(entry: dict) -> str:
    kind = entry["outcome"]
    return f"valid {entry['type']}" if kind in ("valid", "published") else kind


def test_every_public_message_has_an_expected_outcome():
    assert sorted(EXPECTED["hl7-public"]) == sorted(PUBLIC_MESSAGES)


def test_every_dialect_has_an_expected_outcome():
    assert sorted(EXPECTED["italian-dialects"]) == DIALECT_FILES


@pytest.mark.parametrize("name", _params("hl7-public", PUBLIC_MESSAGES))
def test_public_message_outcome(name, stages, rules):
    _, forced, mappings, env = stages
    entry = EXPECTED["hl7-public"][name]
    try:
        original = parse_message(PUBLIC_MESSAGES[name])
    except BridgeError as exc:
        got = f"{exc.ack_code} {exc.err_code} {exc.location}"
    else:
        parsed = parse_message(known_header(original.text).encode("utf-8"), "utf-8")
        got, _ = outcome(parsed, forced[entry["type"]], mappings, env, rules)
    assert got == _wanted(entry), entry.get("why", "")


@pytest.mark.parametrize("name", _params("italian-dialects", DIALECT_FILES))
def test_dialect_outcome(name, stages, rules, signer):
    routing, _, mappings, env = stages
    entry = EXPECTED["italian-dialects"][name]
    got, cda = outcome(parse_message((DIALECTS / name).read_bytes()), routing, mappings, env, rules)
    assert got == _wanted(entry), entry.get("why", "")
    if entry["outcome"] == "published":
        assert extract_cda(package_pdf(cda, signer)) == cda
