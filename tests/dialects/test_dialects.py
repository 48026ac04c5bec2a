"""One test per message of ../shared/corpus/italian-dialects (issue 13 items 2-5, issue 11 item 4).

Each checks the outcome the corpus README gives, what the CDA says, and that
both validators (ours and ../shared/tools/validate_cda.py) find 0 errors.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from lxml import etree

from bridge import cli
from bridge.cda.validate import validate_cda
from bridge.errors import InvalidValue, MissingField
from bridge.hl7.message import parse_message
from bridge.mapping.route import route
from bridge.model import Action

from .conftest import REFERENCE, VALIDATOR, corpus_file

NS = {"h": "urn:hl7-org:v3"}
PUBLISHED = ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "12", "13", "14a", "14b"]


def tree(xml: bytes):
    return etree.fromstring(xml)


def section(root, code: str):
    found = root.xpath(f".//h:section[h:code/@code='{code}']", namespaces=NS)
    assert found, f"no section {code}"
    return found[0]


def paragraphs(sec) -> list[str]:
    return ["".join(p.itertext()) for p in sec.xpath("h:text/h:paragraph", namespaces=NS)]


def replaced(prefix: str, old: str, new: str) -> bytes:
    raw = corpus_file(prefix).read_bytes()
    assert old.encode() in raw
    return raw.replace(old.encode(), new.encode())


@pytest.mark.parametrize("prefix", PUBLISHED)
def test_valid_for_both_validators(published, independent, rules, prefix):
    routed, report, xml, path = published.get(prefix, (None,) * 4)
    assert xml is not None, f"{prefix} was not mapped"
    assert routed.action is Action.PUBLISH
    ours = validate_cda(xml, rules)
    assert not ours.xsd_errors and not ours.schematron_errors, [str(i) for i in ours.errors]
    xsd, errors, terminology, text = independent[path.stem]
    assert (xsd, errors, terminology) == ("ok", 0, 0), text


def test_01_prt_interpreter_signs_and_attending_is_responsible(published):
    _, report, xml, _ = published["01"]
    assert report.doc_type.name == "RSA"
    assert report.legal_authenticator.fiscal_code == "BLDLNE78P62I726E"
    assert report.author.fiscal_code == "BLDLNE78P62I726E"
    assert report.encounter.responsible.fiscal_code == "VRDGPP68H12G702C"   # PRT AT, M003
    root = tree(xml)
    assert root.xpath("string(h:legalAuthenticator//h:family)", namespaces=NS) == "Baldini"


def test_02_blank_tx_lines_are_paragraph_breaks(published):
    _, report, xml, _ = published["02"]
    assert report.doc_type.name == "RAD"
    root = tree(xml)
    referto = paragraphs(section(root, "18782-3"))
    assert len(referto) == 3
    assert referto[0].startswith("Esame eseguito con sequenze")
    assert referto[1].startswith("Lordosi lombare") and "Disidratazione" in referto[1]
    # \.br\ inside a line is a line break within its paragraph.
    assert section(root, "18782-3").xpath("count(h:text/h:paragraph[3]/h:br)", namespaces=NS) >= 1
    conclusions = " ".join(paragraphs(section(root, "55110-1")))
    assert "Ernia discale L5-S1" in conclusions and "Ernia discale L5-S1" not in " ".join(referto)


def test_03_nte_escapes_decoded_and_kept_with_their_result(published):
    _, report, xml, _ = published["03"]
    chem = report.sections[0].exams[0]
    assert chem.notes[0].text.endswith("esochinasi | Strumento: Cobas c 503 | "
                                       "Sede: Laboratorio Analisi & Diagnostica Molecolare.")
    egfr = next(o for o in chem.observations if o.name.startswith("Filtrato"))
    assert "m^2" in egfr.notes[0].text and "(~60-89 mL/min)" in egfr.notes[0].text
    assert "LAB\\NEF\\2026-03" in egfr.notes[0].text
    hav = next(o for s in report.sections for e in s.exams for o in e.observations if o.name.startswith("Anticorpi"))
    assert "epatite A." in hav.notes[0].text
    root = tree(xml)
    # The note is the comment of the eGFR observation itself.
    refs = root.xpath(".//h:observation[h:text/h:reference/@value='#%s']"
                      "/h:entryRelationship/h:act/h:text/h:reference/@value" % egfr.ref, namespaces=NS)
    assert refs == [f"#{egfr.notes[0].ref}"]


def test_04_obx11_statuses(published):
    _, report, xml, _ = published["04"]
    observations = {o.name: o for s in report.sections for e in s.exams for o in e.observations}
    assert "Sideremia" not in observations                      # D: left out
    assert observations["Creatinina"].value == "0.78"           # C: shown as the result
    assert observations["Creatinina"].status == "completed"
    potassium = observations["Potassio"]                         # X: not done, no value, no flag
    assert (potassium.status, potassium.value_type, potassium.interpretation) == ("aborted", "", None)
    assert [(n.location, n.severity) for n in report.notices] == [("OBX^10^11", "I")]
    root = tree(xml)
    assert b"Sideremia" not in xml
    row = root.xpath(f".//h:tr[@ID='{potassium.ref}']/h:td/text()", namespaces=NS)
    assert "Non eseguito" in row


def test_04_pending_result_in_a_final_order_waits(stages):
    routing = stages[0]
    raw = replaced("04", "|19|U/L|<32|N|||F|", "|19|U/L|<32|N|||P|")
    routed = route(parse_message(raw), routing)
    assert routed.action is Action.IGNORE and "OBX-11" in routed.reason


def test_05_arv_patient_request_obscures_at_creation(published, run):
    _, report, _, _ = published["05"]
    assert report.access_policies == ("P99",)
    lifted = replaced("05", "ARV|1|A|", "ARV|1|D|")
    assert run(lifted)[1].access_policies == ()
    other_reason = replaced("05", "PAT^Patient Request", "LAW^Legal")
    assert run(other_reason)[1].access_policies == ()
    assert published["03"][1].access_policies == ()


def test_06_pdf_attachment_is_not_narrative_and_is_warned(published):
    _, report, xml, _ = published["06"]
    assert report.doc_type.name == "RAD"
    assert b"JVBERi0" not in xml
    assert [(n.location, n.severity) for n in report.notices] == [("OBX^3^5", "W")]
    root = tree(xml)
    assert paragraphs(section(root, "18782-3"))[0].startswith("Fegato di dimensioni")


def test_07_referto_filled_from_conclusions_marked_as_such(published):
    _, report, xml, _ = published["07"]
    root = tree(xml)
    referto = paragraphs(section(root, "47045-0"))
    conclusions = paragraphs(section(root, "55110-1"))
    assert referto[0] == "Testo riportato da: Conclusioni."
    assert referto[1:] == conclusions


def test_07_a_mapping_without_fallback_refuses_naming_the_section(run, stages):
    mappings = stages[1]
    rsa = next(t for t in mappings.types.values() if t.doc_type.name == "RSA")
    settings = dict(rsa.settings, sections=dict(rsa.settings["sections"],
                                                required={"62387-6": ["procedures"], "47045-0": []}))
    strict = dataclasses.replace(mappings, types={**mappings.types,
                                                  rsa.doc_type: dataclasses.replace(rsa, settings=settings)})
    with pytest.raises(MissingField) as info:
        run(corpus_file("07").read_bytes(), strict)
    assert info.value.err_code == "101" and "47045-0" in info.value.message


def test_08_long_letter(published):
    _, report, xml, _ = published["08"]
    assert report.doc_type.name == "LDO" and len(xml) > 15000
    # The discharge therapy has its own section, not Decorso ospedaliero.
    therapy = paragraphs(section(tree(xml), "10183-2"))
    assert therapy and not any(p in paragraphs(section(tree(xml), "8648-8")) for p in therapy)
    assert "°" in xml.decode() and "²" in xml.decode()


def test_09_units_as_written_and_ucum_in_the_value(published):
    _, report, xml, _ = published["09"]
    observations = [o for s in report.sections for e in s.exams for o in e.observations]
    assert len(observations) == 80
    wbc = observations[0]
    assert wbc.unit_text == "x10^9/L" and wbc.unit == "10*9/L"
    root = tree(xml)
    assert root.xpath(f".//h:tr[@ID='{wbc.ref}']/h:td[3]/text()", namespaces=NS) == ["x10^9/L"]
    assert root.xpath(f".//h:observation[h:text/h:reference/@value='#{wbc.ref}']/h:value/@unit",
                      namespaces=NS) == ["10*9/L"]
    notes = " ".join(n.text for s in report.sections for e in s.exams for n in e.notes)
    assert "idReferto=A26-09977&tipo=PDF&firma=CADES" in notes


def test_09_lab_names_and_italian_flags(published):
    _, report, xml, _ = published["09"]
    root = tree(xml)
    first = root.xpath(".//h:tbody/h:tr[1]/h:td/text()", namespaces=NS)
    assert first[0] == "Leucociti" and first[-1] == "Normale"
    flags = set(root.xpath(".//h:tbody/h:tr/h:td[5]/text()", namespaces=NS))
    assert flags <= {"Normale", "Alto", "Basso"} and {"Alto", "Basso"} & flags


def test_10_pathology(published):
    _, report, xml, _ = published["10"]
    assert report.doc_type.name == "RAP"
    text = xml.decode()
    assert "Adenoma tubulo-villoso" in text and "\\H\\" not in text
    bold = tree(xml).xpath(".//h:paragraph/h:content[@styleCode='Bold']/text()", namespaces=NS)
    assert "A) Polipo del sigma:" in bold
    # The structured value has the text without marks.
    assert "\ue000" not in text and "\ue001" not in text


def test_10_both_specimens_in_procedura(published):
    _, report, xml, _ = published["10"]
    assert [s.id.extension for s in report.specimens] == ["I26-01187-A", "I26-01187-B"]
    root = tree(xml)
    procedura = section(root, "29300-1")
    texts = paragraphs(procedura)
    assert texts[1].startswith("I26-01187-A: A) Polipo peduncolato del sigma")
    assert texts[2].startswith("I26-01187-B: B) Polipo sessile")
    ids = procedura.xpath(".//h:procedure/h:specimen/h:specimenRole/h:id/@extension", namespaces=NS)
    sites = procedura.xpath(".//h:procedure/h:targetSiteCode/@code", namespaces=NS)
    assert (ids, sites) == (["I26-01187-A", "I26-01187-B"], ["60184004", "485005"])


def test_10_an_image_in_microscopy_is_carried_as_the_rap_guide_says(run, rules, tmp_path):
    raw = corpus_file("10").read_bytes().rstrip(b"\r")
    raw += b"\rOBX|7|ED|MICRO^Immagine microscopica^L||^IM^JPEG^Base64^/9j/4AAQSkZJRgABAQ==||||||F\r"
    _, report, xml = run(raw)
    assert not report.notices
    media = tree(xml).xpath(".//h:section[h:code/@code='22635-7']//h:observationMedia", namespaces=NS)
    assert len(media) == 1 and media[0].find("h:value", NS).get("mediaType") == "image/jpeg"
    ours = validate_cda(xml, rules)
    assert not ours.errors, [str(i) for i in ours.errors]
    path = tmp_path / "rap-media.xml"
    path.write_bytes(xml)
    result = subprocess.run([sys.executable, str(VALIDATOR), "--terminology", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert "xsd=ok schematron_errors=0" in result.stdout and "terminology_errors=0" in result.stdout, result.stdout


def test_11_impossible_birth_date_is_refused_naming_pid7(run):
    with pytest.raises(InvalidValue) as info:
        run(corpus_file("11").read_bytes())
    assert (info.value.ack_code, info.value.err_code, info.value.location) == ("AE", "102", "PID^1^7")


def test_12_accented_names_unchanged(published):
    _, report, xml, _ = published["12"]
    assert (report.patient.family, report.patient.given) == ("D'ARCO", "NICCOLÒ ÈRCOLE")
    assert "FORLÌ" in xml.decode()


def test_13_prt_responsible_observer_and_ordering_provider(published):
    _, report, xml, _ = published["13"]
    assert report.legal_authenticator.fiscal_code == "MRTCRL74R42E625M"
    assert report.referrer.fiscal_code == "SRFLCU63H28A390V"
    root = tree(xml)
    assert root.xpath("string(h:participant[@typeCode='REF']//h:family)", namespaces=NS) == "SERAFINI"


def test_14_wrong_patient_pair_names_both_patients(published):
    first, second = published["14a"][1], published["14b"][1]
    assert published["14a"][0].accession == published["14b"][0].accession == "A26-09455"
    assert first.patient.person_id != second.patient.person_id
    assert second.patient.person_id == "GRONNA52C48D612N"
    assert published["14b"][0].corrected


def test_render_command_shows_what_the_ack_will_say(tmp_path, capsys):
    code = cli.main(["render", str(corpus_file("06")), "--out", str(tmp_path), "--rules", str(REFERENCE)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ACK ERR W at OBX^3^5: attachment (ED) not carried" in out
    assert "validation: RAD" in out and ": valid" in out
