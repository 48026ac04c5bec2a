"""Every fixture and example renders to a CDA with zero XSD and zero schematron errors.

Validation is bridge.cda.validate against the official XSD and schematrons in
../shared/reference; the structural rules the gateway's CDA reader relies on
(gateway.md §6) and a local vocabulary check are asserted here too.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

import pytest
from lxml import etree

from bridge.model import DocumentType

from .conftest import EXAMPLES, FIXTURES, REFERENCE

NS = "urn:hl7-org:v3"
H = f"{{{NS}}}"
TYPE_TEMPLATES = {
    "LAB": "2.16.840.1.113883.2.9.10.1.1", "RAD": "2.16.840.1.113883.2.9.10.1.7.1",
    "RSA": "2.16.840.1.113883.2.9.10.1.9.1", "RAP": "2.16.840.1.113883.2.9.10.1.8.1",
    "LDO": "2.16.840.1.113883.2.9.10.1.5"}

FIXTURE_FILES = sorted(FIXTURES.glob("*/*.hl7"))
EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.hl7") if "cancel" not in p.name)


def expected_type(path: Path) -> str:
    return path.parent.name if path.parent.parent == FIXTURES else path.stem.split("-")[0].upper()


def test_at_least_four_fixtures_per_type():
    for doc_type in DocumentType:
        assert len(list((FIXTURES / doc_type.name).glob("*.hl7"))) >= 4, doc_type.name


@pytest.mark.parametrize("path", FIXTURE_FILES + EXAMPLE_FILES,
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_renders_valid(pipeline, rules, path):
    from bridge.cda.validate import validate_cda

    report, ids, xml = pipeline(path)
    assert report.doc_type.name == expected_type(path)
    result = validate_cda(xml, rules)
    assert result.schematron, "the schematron must have run"
    assert not result.xsd_errors, [str(i) for i in result.xsd_errors]
    assert not result.schematron_errors, [str(i) for i in result.schematron_errors]
    check_structure(xml, report.doc_type.name, ids)
    check_vocabulary(xml)


def check_structure(xml: bytes, doc_type: str, ids) -> None:
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(xml)
    assert root.tag == H + "ClinicalDocument"
    # The gateway reads the first <id>/<code>/<templateId> in document order.
    assert next(root.iter(H + "id")) is root.find(H + "id")
    assert next(root.iter(H + "code")) is root.find(H + "code")
    assert root.find(H + "templateId").get("root") == TYPE_TEMPLATES[doc_type]
    assert f'{root.find(H + "id").get("root")}^{root.find(H + "id").get("extension")}' == ids.document_id
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.startswith(H):
            assert element.prefix is None, f"prefixed HL7 element {element.tag}"
    assert b"codeSystemVersion" not in xml
    # narrative references point at existing IDs
    anchors = {e.get("ID") for e in root.iter() if isinstance(e.tag, str) and e.get("ID")}
    for reference in root.iter(H + "reference"):
        assert reference.get("value", "").lstrip("#") in anchors


@cache
def terminology(system: str) -> frozenset[str] | None:
    path = REFERENCE / "terminology" / f"{system}.csv"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        return frozenset(row["code"] for row in csv.DictReader(handle))


def check_vocabulary(xml: bytes) -> None:
    """What the gateway's vocabulary step would refuse, for the code lists we have locally."""
    root = etree.fromstring(xml)
    for element in root.iter():
        system = element.get("codeSystem") if isinstance(element.tag, str) else None
        if not system:
            continue
        arcs = system.split(".")
        assert "999" not in arcs and "9999" not in arcs, system
        codes = terminology(system)
        if codes is not None:
            assert element.get("code") in codes, (system, element.get("code"))


@pytest.mark.parametrize("path, previous_version", [
    (EXAMPLES / "lab-correction.hl7", 1), (FIXTURES / "RAD" / "v28-correction.hl7", 1),
    (FIXTURES / "RSA" / "v28-correction-two-services.hl7", 2), (FIXTURES / "RAP" / "v28-correction.hl7", 1),
    (FIXTURES / "LDO" / "v28-eni-correction.hl7", 3)])
def test_replacement_is_valid(pipeline, rules, path, previous_version):
    from bridge.cda.validate import validate_cda

    first_report, first_ids, _ = pipeline(path)
    previous_id = first_ids.document_id.replace("_1", f"_{previous_version}")
    report, ids, xml = pipeline(path, previous_id=previous_id, previous_version=previous_version)
    root = etree.fromstring(xml)
    doc_id, set_id = root.find(H + "id"), root.find(H + "setId")
    assert doc_id.get("extension").endswith(f"_{previous_version + 1}")
    assert set_id.get("extension") == first_ids.extension, "the set keeps the first version's id"
    assert set_id.get("root") == doc_id.get("root")
    assert root.find(H + "versionNumber").get("value") == str(previous_version + 1)
    related = root.findall(H + "relatedDocument")
    assert [r.get("typeCode") for r in related] == ["RPLC"]
    assert related[0].find(f"{H}parentDocument/{H}id").get("extension") == previous_id.split("^")[1]
    result = validate_cda(xml, rules)
    assert result.ok, [str(i) for i in result.errors]


def test_first_version_set_id_equals_id(pipeline):
    _, ids, xml = pipeline(EXAMPLES / "lab.hl7")
    root = etree.fromstring(xml)
    assert root.find(H + "setId").attrib == root.find(H + "id").attrib
    assert root.find(H + "versionNumber").get("value") == "1"
    assert root.find(H + "relatedDocument") is None
    assert ids.document_id == "2.16.840.1.113883.2.9.2.90.4.4^01386030488.LAB.999.A26-00412_1"


def test_lab_status_and_values(pipeline):
    _, _, xml = pipeline(EXAMPLES / "lab.hl7")
    root = etree.fromstring(xml)
    assert root.find("{urn:hl7-org:sdtc}statusCode").get("code") == "completed"
    values = root.findall(f".//{H}observation/{H}value")
    assert values[0].get("value") == "98" and values[0].get("unit") == "mg/dL"
    ranges = root.findall(f".//{H}observationRange")
    assert ranges and all(r.find(f"{H}interpretationCode").get("code") == "N" for r in ranges)


def test_lab_tests_keep_the_laboratorys_own_name(pipeline):
    """issue 13 item 2: LOINC's code, the lab's name as originalText (a reference to its cell in the
    results table) and its local code as a translation carrying the same name."""
    report, _, xml = pipeline(EXAMPLES / "lab.hl7")
    root = etree.fromstring(xml)
    cells = {td.get("ID"): "".join(td.itertext()) for td in root.iter(H + "td") if td.get("ID")}
    named = [o for s in report.sections for e in s.exams for o in e.observations if o.name]
    codes = [c for c in root.iter(H + "code") if c.find(H + "originalText") is not None]
    assert named and len(codes) == len(named)
    for code, observation in zip(codes, named):
        reference = code.find(f"{H}originalText/{H}reference").get("value")
        assert cells[reference.lstrip("#")] == observation.name
        # the local code: a translation of LOINC's, or the code itself when the lab has no LOINC
        local = code.findall(H + "translation") or [code]
        assert local[0].get("displayName") == observation.name
        # originalText comes first in a CD (CDA R2 data types)
        assert [child.tag for child in code][:1] == [H + "originalText"]
    glucose = codes[0]
    assert (glucose.get("code"), cells["obs1-name"]) == ("2345-7", "Glucosio")


def test_long_text_kept_exactly_in_the_value(pipeline):
    _, _, xml = pipeline(FIXTURES / "LAB" / "v28-corrected-long.hl7")
    root = etree.fromstring(xml)
    texts = [v.text for v in root.iter(H + "value") if v.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "ST"]
    assert ("Il presente referto sostituisce il precedente per correzione del valore di PT.\n"
            "Dosaggio ripetuto su nuovo campione.\n\nIl fibrinogeno non e' stato eseguito: campione coagulato.") in texts
