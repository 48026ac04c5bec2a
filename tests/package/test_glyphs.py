"""Every character of the CDA is drawn: letters the font has are printed, others as a visible box
(pdf.md section 6: a reader must never meet a blank where the CDA has text)."""

import io
import logging
import unicodedata
from xml.sax.saxutils import escape

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader

from bridge.pdf import package
from bridge.pdf.glyphs import Glyphs
from bridge.pdf.layout import Layout

from .package_samples import sample

BOX = Layout().missing_glyph


def with_patient(family: str, given_name: str) -> bytes:
    """The LAB sample with its patient renamed (text escaped for XML)."""
    text = sample("LAB").decode("utf-8")
    head, rest = text.split("<patient>", 1)
    patient, tail = rest.split("</patient>", 1)
    patient = patient.replace("<family>Test</family>", f"<family>{escape(family)}</family>", 1)
    patient = patient.replace("<given>Giuseppe</given>", f"<given>{escape(given_name)}</given>", 1)
    return (head + "<patient>" + patient + "</patient>" + tail).encode("utf-8")


def first_page(pdf: bytes) -> str:
    """Page 1's text, each run of white space one space (a long name wraps in its cell)."""
    return " ".join(PdfReader(io.BytesIO(pdf)).pages[0].extract_text().split())


def test_names_beyond_latin_1_print_as_written():
    cda = with_patient("Ștefănescu-Nguyễn", "Władysław Jiří Đurđa")
    text = first_page(package.build_unsigned_pdf(cda))
    assert "Władysław Jiří Đurđa Ștefănescu-Nguyễn" in text
    assert BOX not in text and "\x00" not in text


def test_a_letter_sent_decomposed_prints_as_one(caplog):
    cda = with_patient("Lu\u0300pi", "Niccolo\u0300")  # u + combining grave
    with caplog.at_level(logging.WARNING):
        pdf = package.build_unsigned_pdf(cda)
    assert "Niccolò Lùpi" in first_page(pdf)
    assert not caplog.records
    assert package.extract_cda(pdf) == cda  # the CDA keeps what was sent


def test_a_script_the_font_lacks_prints_boxes_never_blanks(caplog):
    cda = with_patient("王", "小明")
    with caplog.at_level(logging.WARNING, logger="bridge.pdf.glyphs"):
        pdf = package.build_unsigned_pdf(cda)
    text = first_page(pdf)
    assert f"{BOX * 2} {BOX}" in text and "\x00" not in text
    assert package.extract_cda(pdf) == cda
    # the operator learns how many, never which (a name is patient data)
    [record] = caplog.records
    assert "3 character" in record.getMessage() and "王" not in record.getMessage()


def test_invisible_format_characters_print_as_nothing(caplog):
    # word joiner, Arabic letter mark, a language tag: format characters Lato has no glyph for
    cda = with_patient("Rossi\u2060", "Ma\u061crio\U000e0001")
    with caplog.at_level(logging.WARNING, logger="bridge.pdf.glyphs"):
        text = first_page(package.build_unsigned_pdf(cda))
    assert "Mario Rossi" in text and BOX not in text and not caplog.records


_XML_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=st.text(_XML_CHARS, min_size=1, max_size=30).filter(str.strip),
       given_name=st.text(_XML_CHARS, min_size=1, max_size=30).filter(str.strip))
def test_any_name_prints_something_for_every_character(family, given_name):
    """Over all of Unicode: no character is drawn as nothing (read back as NUL), and a name the
    font can draw whole is on page 1 as written."""
    pdf = package.build_unsigned_pdf(with_patient(family, given_name))
    text = first_page(pdf)
    assert "\x00" not in text
    glyphs = Glyphs(Layout())
    name = unicodedata.normalize("NFC", f"{given_name} {family}")
    if glyphs.text(name) == name and all(c.isprintable() or c == " " for c in name):
        assert "".join(name.split()) in text.replace(" ", "")
