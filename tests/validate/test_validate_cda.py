from concurrent.futures import ThreadPoolExecutor

import pytest
from lxml import etree

from bridge.cda import schematron
from bridge.model import DocumentType
from bridge.cda.validate import load_rules, validate_cda

from .validate_support import NS, TYPES, mutate, sample

SCHEMATRON_FILES = {
    "LAB": "schematronFSE_LAB_v27.1.sch",
    "RAD": "schematronFSE_RAD_v4.1.sch",
    "RSA": "schematron_RSA_v8.3.sch",
    "RAP": "schematronFSE_RAP_1.4.sch",
    "LDO": "schematronFSE_LDO_v5.5.sch",
}
CF_ROOT = "2.16.840.1.113883.2.9.4.3.2"
PATIENT_ID = "/ClinicalDocument[1]/recordTarget[1]/patientRole[1]/id[1]"


@pytest.mark.parametrize("doc_type", TYPES)
def test_official_samples_are_valid(rules, doc_type):
    report = validate_cda(sample(doc_type), rules)
    assert report.xsd_errors == []
    assert report.schematron_errors == []
    assert report.ok
    assert report.doc_type is DocumentType[doc_type]
    assert report.schematron == SCHEMATRON_FILES[doc_type]
    assert report.summary().startswith(f"{doc_type} (XSD + {SCHEMATRON_FILES[doc_type]}): valid")


def lower_case_cf(root):
    patient_id = root.find(f"h:recordTarget/h:patientRole/h:id[@root='{CF_ROOT}']", NS)
    patient_id.set("extension", patient_id.get("extension").lower())


def drop_legal_authenticator(root):
    root.remove(root.find("h:legalAuthenticator", NS))


def first_telecom_without_use(root):
    del root.find(".//h:telecom", NS).attrib["use"]


# Expected (rule id, location) per type, read from each official schematron.
BROKEN = [
    ("LAB", lower_case_cf, "ERRORE-46", PATIENT_ID),
    ("RAD", lower_case_cf, "Errore-46", PATIENT_ID),
    ("RSA", lower_case_cf, "ERRORE-44", PATIENT_ID),
    ("RAP", lower_case_cf, "ERRORE-37", PATIENT_ID),
    ("LDO", lower_case_cf, "Errore-47", PATIENT_ID),
    ("LAB", drop_legal_authenticator, "ERRORE-26", "/ClinicalDocument[1]"),
    ("RAD", drop_legal_authenticator, "ERRORE-29", "/ClinicalDocument[1]"),
    ("RSA", drop_legal_authenticator, "ERRORE-29", "/ClinicalDocument[1]"),
    ("RAP", drop_legal_authenticator, "ERRORE-22", "/ClinicalDocument[1]"),
    ("LDO", drop_legal_authenticator, "ERRORE-29", "/ClinicalDocument[1]"),
    ("LAB", first_telecom_without_use, "ERRORE-44", "/ClinicalDocument[1]/recordTarget[1]/patientRole[1]/telecom[1]"),
    ("RAD", first_telecom_without_use, "Errore-45", "/ClinicalDocument[1]/recordTarget[1]/patientRole[1]/telecom[1]"),
    ("RSA", first_telecom_without_use, "ERRORE-43", "/ClinicalDocument[1]/recordTarget[1]/patientRole[1]/telecom[1]"),
    ("RAP", first_telecom_without_use, "ERRORE-35", "/ClinicalDocument[1]/recordTarget[1]/patientRole[1]/telecom[1]"),
    ("LDO", first_telecom_without_use, "Errore-46", "/ClinicalDocument[1]/author[1]/assignedAuthor[1]/telecom[1]"),
]


@pytest.mark.parametrize("doc_type,change,rule_id,location", BROKEN,
                         ids=[f"{t}-{c.__name__}" for t, c, _, _ in BROKEN])
def test_broken_sample_fails_with_the_rule_id(rules, doc_type, change, rule_id, location):
    report = validate_cda(mutate(sample(doc_type), change), rules)
    assert not report.ok
    assert report.xsd_errors == []
    assert [(i.rule_id, i.location, i.severity) for i in report.schematron_errors] == [(rule_id, location, "error")]
    # The message is the rule's text without its id prefix.
    assert report.schematron_errors[0].message and "|" not in report.schematron_errors[0].message[:3]


def test_cf_message_quotes_the_value(rules):
    report = validate_cda(mutate(sample("LAB"), lower_case_cf), rules)
    assert "'gtwgwy82b42g920m'" in report.schematron_errors[0].message


def test_xsd_error_stops_before_schematron(rules):
    def break_both(root):
        lower_case_cf(root)  # a schematron error that must NOT be reported
        root.insert(0, etree.Element("{urn:hl7-org:v3}unexpected"))

    report = validate_cda(mutate(sample("LAB"), break_both), rules)
    assert not report.ok
    assert report.xsd_errors and report.xsd_errors[0].rule_id == "SCHEMAV_ELEMENT_CONTENT"
    assert "unexpected" in report.xsd_errors[0].message
    assert report.xsd_errors[0].location == "line 3: /ClinicalDocument[1]/unexpected[1]"
    assert report.schematron_errors == [] and report.warnings == []
    assert report.schematron is None
    assert "schematron not run" in report.summary()


def test_not_well_formed_is_a_syntax_error(rules):
    report = validate_cda(b"<ClinicalDocument xmlns='urn:hl7-org:v3'><id></ClinicalDocument>", rules)
    assert [i.rule_id for i in report.xsd_errors] == ["XML"]
    assert report.schematron is None


def test_wrong_type_id_is_a_syntax_error(rules):
    def other_type_id(root):
        root.find("h:typeId", NS).set("extension", "POCD_HD000040")

    report = validate_cda(mutate(sample("RAD"), other_type_id), rules)
    assert [i.rule_id for i in report.xsd_errors] == ["typeId"]


def test_first_template_id_picks_another_types_schematron(rules):
    rad_root = DocumentType.RAD.template_root

    def rad_first(root):
        first = root.find("h:templateId", NS)
        first.addprevious(etree.Element("{urn:hl7-org:v3}templateId", root=rad_root, extension="1.2"))

    report = validate_cda(mutate(sample("LAB"), rad_first), rules)
    assert report.doc_type is DocumentType.RAD
    assert report.schematron == SCHEMATRON_FILES["RAD"]
    assert not report.ok  # a LAB body does not satisfy the RAD rules
    assert report.xsd_errors == []


def test_type_option_forces_the_schematron(rules):
    report = validate_cda(sample("RAD"), rules, DocumentType.LAB)
    assert report.doc_type is DocumentType.LAB
    assert report.schematron == SCHEMATRON_FILES["LAB"]
    assert not report.ok


def test_unknown_first_template_id_is_reported(rules):
    def unknown_first(root):
        root.find("h:templateId", NS).set("root", "1.2.3.4")

    report = validate_cda(mutate(sample("LAB"), unknown_first), rules)
    assert report.doc_type is None and report.schematron is None
    assert [i.rule_id for i in report.schematron_errors] == ["SCHEMATRON"]
    assert "1.2.3.4" in report.schematron_errors[0].message


def test_no_rules_installed(tmp_path, reference_rules):
    assert load_rules(tmp_path) is None
    (tmp_path / "schematron").mkdir()
    assert load_rules(tmp_path) is None  # still no XSD
    assert load_rules(reference_rules) is not None


def test_each_schematron_compiles_once(reference_rules, monkeypatch):
    calls = []
    real = schematron.translate
    monkeypatch.setattr(schematron, "translate", lambda path: calls.append(path.name) or real(path))
    rules = load_rules(reference_rules)
    assert calls == []  # nothing compiled when loading
    for _ in range(3):
        assert validate_cda(sample("LAB"), rules).ok
    assert calls == [SCHEMATRON_FILES["LAB"]]


def test_rules_shared_by_worker_threads(reference_rules):
    rules = load_rules(reference_rules)  # fresh: compiled from inside the worker threads
    broken = mutate(sample("LAB"), lower_case_cf)
    jobs = [(t, sample(t), True) for t in TYPES] * 4 + [("LAB", broken, False)] * 4

    def check(job):
        doc_type, xml, expected = job
        report = validate_cda(xml, rules)
        return report.doc_type.name == doc_type and report.ok is expected

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert all(pool.map(check, jobs))


def test_schematron_runtime_error_is_an_error_of_that_rule(tmp_path, reference_rules, capfd):
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "POCD_MT000040UV02").symlink_to(reference_rules / "schema" / "POCD_MT000040UV02")
    (tmp_path / "schematron").mkdir()
    (tmp_path / "schematron" / "schematronFSE_LAB_v1.0.sch").write_text(
        '<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">'
        '<ns prefix="hl7" uri="urn:hl7-org:v3"/><pattern><rule context="hl7:ClinicalDocument">'
        '<assert test="xs:integer(hl7:code/@code) gt 0">ERRORE-1| not a number</assert>'
        '</rule></pattern></schema>')
    report = validate_cda(sample("LAB"), load_rules(tmp_path))
    assert report.schematron == "schematronFSE_LAB_v1.0.sch"
    assert [i.rule_id for i in report.schematron_errors] == ["ERRORE-1"]
    assert report.schematron_errors[0].message.startswith("the rule could not be evaluated: err:FORG0001")
    assert not report.ok
    assert "11502-2" not in capfd.readouterr().err  # nothing of the document on stderr


def test_latin1_document(rules):
    text = sample("LAB").decode("utf-8").replace("GTWGWY82B42G920M", "GTWGWY82B42G920È")
    xml = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n' + text).encode("iso-8859-1")
    report = validate_cda(xml, rules)
    assert [i.rule_id for i in report.schematron_errors] == ["ERRORE-46"]
    assert "'GTWGWY82B42G920È'" in report.schematron_errors[0].message


def test_doctype_is_refused(rules):
    text = sample("LAB").decode("utf-8").replace(
        "<ClinicalDocument", '<!DOCTYPE ClinicalDocument [<!ENTITY e SYSTEM "file:///etc/hostname">]>\n'
        "<ClinicalDocument", 1).replace("<title>", "<title>&e;", 1)
    report = validate_cda(text.encode("utf-8"), rules)
    assert [(i.rule_id, i.message) for i in report.xsd_errors] == [
        ("XML", "a DOCTYPE is not allowed in a CDA document")]
    assert report.schematron is None
