"""The report: PDF/A-3b, embedded fonts, Italian text as text, content from the CDA (pdf.md sections 4, 6)."""

import gc
import io
import re

import pikepdf
import pytest
from pikepdf import pdfa
from pypdf import PdfReader

from bridge.pdf import package
from bridge.errors import ParseError
from bridge.pdf.view import format_ts, parse_cda, read_view

from .package_samples import ACCENTED_FAMILY, ACCENTED_GIVEN, SAMPLE_NAMES, sample


def validate_written(stream, flavour: str):
    """pikepdf's PDF/A check, after a garbage collection: the check counts any warning raised
    while it runs, and an earlier test's socket finalised then would raise a ResourceWarning."""
    gc.collect()
    return pdfa.validate_written(stream, flavour)


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_unsigned_pdf_passes_the_pdfa_3b_check(packaged, name):
    unsigned, _ = packaged(name)
    report = validate_written(io.BytesIO(unsigned), "3b")
    assert report.passed, report
    with pikepdf.open(io.BytesIO(unsigned)) as pdf:
        assert 'pdfaid:part="3"' in str(pdf.open_metadata()) or pdf.open_metadata()["pdfaid:part"] == "3"
        assert pdf.open_metadata()["pdfaid:conformance"] == "B"
        intent = pdf.Root.OutputIntents[0]
        assert intent.S == pikepdf.Name.GTS_PDFA1 and len(intent.DestOutputProfile.read_bytes()) > 3000


def test_every_font_is_embedded(packaged):
    unsigned, _ = packaged("RSA")
    with pikepdf.open(io.BytesIO(unsigned)) as pdf:
        fonts = [f for page in pdf.pages for f in page.Resources.Font.values()]
        assert fonts
        for font in fonts:
            assert font.Subtype == pikepdf.Name.TrueType
            assert "/FontFile2" in font.FontDescriptor, font.BaseFont
            assert "/ToUnicode" in font


def test_accented_patient_name_is_text(accented_cda, signer):
    unsigned = package.build_unsigned_pdf(accented_cda, signer_name=signer.display_name)
    text = text_of(unsigned)
    assert f"{ACCENTED_GIVEN} {ACCENTED_FAMILY}" in text
    assert "Unità di Misura" in text or "Unità" in text
    assert validate_written(io.BytesIO(unsigned), "3b").passed


def test_header_shows_the_cda_header(packaged):
    _, signed = packaged("LAB")
    text = text_of(signed)
    for expected in ("Referto di laboratorio", "SAN RAFFAELE NOMENTANA", "Giuseppe Test",
                     "GTWGWY82B42G920M", "19/06/1993", "Maschio", "30/03/2022 11:24",
                     "Dr Matteo Test", "Dttr. Federico Prova",
                     "Documento firmato digitalmente (PAdES) da S1#090#01386030488PIPOHOUSE",
                     "Pagina 1 di 1"):
        assert expected in text, expected
    assert "030702.TSTSMN63A01F205H.20220325112426.OQlvTq1J" in text.replace("\n", "")


def test_lab_results_table_comes_from_the_narrative(packaged):
    _, signed = packaged("LAB")
    text = text_of(signed)
    for expected in ("Esami delle Urine", "Albumina nelle Urine", "Microalbumina", "Urine", "mg/L",
                     "0 - 20"):
        assert expected in text.replace("\n", " "), expected
    # the narrative says 20; the coded entry's 16.00 must not appear (pdf.md section 6)
    assert "16.00" not in text
    assert re.search(r"\b20\b", text)


def test_sections_in_order_and_page_n_of_m(packaged):
    unsigned, _ = packaged("RAP")
    view = read_view(parse_cda(sample("RAP")))
    text = text_of(unsigned).replace("\n", " ")
    positions = [text.find(s.title) for s in view.sections if s.title]
    assert -1 not in positions
    assert positions == sorted(positions)
    pages = len(PdfReader(io.BytesIO(unsigned)).pages)
    assert pages > 1
    assert f"Pagina 1 di {pages}" in text and f"Pagina {pages} di {pages}" in text


def test_narrative_markup(signer):
    cda = sample("LAB").replace(
        b"<title>Albumina nelle Urine</title>",
        "<title>Albumina nelle Urine</title><text><paragraph>Nota: <content styleCode=\"Bold\">"
        "valore già confermato</content>, 10<sup>3</sup> e H<sub>2</sub>O<br/>seconda riga</paragraph>"
        "<list listType=\"ordered\"><item>primo</item><item>secondo<list><item>annidato</item></list>"
        "</item></list></text>".encode(), 1)
    text = text_of(package.build_unsigned_pdf(cda))
    for expected in ("valore già confermato", "seconda riga", "1.", "primo", "2.", "secondo", "annidato"):
        assert expected in text, expected


def test_dates():
    assert format_ts("20220330112426+0100") == "30/03/2022 11:24"
    assert format_ts("19930619", with_time=False) == "19/06/1993"
    assert format_ts("2022") == "2022"
    assert format_ts("nonsense") == "nonsense"


@pytest.mark.parametrize("data, message", [
    (b"", "not well-formed XML"),
    (b"%PDF-1.7", "not well-formed XML"),
    (b"<html><body/></html>", "not an HL7 CDA R2 document"),
    (b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>', "no structuredBody"),
    (b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><ClinicalDocument xmlns="urn:hl7-org:v3">'
     b"&e;</ClinicalDocument>", "no structuredBody"),
])
def test_not_a_cda_is_refused(data, message):
    with pytest.raises(ParseError, match=message):
        package.build_unsigned_pdf(data)


def test_table_cell_longer_than_a_page_continues(signer):
    long_text = " ".join(["risultato descritto a lungo"] * 1200)
    cda = sample("LAB").replace(b"<td>Urine</td>", f"<td>{long_text}</td>".encode(), 1)
    pdf = package.build_unsigned_pdf(cda)
    assert len(PdfReader(io.BytesIO(pdf)).pages) > 2
    assert package.extract_cda(pdf) == cda


def test_header_shows_prescriber_and_replaced_document():
    cda = sample("RAD").replace(
        b"<inFulfillmentOf>",
        b'<relatedDocument typeCode="RPLC"><parentDocument><id root="2.16.840.1.113883.2.9.2.90" '
        b'extension="DOC.OLD.1"/></parentDocument></relatedDocument><inFulfillmentOf>', 1)
    view = read_view(parse_cda(cda))
    assert view.replaces == "DOC.OLD.1"
    text = text_of(package.build_unsigned_pdf(cda)).replace("\n", " ")
    assert view.prescriber == "Federica Esempio"
    for expected in ("Sostituisce il documento", "DOC.OLD.1", "Medico prescrittore", "Federica Esempio"):
        assert expected in text, expected


def test_list_items_made_of_paragraphs_keep_their_numbers():
    cda = sample("LAB").replace(
        b"<title>Albumina nelle Urine</title>",
        b'<title>Albumina nelle Urine</title><text><list listType="ordered"><item><paragraph>'
        b"<caption>Nota</caption>campione emolizzato</paragraph></item><item><paragraph>ripetere"
        b"</paragraph></item></list></text>", 1)
    text = text_of(package.build_unsigned_pdf(cda))
    assert "1. Nota campione emolizzato" in text.replace("\n", " ").replace("  ", " ")
    assert "2. ripetere" in text.replace("\n", " ").replace("  ", " ")


def test_pdf_dates_are_the_packaging_time():
    import datetime as dt
    when = dt.datetime(2026, 3, 4, 10, 20, 30, tzinfo=dt.timezone.utc)
    unsigned = package.build_unsigned_pdf(sample("LAB"), when=when)
    with pikepdf.open(io.BytesIO(unsigned)) as pdf:
        assert str(pdf.docinfo.CreationDate).startswith("D:20260304102030")
        assert pdf.open_metadata()["xmp:CreateDate"].startswith("2026-03-04T10:20:30")
        assert str(pdf.Root.Names.EmbeddedFiles.Names[1].EF.F.Params.ModDate).startswith("D:20260304102030")
    assert validate_written(io.BytesIO(unsigned), "3b").passed
