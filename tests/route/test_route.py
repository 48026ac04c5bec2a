"""Routing: document type, action and accession from the message and mappings/routing.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import ConfigError, MissingField, UnknownDocumentType
from bridge.hl7.message import parse_message
from bridge.model import Action, DocumentType
from bridge.mapping.route import load_routing, route

CHECKOUT = Path(__file__).resolve().parents[2]
MAPPINGS = CHECKOUT / "mappings"


@pytest.fixture(scope="module")
def rules():
    return load_routing(MAPPINGS)


def obr(n=1, *, service="GLU^Glucosio^L", section="CH", status="F", placer="P1", filler="F1"):
    fields = ["OBR", str(n), placer, filler, service] + [""] * 28
    fields[24], fields[25] = section, status
    return "|".join(fields)


def message(*segments, app="LIS", facility="LABPRIV", orc="ORC|RE|P1|F1"):
    head = [f"MSH|^~\\&|{app}|{facility}|FSE|RT|20260101120000||ORU^R01|C1|P|2.5",
            "PID|1||RMSLSO31M04Z404R^^^^NNITA||Rossi^Alessio"]
    if orc:
        head.append(orc)
    return parse_message("\r".join(head + list(segments)).encode())


@pytest.mark.parametrize("loinc, expected", [
    ("11502-2", DocumentType.LAB), ("68604-8", DocumentType.RAD), ("11488-4", DocumentType.RSA),
    ("11526-1", DocumentType.RAP), ("34105-7", DocumentType.LDO)])
def test_document_loinc_in_obr4_wins(rules, loinc, expected):
    # OBR-24 says LAB, but the document LOINC in OBR-4.1 is the first rule.
    assert route(message(obr(service=f"{loinc}^Doc^LN", section="CH")), rules).doc_type is expected


@pytest.mark.parametrize("section, expected", [
    ("CH", "LAB"), ("HM", "LAB"), ("MB", "LAB"), ("URN", "LAB"), ("BLB", "LAB"), ("UR", "LAB"),
    ("RAD", "RAD"), ("CT", "RAD"), ("US", "RAD"), ("MR", "RAD"), ("NMR", "RAD"), ("XRC", "RAD"),
    ("SP", "RAP"), ("CP", "RAP"), ("PAT", "RAP"),
    ("EC", "RSA"), ("CTH", "RSA"), ("OTH", "RSA"), ("CAR", "RSA"), ("ch", "LAB")])
def test_obr24_section_picks_the_type(rules, section, expected):
    assert route(message(obr(section=section)), rules).doc_type is DocumentType[expected]


def test_a_later_group_can_decide_the_type(rules):
    routed = route(message(obr(1, section=""), obr(2, section="HM")), rules)
    assert routed.doc_type is DocumentType.LAB


def test_undeterminable_type_is_ar_207(rules):
    with pytest.raises(UnknownDocumentType) as info:
        route(message(obr(section="ZZZ")), rules)
    assert info.value.ack_code == "AR"
    assert info.value.err_code == "207"
    assert info.value.location == "OBR^1^24"


def write_rules(tmp_path, extra: str) -> Path:
    text = (MAPPINGS / "routing.toml").read_text("utf-8")
    (tmp_path / "routing.toml").write_text(extra + "\n" + text if extra.startswith("accession") else text + extra)
    return tmp_path


def test_sender_default_applies_when_no_rule_matches(tmp_path):
    rules = load_routing(write_rules(tmp_path, '\n[[default]]\napplication = "ADT-DIM"\ntype = "LDO"\n'))
    assert route(message(obr(section=""), app="ADT-DIM"), rules).doc_type is DocumentType.LDO
    with pytest.raises(UnknownDocumentType):
        route(message(obr(section=""), app="OTHER"), rules)


def test_sender_rule_placed_first_overrides_general_rules(tmp_path):
    # This sender writes OBR-24 "OT" for its radiology (general rule: RSA).
    text = (MAPPINGS / "routing.toml").read_text("utf-8")
    rule = '[[rule]]\nsender = { facility = "CDC-FI" }\npath = "OBR-24"\nmap = { OT = "RAD" }\n\n'
    first = text.index("\n[[rule]]") + 1
    (tmp_path / "routing.toml").write_text(text[:first] + rule + text[first:])
    rules = load_routing(tmp_path)
    assert route(message(obr(section="OT"), facility="CDC-FI"), rules).doc_type is DocumentType.RAD
    assert route(message(obr(section="OT"), facility="LABPRIV"), rules).doc_type is DocumentType.RSA


def test_bad_type_in_rules_names_file_and_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_routing(write_rules(tmp_path, '\n[[default]]\napplication = "X"\ntype = "XYZ"\n'))
    assert info.value.key.startswith("default[0]")
    assert "routing.toml" in info.value.file


def test_missing_rules_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_routing(tmp_path)


@pytest.mark.parametrize("statuses, action", [
    (["F"], Action.PUBLISH), (["F", "C"], Action.PUBLISH), (["C"], Action.PUBLISH),
    (["F", "P"], Action.IGNORE), (["P"], Action.IGNORE), ([""], Action.IGNORE), (["I"], Action.IGNORE),
    (["F", "X"], Action.DELETE), (["X"], Action.DELETE)])
def test_action_from_every_group(rules, statuses, action):
    groups = [obr(n, status=s) for n, s in enumerate(statuses, start=1)]
    assert route(message(*groups), rules).action is action


def test_correction_is_published_and_flagged(rules):
    routed = route(message(obr(1, status="C")), rules)
    assert routed.action is Action.PUBLISH and routed.corrected


def test_order_cancel_in_orc1_deletes(rules):
    routed = route(message(obr(status="F"), orc="ORC|CA|P1|F1"), rules)
    assert routed.action is Action.DELETE
    assert "ORC-1" in routed.reason


def test_not_final_reason_names_the_status(rules):
    routed = route(message(obr(status="P")), rules)
    assert routed.action is Action.IGNORE
    assert "P" in routed.reason


def test_accession_prefers_obr3_then_orc3_then_placer(rules):
    assert route(message(obr(filler="F9", placer="P9"), orc="ORC|RE|O2|O3"), rules).accession == "F9"
    assert route(message(obr(filler="", placer="P9"), orc="ORC|RE|O2|O3"), rules).accession == "O3"
    assert route(message(obr(filler="", placer="P9"), orc="ORC|RE|O2|"), rules).accession == "P9"
    assert route(message(obr(filler="", placer=""), orc="ORC|RE|O2|"), rules).accession == "O2"


def test_no_accession_is_ae_missing(rules):
    with pytest.raises(MissingField) as info:
        route(message(obr(filler="", placer=""), orc=""), rules)
    assert info.value.location == "OBR^1^3"
    assert info.value.err_code == "101"


def test_examples_route_as_documented(rules):
    examples = CHECKOUT / "examples"
    expect = {"lab.hl7": ("LAB", Action.PUBLISH), "rad.hl7": ("RAD", Action.PUBLISH),
              "rsa.hl7": ("RSA", Action.PUBLISH), "rap.hl7": ("RAP", Action.PUBLISH),
              "ldo.hl7": ("LDO", Action.PUBLISH), "lab-correction.hl7": ("LAB", Action.PUBLISH),
              "lab-cancel.hl7": ("LAB", Action.DELETE)}
    accessions = set()
    for name, (doc_type, action) in expect.items():
        routed = route(parse_message((examples / name).read_bytes()), rules)
        assert (routed.doc_type.name, routed.action) == (doc_type, action), name
        if name.startswith("lab"):
            accessions.add(routed.accession)
    assert accessions == {"A26-00412"}
