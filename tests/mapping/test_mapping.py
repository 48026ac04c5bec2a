"""Mapping an ORU^R01 to the Report: the fields, the code tables, and the exact ERR locations."""

from __future__ import annotations

import pytest

from bridge.config import StructureSettings
from bridge.errors import ConfigError, InvalidValue, MissingField, UnknownCode
from bridge.mapping.tables import load_mappings, load_practitioners
from bridge.mapping.values import local_ts, normalize_ts
from bridge.model import DocumentType

from .conftest import MAPPINGS, drop, example, patch

CF_ROOT = "2.16.840.1.113883.2.9.4.3.2"
LOINC = "2.16.840.1.113883.6.1"


# --------------------------------------------------------------- the LAB example, whole

def test_lab_example_header(do_map):
    report = do_map(example("lab.hl7"))
    p = report.patient
    assert report.doc_type is DocumentType.LAB
    assert p.ids[0].root == CF_ROOT and p.ids[0].extension == "RMSLSO31M04Z404R"
    assert p.person_id == "RMSLSO31M04Z404R"
    assert (p.family, p.given, p.gender, p.birth_time) == ("Rossi", "Alessio", "M", "19310804")
    assert p.addresses[0].city == "Firenze" and p.addresses[0].country == "100"
    assert [t.value for t in p.telecoms] == ["tel:0551234567", "mailto:alessio.rossi@example.com"]
    # OBR-32 is "M001&Rossi&Mario": a practitioners-table id in NDL subcomponents.
    assert report.legal_authenticator.fiscal_code == "RSSMRA70A01H501S"
    assert report.author.fiscal_code == "RSSMRA70A01H501S"
    assert report.author.telecoms, "author needs a telecom: the facility's"
    assert report.referrer.fiscal_code == "BNCLRA75C45D612B"
    assert report.custodian.id.extension == "090101"
    assert report.order.ids[0].extension == "ORD-26-0412"
    assert report.order.priority == "R"
    assert report.effective_time == "20260310143000+0100"
    assert report.status == "completed"


def test_lab_example_results(do_map):
    report = do_map(example("lab.hl7"))
    chem, haem = report.sections
    assert (chem.code.code, haem.code.code) == ("18719-5", "18723-7")
    glucose = chem.exams[0].observations[0]
    assert glucose.code.code == "2345-7" and glucose.code.system == LOINC
    assert glucose.code.translations[0].code == "GLU"
    assert (glucose.value_type, glucose.value, glucose.unit) == ("PQ", "98", "mg/dL")
    assert glucose.ranges[0].low == "70" and glucose.ranges[0].high == "110"
    hgb, wbc, plt, morph = haem.exams[0].observations
    assert hgb.code.code == "718-7", "local HGB mapped to LOINC by local_loinc.csv"
    assert hgb.interpretation.code == "L"
    assert (wbc.value, wbc.unit) == ("7.1", "10*9/L"), "decimal comma and x10\\S\\9/L → UCUM"
    assert plt.notes[0].text == "Campione lievemente emolizzato."
    assert morph.code.code == "MORF" and morph.code.system != LOINC, "unmapped local code stays local"
    assert morph.value_type == "ST"
    assert haem.exams[0].specimen.code.code == "BLD"


def test_gateway_fields_for_lab(do_map):
    report = do_map(example("lab.hl7"))
    assert report.practice_setting == "AD_PSC100"
    assert report.tipologia_struttura == "Territorio"
    assert report.document_class == "REF"
    assert report.clinical_activity == "ERP"
    assert report.billing == "SSN"
    assert report.service_start_local == "20260310080000"
    assert report.service_end_local == "20260310143000"


def test_microbiology_practice_setting(do_map):
    text = patch(example("lab.hl7"), "OBR", 24, "MB", occurrence=1)
    text = patch(text, "OBR", 24, "MB", occurrence=2)
    report = do_map(text)
    assert report.practice_setting == "AD_PSC101"
    assert report.sections[0].code.code == "18725-2"


@pytest.mark.parametrize("name, practice, klass, activity, inpatient", [
    ("rad.hl7", "AD_PSC103", "REF", "ERP", False), ("rap.hl7", "AD_PSC003", "REF", "ERP", False),
    ("rsa.hl7", "AD_PSC107", "REF", "ERP", False), ("ldo.hl7", "AD_PSC026", "LDO", "DIS", True)])
def test_gateway_fields_per_type(do_map, name, practice, klass, activity, inpatient):
    report = do_map(example(name))
    assert (report.practice_setting, report.document_class, report.clinical_activity, report.inpatient) == \
        (practice, klass, activity, inpatient)
    assert report.tipologia_struttura == ("Ospedale" if inpatient else "Territorio")


def test_private_billing(do_map):
    assert do_map(example("rsa.hl7")).billing == "NOSSN"   # PV1-20 "P"


# --------------------------------------------------------------- patient identifiers

def pid3(value: str) -> str:
    return patch(example("lab.hl7"), "PID", 3, value)


@pytest.mark.parametrize("value", [
    "X123^^^^PI~RMSLSO31M04Z404R^^^^NNITA",
    "RMSLSO31M04Z404R^^^MEF&2.16.840.1.113883.2.9.4.3.2&ISO",
    "X123^^^^PI~RMSLSO31M04Z404R",
    "rmslso31m04z404r^^^^NNITA"])
def test_cf_found_by_type_authority_or_validity(do_map, value):
    patient = do_map(pid3(value)).patient
    assert patient.ids[0].extension == "RMSLSO31M04Z404R"
    assert patient.person_id == "RMSLSO31M04Z404R"


def test_local_patient_number_is_an_extra_id(do_map):
    patient = do_map(pid3("RMSLSO31M04Z404R^^^^NNITA~4711^^^LAB^PI")).patient
    assert [i.extension for i in patient.ids] == ["RMSLSO31M04Z404R", "4711"]
    assert patient.ids[1].root != CF_ROOT


def test_invalid_cf_is_102_at_pid3(do_map):
    with pytest.raises(InvalidValue) as info:
        do_map(pid3("RMSLSO31M04Z404X^^^^NNITA"))
    assert (info.value.location, info.value.err_code, info.value.ack_code) == ("PID^1^3", "102", "AE")
    assert "RMSLSO" not in str(info.value), "no patient data in error texts"


def test_missing_cf_is_101_at_pid3(do_map):
    with pytest.raises(MissingField) as info:
        do_map(pid3("4711^^^LAB^PI"))
    assert (info.value.location, info.value.err_code) == ("PID^1^3", "101")


def test_stp_patient(do_map):
    patient = do_map(pid3("STP0900000001234^^^ASL^STP")).patient
    assert patient.ids[0].root == "2.16.840.1.113883.2.9.4.3.17"
    assert patient.person_id == "STP0900000001234^^^&2.16.840.1.113883.2.9.4.3.17&ISO"


def test_eni_patient(do_map):
    patient = do_map(pid3("ENIFI26A00000001^^^ASL^ENI")).patient
    assert patient.ids[0].root == "2.16.840.1.113883.2.9.4.3.18"


def test_team_patient_has_card_and_personal_number(do_map):
    patient = do_map(pid3("80380000601234567890^^^EHIC^TEAM~DE123456789^^^EHIC^TEAMPN")).patient
    assert {i.root for i in patient.ids} == {"2.16.840.1.113883.2.9.4.3.7", "2.16.840.1.113883.2.9.4.3.3"}
    assert patient.person_id == "80380000601234567890^^^&2.16.840.1.113883.2.9.4.3.7&ISO"


def test_team_card_alone_is_missing(do_map):
    with pytest.raises(MissingField) as info:
        do_map(pid3("80380000601234567890^^^EHIC^TEAM"))
    assert info.value.location == "PID^1^3"


def test_stp_code_must_look_like_a_cf(do_map):
    with pytest.raises(InvalidValue) as info:
        do_map(pid3("STP123^^^ASL^STP"))
    assert (info.value.location, info.value.err_code) == ("PID^1^3", "102")


def test_missing_given_name(do_map):
    with pytest.raises(MissingField) as info:
        do_map(patch(example("lab.hl7"), "PID", 5, "Rossi"))
    assert info.value.location == "PID^1^5^2"


# --------------------------------------------------------------- practitioners

def test_missing_legal_authenticator_names_obr32(do_map):
    text = patch(patch(example("lab.hl7"), "OBR", 32, "", 1), "OBR", 32, "", 2)
    with pytest.raises(MissingField) as info:
        do_map(text)
    assert (info.value.location, info.value.err_code) == ("OBR^1^32", "101")


def test_unknown_practitioner_is_103_at_obr32_1(do_map):
    with pytest.raises(UnknownCode) as info:
        do_map(patch(example("lab.hl7"), "OBR", 32, "M999&Nessuno&Ignoto"))
    assert (info.value.location, info.value.err_code) == ("OBR^1^32^1", "103")


def test_practitioner_by_cf_not_in_table(do_map):
    text = patch(example("lab.hl7"), "OBR", 32, "BRGLRZ80D58H501Q&Bergamini&Lorenza")
    assert do_map(text).legal_authenticator.fiscal_code == "BRGLRZ80D58H501Q"


def test_practitioner_cf_without_name_and_unknown(do_map):
    with pytest.raises(MissingField) as info:
        do_map(patch(example("lab.hl7"), "OBR", 32, "BRGLRZ80D58H501Q"))
    assert info.value.location == "OBR^1^32^1"


def test_practitioner_in_components_v23_style(do_map):
    text = patch(example("lab.hl7"), "OBR", 32, "M003^Verdi^Giuseppe")
    assert do_map(text).legal_authenticator.fiscal_code == "VRDGPP68H12G702C"


def test_unknown_ordering_provider_names_orc12(do_map):
    with pytest.raises(UnknownCode) as info:
        do_map(patch(example("lab.hl7"), "ORC", 12, "Z77^Chi^Sa"))
    assert info.value.location == "ORC^1^12^1"


# --------------------------------------------------------------- values, codes, text

def test_escapes_are_decoded(do_map):
    note = "a\\F\\b \\S\\ c\\T\\d \\R\\ \\E\\ \\X41\\ \\H\\bold\\N\\ line1\\.br\\line2"
    text = patch(example("lab.hl7"), "NTE", 3, note)
    obs = do_map(text).sections[1].exams[0].observations[2]
    assert obs.notes[0].text == "a|b ^ c&d ~ \\ A bold line1\nline2"


def test_long_text_kept_whole_with_line_breaks(do_map):
    lines = [f"Riga {n} del referto con testo lungo." for n in range(1, 41)]
    text = patch(example("rad.hl7"), "OBX", 5, "~".join(lines), occurrence=1)
    referto = next(s for s in do_map(text).sections if s.code.code == "18782-3")
    assert referto.paragraphs[0] == "\n".join(lines)


def test_hex_escape_in_latin1_message(do_map):
    text = patch(example("rad.hl7"), "OBX", 5, "Citt\\XE0\\ di prova", occurrence=2)
    conclusions = next(s for s in do_map(text, encoding="latin-1").sections if s.code.code == "55110-1")
    assert conclusions.paragraphs == ("Città di prova",)


def test_numeric_result_not_a_number(do_map):
    with pytest.raises(InvalidValue) as info:
        do_map(patch(example("lab.hl7"), "OBX", 5, "dodici", occurrence=2))
    assert (info.value.location, info.value.err_code) == ("OBX^2^5", "102")


def test_missing_result_value(do_map):
    with pytest.raises(MissingField) as info:
        do_map(patch(example("lab.hl7"), "OBX", 5, "", occurrence=5))
    assert info.value.location == "OBX^5^5"


def test_aborted_result_needs_no_value(do_map):
    text = patch(patch(example("lab.hl7"), "OBX", 5, "", occurrence=2), "OBX", 11, "X", occurrence=2)
    hgb = do_map(text).sections[1].exams[0].observations[0]
    assert hgb.status == "aborted" and hgb.value_type == ""


def test_unknown_abnormal_flag(do_map):
    with pytest.raises(UnknownCode) as info:
        do_map(patch(example("lab.hl7"), "OBX", 8, "QQ", occurrence=1))
    assert (info.value.location, info.value.err_code) == ("OBX^1^8", "103")


def test_unit_that_is_not_ucum(do_map):
    with pytest.raises(UnknownCode) as info:
        do_map(patch(example("lab.hl7"), "OBX", 6, "milligrammi per dl", occurrence=1))
    assert info.value.location == "OBX^1^6"


@pytest.mark.parametrize("sn, kind, value, low, high", [
    ("^5.5", "PQ", "5.5", "", ""), ("<^0.2", "IVL_PQ", "", "", "0.2"), (">^100000", "IVL_PQ", "", "100000", ""),
    ("^1^-^3", "IVL_PQ", "", "1", "3"), ("^1^:^40", "ST", "1 : 40", "", "")])
def test_structured_numeric(do_map, sn, kind, value, low, high):
    text = patch(patch(example("lab.hl7"), "OBX", 2, "SN", occurrence=1), "OBX", 5, sn, occurrence=1)
    obs = do_map(text).sections[0].exams[0].observations[0]
    assert (obs.value_type, obs.value, obs.low, obs.high) == (kind, value, low, high)


def test_unknown_specimen(do_map):
    with pytest.raises(UnknownCode) as info:
        do_map(patch(example("lab.hl7"), "OBR", 15, "SASSO^Sasso"))
    assert info.value.location == "OBR^1^15^1"


def test_unknown_facility_names_msh4(do_map):
    with pytest.raises(UnknownCode) as info:
        do_map(patch(example("lab.hl7"), "MSH", 4, "NOWHERE"))
    assert (info.value.location, info.value.err_code) == ("MSH^1^4^1", "103")


def test_bad_timestamp_names_the_field(do_map):
    with pytest.raises(InvalidValue) as info:
        do_map(patch(example("lab.hl7"), "OBR", 7, "2026-03-10"))
    assert info.value.location == "OBR^1^7"


def test_coded_results_keep_their_system(do_map):
    report = do_map(example("rsa.hl7"))
    diagnosis = next(s for s in report.sections if s.code.code == "29548-5")
    assert diagnosis.codes[0].code == "401.9"
    assert diagnosis.codes[0].system == "2.16.840.1.113883.6.103"


def test_rad_without_report_text_is_missing(do_map):
    text = drop(example("rad.hl7"), "OBX")
    with pytest.raises(MissingField) as info:
        do_map(text)
    assert info.value.err_code == "101"


def test_rad_exam_section_filled_from_obr4(do_map):
    report = do_map(example("rad.hl7"))
    exam = next(s for s in report.sections if s.code.code == "55111-9")
    assert exam.paragraphs == ("RX TORACE 2 PROIEZIONI",)
    assert report.procedures[0].code == "87.44"
    assert report.service_code == "RAD_PROG"


def test_ldo_needs_discharge_time(do_map):
    with pytest.raises(MissingField) as info:
        do_map(patch(example("ldo.hl7"), "PV1", 45, ""))
    assert info.value.location == "PV1^1^45"


def test_ldo_encounter(do_map):
    encounter = do_map(example("ldo.hl7")).encounter
    assert (encounter.code, encounter.id.extension) == ("IMP", "RIC26-00155")
    assert encounter.low == "20260314153000+0100" and encounter.high == "20260320110000+0100"
    assert encounter.responsible.fiscal_code == "GLLFNC77M20F839U"


# --------------------------------------------------------------- times

@pytest.mark.parametrize("value, expected", [
    ("20260110093000", "20260110093000+0100"),
    ("20260710093000", "20260710093000+0200"),
    ("202607100930", "20260710093000+0200"),
    ("20260710", "20260710000000+0200"),
    ("20260710093000.123+0000", "20260710093000+0000"),
    ("20260110093000-0500", "20260110093000-0500")])
def test_timestamps(value, expected):
    import zoneinfo
    assert normalize_ts(value, zoneinfo.ZoneInfo("Europe/Rome"), "OBR^1^7") == expected


def test_local_time_for_the_gateway():
    import zoneinfo
    assert local_ts("20260710073000+0000", zoneinfo.ZoneInfo("Europe/Rome")) == "20260710093000"


# --------------------------------------------------------------- configuration

def test_bad_structure_vat_number(do_map):
    with pytest.raises(ConfigError):
        do_map(example("lab.hl7"), structure=StructureSettings(fiscal_code="01386030489"))


def test_practitioners_table_checks_cfs(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,fiscal_code,family,given\nX1,RSSMRA70A01H501X,Rossi,Mario\n")
    with pytest.raises(ConfigError) as info:
        load_practitioners(path)
    assert "line 2" in str(info.value)


def test_practitioners_table_header(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("code,cf\nX1,RSSMRA70A01H501S\n")
    with pytest.raises(ConfigError):
        load_practitioners(path)


def test_every_type_has_a_mapping(mappings):
    assert set(mappings.types) == set(DocumentType)


def test_mapping_without_header_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_mappings(tmp_path, None)
    assert "header.toml" in info.value.file


def test_lab_specialty_table_lists_the_21_codes(mappings):
    assert len(mappings.tables["lab_specialties.csv"]) == 21
    codes = {row["value"] for row in mappings.tables["obr24_specialty.csv"]}
    allowed = {row["loinc"] for row in mappings.tables["lab_specialties.csv"]}
    assert codes <= allowed


def test_preliminary_result_makes_the_report_partial(do_map):
    report = do_map(patch(example("lab.hl7"), "OBX", 11, "P", occurrence=3))
    assert report.status == "active"
    assert [e.status for s in report.sections for e in s.exams] == ["completed", "active"]


def copy_mappings(tmp_path):
    target = tmp_path / "mappings"
    target.mkdir()
    for path in MAPPINGS.iterdir():
        target.joinpath(path.name).write_bytes(path.read_bytes())
    return target


def test_conditions_and_tables_are_data(tmp_path, routing):
    # An engineer makes inpatient LAB work bill as hospital lab without Python: a condition on PV1-2.
    from bridge.hl7.message import parse_message
    from bridge.mapping.mapper import map_report
    from bridge.mapping.route import route

    target = copy_mappings(tmp_path)
    lab = target / "LAB.toml"
    lab.write_text(lab.read_text().replace(
        'practice_setting = { path = "OBR-24", table = "practice_settings.csv", default = "AD_PSC100" }',
        'practice_setting = { path = "OBR-24", when = { path = "PV1-2", in = ["I"] }, map = { CH = "AD_PSC098" },'
        ' default = "AD_PSC100" }'))
    mappings = load_mappings(target, target / "practitioners.csv")

    def practice(text):
        parsed = parse_message(text.encode())
        return map_report(parsed, route(parsed, routing), mappings, StructureSettings()).practice_setting

    assert practice(example("lab.hl7")) == "AD_PSC100"              # PV1-2 is O: condition false
    assert practice(patch(example("lab.hl7"), "PV1", 2, "I")) == "AD_PSC098"


def test_bad_path_in_mapping_is_caught_at_load(tmp_path):
    target = copy_mappings(tmp_path)
    header = target / "header.toml"
    header.write_text(header.read_text().replace('family = "PID-5.1"', 'family = "PID-5.x"'))
    with pytest.raises(ConfigError) as info:
        load_mappings(target, None)
    assert info.value.key == "patient.family"


def test_attachment_becomes_base64_media(do_map):
    text = patch(patch(example("lab.hl7"), "OBX", 2, "ED", occurrence=5), "OBX", 5, "^AP^PDF^Base64^JVBERi0x", 5)
    morph = do_map(text).sections[1].exams[0].observations[3]
    assert (morph.value_type, morph.media_type, morph.value) == ("ED", "application/pdf", "JVBERi0x")


@pytest.mark.parametrize("value, location", [
    ("^AP^PDF^Hex^4142", "OBX^5^5^4"), ("^AP^PDF^Base64^@@@", "OBX^5^5^5"), ("^XX^YY^Base64^QUJD", "OBX^5^5^2")])
def test_bad_attachment(do_map, value, location):
    text = patch(patch(example("lab.hl7"), "OBX", 2, "ED", occurrence=5), "OBX", 5, value, 5)
    with pytest.raises((InvalidValue, UnknownCode)) as info:
        do_map(text)
    assert info.value.location == location


def test_discharge_before_admission(do_map):
    with pytest.raises(InvalidValue) as info:
        do_map(patch(example("ldo.hl7"), "PV1", 45, "20260301110000"))
    assert info.value.location == "PV1^1^45"


def test_code_with_blanks_is_refused(do_map):
    with pytest.raises(InvalidValue) as info:
        do_map(patch(example("lab.hl7"), "OBR", 4, "BLOOD CULTURE^Emocoltura^L", occurrence=2))
    assert (info.value.location, info.value.err_code) == ("OBR^2^4", "102")


def test_address_uses(do_map):
    text = patch(example("lab.hl7"), "PID", 11, "Via A 1^^Firenze^^^IT^H~Via B 2^^Pisa^^^IT^B~Via C 3^^Prato^^^IT^C")
    assert [(a.street, a.use) for a in do_map(text).patient.addresses] == [("Via A 1", "H"), ("Via C 3", "TMP")]
