"""The rules behind the Italian dialects (issue 13 items 3-5, issue 11 item 4), on the examples patched.

tests/dialects runs the corpus messages whole; here each rule is pinned on
its own: which PRT counts for which field, paragraphs, required sections,
OBX-11, attachments, PID-7, ARV and a deployment's own field.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from bridge.config import StructureSettings
from bridge.errors import ConfigError, InvalidValue, MissingField, UnknownCode
from bridge.hl7.message import parse_message
from bridge.mapping.mapper import map_report
from bridge.mapping.tables import load_mappings
from bridge.mapping.route import route
from bridge.mapping.text import paragraphs, text_lines
from bridge.model import Action

from .conftest import MAPPINGS, drop, example, patch

PI = "PRT|1|AD||PI^Primary Interpreter^HL70912|{}^Baldini^Elena^^^Dott.ssa"


def insert_after(text: str, segment: str, line: str, occurrence: int = 1) -> str:
    lines = text.split("\r")
    seen = 0
    for i, current in enumerate(lines):
        if current[:3] == segment:
            seen += 1
            if seen == occurrence:
                lines.insert(i + 1, line)
                return "\r".join(lines)
    raise AssertionError(f"no {segment} occurrence {occurrence}")


def lab_without_obr32() -> str:
    text = example("lab.hl7")
    return patch(patch(text, "OBR", 32, "", 1), "OBR", 32, "", 2)


def with_settings(mappings, doc_type: str, **changes):
    mapping = next(t for t in mappings.types.values() if t.doc_type.name == doc_type)
    settings = dict(mapping.settings, **changes)
    return dataclasses.replace(mappings, types={**mappings.types,
                                                mapping.doc_type: dataclasses.replace(mapping, settings=settings)})


# --------------------------------------------------------------- PRT participations

def test_prt_primary_interpreter_stands_for_an_empty_obr32(do_map):
    report = do_map(insert_after(lab_without_obr32(), "OBR", PI.format("BLDLNE78P62I726E")))
    assert report.legal_authenticator.fiscal_code == "BLDLNE78P62I726E"
    assert (report.author.family, report.author.given) == ("Baldini", "Elena")


def test_a_filled_obr32_wins_over_prt(do_map):
    report = do_map(insert_after(example("lab.hl7"), "OBR", PI.format("BLDLNE78P62I726E")))
    assert report.legal_authenticator.fiscal_code == "RSSMRA70A01H501S"


def test_prt_of_another_order_or_role_does_not_count(do_map):
    other_order = insert_after(lab_without_obr32(), "OBR", PI.format("BLDLNE78P62I726E"), occurrence=2)
    with pytest.raises(MissingField) as info:
        do_map(other_order)
    assert info.value.location == "OBR^1^32"
    other_role = insert_after(lab_without_obr32(), "OBR", PI.format("BLDLNE78P62I726E").replace("PI^", "AT^"))
    with pytest.raises(MissingField):
        do_map(other_role)


def test_prt_after_orc_counts_for_its_order(do_map):
    report = do_map(insert_after(lab_without_obr32(), "ORC", PI.format("BLDLNE78P62I726E")))
    assert report.legal_authenticator.fiscal_code == "BLDLNE78P62I726E"


def test_prt_person_errors_name_the_prt(do_map):
    with pytest.raises(UnknownCode) as info:
        do_map(insert_after(lab_without_obr32(), "OBR", PI.format("X999")))
    assert info.value.location == "PRT^1^5^1"


def test_prt_practitioner_key_and_visit_attending(do_map):
    text = patch(example("rsa.hl7"), "PV1", 7, "")
    text = insert_after(text, "PV1", "PRT|1|AD||AT^Attending^HL70912|M006^Galli^Francesco")
    assert do_map(text).encounter.responsible.fiscal_code == "GLLFNC77M20F839U"


def test_responsible_observer_signs_when_no_obr32(do_map):
    text = insert_after(lab_without_obr32(), "OBX",
                        "PRT|1|AD||RO^Responsible Observer^HL70912|MRTCRL74R42E625M^MORETTI^CARLA")
    assert do_map(text).legal_authenticator.fiscal_code == "MRTCRL74R42E625M"


def test_a_participation_key_that_is_not_a_path_is_a_startup_error(tmp_path):
    folder = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, folder)
    header = folder / "header.toml"
    header.write_text(header.read_text().replace('"OBR-32" = ["PI"]', '"OBR32" = ["PI"]'))
    with pytest.raises(ConfigError) as info:
        load_mappings(folder, folder / "practitioners.csv")
    assert info.value.key == "participations"


# --------------------------------------------------------------- text and sections

def test_paragraphs_split_at_blank_lines():
    assert paragraphs(["a", "b", "", "", "c", ""]) == ("a\nb", "c")
    assert paragraphs(["", " "]) == ()
    assert text_lines("a\r\nb\n\nc") == ["a", "b", "", "c"]


def test_tx_lines_of_one_code_are_one_paragraph_and_an_empty_line_breaks_it(do_map):
    text = drop(example("rad.hl7"), "OBX")
    for n, value in enumerate(["Prima riga.", "Seconda riga.", "", "Terzo paragrafo."], start=1):
        text += f"\rOBX|{n}|TX|REFERTO^Referto^L|1|{value}||||||F"
    report = do_map(text)
    referto = next(s for s in report.sections if s.code.code == "18782-3")
    assert referto.paragraphs == ("Prima riga.\nSeconda riga.", "Terzo paragrafo.")


def test_a_report_of_empty_lines_only_is_refused(do_map):
    text = drop(example("rad.hl7"), "OBX") + "\rOBX|1|TX|REFERTO^Referto^L||||||||F"
    with pytest.raises(MissingField) as info:
        do_map(text)
    assert info.value.location == "OBX^1^5"


def test_required_section_from_the_whole_narrative(do_map):
    text = drop(example("rsa.hl7"), "OBX") + "\rOBX|1|TX|ANAMNESI^Anamnesi^L||Iperteso.||||||F"
    referto = next(s for s in do_map(text).sections if s.code.code == "47045-0")
    assert referto.paragraphs == ("Testo riportato da: Storia clinica.", "Iperteso.")


def test_required_section_sources_are_tried_in_order(do_map, mappings, routing):
    rsa = next(t for t in mappings.types.values() if t.doc_type.name == "RSA").settings
    strict = with_settings(mappings, "RSA", sections=dict(rsa["sections"], required={"47045-0": ["55110-1"]}))
    text = drop(example("rsa.hl7"), "OBX") + "\rOBX|1|TX|ANAMNESI^Anamnesi^L||Iperteso.||||||F"
    parsed = parse_message(text.encode())
    with pytest.raises(MissingField) as info:
        map_report(parsed, route(parsed, routing), strict, StructureSettings())
    assert "47045-0" in info.value.message


def test_narrative_suffix_subcomponent_picks_the_section(do_map):
    text = drop(example("rad.hl7"), "OBX")
    text += "\rOBX|1|TX|RM093&GDT^Descrizione^L|1|Descrizione.||||||F"
    text += "\rOBX|2|TX|RM093&IMP^Conclusioni^L|2|Conclusione.||||||F"
    sections = {s.code.code: s.paragraphs for s in do_map(text).sections}
    assert sections["18782-3"] == ("Descrizione.",) and sections["55110-1"] == ("Conclusione.",)


def test_lab_text_result_sent_one_line_per_obx_is_one_observation(do_map):
    text = example("lab.hl7")
    for n, value in enumerate(["Emazie normocromiche.", "", "Piastrine aggregate."], start=5):
        text += f"\rOBX|{n}|TX|COMM^Commento morfologico^L|1|{value}||||||F"
    exam = do_map(text).sections[-1].exams[-1]
    comments = [o for o in exam.observations if o.name == "Commento morfologico"]
    assert len(comments) == 1
    assert comments[0].text == "Emazie normocromiche.\n\nPiastrine aggregate."


def test_report_nte_before_the_first_obr_is_kept(do_map):
    text = insert_after(example("lab.hl7"), "PV1", "NTE|1|L|Paziente in terapia anticoagulante.")
    assert do_map(text).sections[0].exams[0].notes[0].text == "Paziente in terapia anticoagulante."


# --------------------------------------------------------------- statuses and attachments

def test_deleted_result_left_out_with_an_informational_notice(do_map):
    report = do_map(patch(example("lab.hl7"), "OBX", 11, "W", occurrence=3))
    names = [o.name for s in report.sections for e in s.exams for o in e.observations]
    assert "Leucociti" not in names and "Emoglobina" in names
    assert [(n.code, n.location, n.severity) for n in report.notices] == [("0", "OBX^3^11", "I")]


def test_an_order_whose_results_are_all_deleted_is_left_out(do_map):
    report = do_map(patch(example("lab.hl7"), "OBX", 11, "D", occurrence=1))
    assert [e.name for s in report.sections for e in s.exams] == ["Emocromo"]
    assert ("OBR^1^4", "I") in [(n.location, n.severity) for n in report.notices]


def test_pending_result_holds_a_final_order(routing):
    text = patch(example("lab.hl7"), "OBX", 11, "I", occurrence=2)
    assert route(parse_message(text.encode()), routing).action is Action.IGNORE


def test_attachment_in_a_narrative_type_is_warned_not_narrated(do_map):
    text = example("rad.hl7") + "\rOBX|3|ED|PDF^Referto^L||^AP^PDF^Base64^JVBERi0xLjMK||||||F"
    assert text.count("\rOBX|") == 3
    report = do_map(text)
    assert all("JVBERi0" not in p for s in report.sections for p in s.paragraphs)
    assert [(n.location, n.severity) for n in report.notices] == [("OBX^3^5", "W")]


def test_attachment_in_lab_is_carried(do_map):
    text = example("lab.hl7") + "\rOBX|5|ED|PDF^Referto^L||^AP^PDF^Base64^JVBERi0xLjMK||||||F"
    media = [o for s in do_map(text).sections for e in s.exams for o in e.observations if o.value_type == "ED"]
    assert media and media[0].media_type == "application/pdf"


def test_attachment_in_a_rap_microscopy_section_is_carried_once(do_map):
    image = "^IM^JPEG^Base64^/9j/4AAQSkZJRgABAQ=="
    text = example("rap.hl7") + f"\rOBX|8|ED|MICRO^Immagine^L||{image}||||||F" \
        + f"\rOBX|9|ED|MICRO^Immagine^L||{image}||||||F" + f"\rOBX|10|ED|DIAGNOSI^PDF^L||{image}||||||F"
    report = do_map(text)
    micro = next(s for s in report.sections if s.code.code == "22635-7")
    assert micro.media.media_type == "image/jpeg"
    count = text.count("\rOBX|")
    # The second image has no place (one per AP observation), nor has Diagnosi: warned.
    assert [(n.location, n.severity) for n in report.notices] == [
        (f"OBX^{count - 1}^5", "W"), (f"OBX^{count}^5", "W")]


def test_attachment_over_the_ceiling_is_refused(do_map):
    big = "A" * 1_000_000
    text = example("lab.hl7") + f"\rOBX|5|ED|PDF^Referto^L||^AP^PDF^Base64^{big}||||||F"
    with pytest.raises(InvalidValue) as info:
        do_map(text)
    assert info.value.location == "OBX^6^5^5"


# --------------------------------------------------------------- checked fields

@pytest.mark.parametrize("value", ["19751304", "19750230", "19750001", "20990101"])
def test_impossible_birth_date_is_refused(do_map, value):
    with pytest.raises(InvalidValue) as info:
        do_map(patch(example("lab.hl7"), "PID", 7, value))
    assert (info.value.err_code, info.value.location) == ("102", "PID^1^7")


# --------------------------------------------------------------- obscured at creation

ARV = "ARV|1|{}|ALL^All^HL70717|PAT^Patient Request^HL70719"


@pytest.mark.parametrize("action, expected", [("A", ("P99",)), ("U", ("P99",)), ("D", ())])
def test_arv_patient_request(do_map, action, expected):
    assert do_map(insert_after(example("lab.hl7"), "PID", ARV.format(action))).access_policies == expected


def test_arv_later_delete_lifts_an_earlier_add(do_map):
    text = insert_after(insert_after(example("lab.hl7"), "PID", ARV.format("D")), "PID", ARV.format("A"))
    assert do_map(text).access_policies == ()


def test_no_arv_no_policy(do_map):
    assert do_map(example("lab.hl7")).access_policies == ()


def test_a_deployment_field_asks_for_obscuring(mappings, routing):
    lab = next(t for t in mappings.types.values() if t.doc_type.name == "LAB").settings
    own = with_settings(mappings, "LAB", access=dict(lab["access"], fields=[{"path": "ZFS-1", "in": ["Y"]}]))
    for flag, expected in (("Y", ("P99",)), ("N", ())):
        parsed = parse_message((example("lab.hl7") + f"\rZFS|{flag}").encode())
        assert map_report(parsed, route(parsed, routing), own, StructureSettings()).access_policies == expected
