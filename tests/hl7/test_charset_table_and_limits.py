"""MSH-18 from mappings/charsets.csv only; unreadable MSH-2/MSH-12 and oversized messages refused (issue 14)."""

import pytest

from bridge.errors import FrameTooLarge, NotProcessable, ParseError
from bridge.hl7.message import (CHARSETS, ascii_compatible, load_charsets, parse_message, read_header)
from fse_helpers import make_oru

#: Names codecs.lookup knows that are no text encoding, or not one a sender's ACK can be read in.
NOT_ACCEPTED = ["ROT13", "HEX", "BASE64", "QUOPRI", "UU", "ZLIB", "BZ2", "IDNA", "PUNYCODE", "UTF-16",
                "UTF-32", "CP037", "UNDEFINED", "UTF-8\x00", "ISO 2022 JP", "BIG5"]


def test_every_codec_of_the_table_is_ascii_compatible():
    assert CHARSETS["8859/1"] == "iso-8859-1" and CHARSETS["UNICODE UTF-8"] == "utf-8"
    assert CHARSETS["8859/15"] == "iso-8859-15" and CHARSETS["ASCII"] == "ascii"
    assert all(ascii_compatible(codec) for codec in CHARSETS.values())


@pytest.mark.parametrize("name", NOT_ACCEPTED)
def test_msh18_outside_the_table_is_ae_102_at_msh18(name):
    raw = make_oru("C1", charset=name).encode("latin-1")
    with pytest.raises(ParseError) as caught:
        parse_message(raw, "iso-8859-1")
    assert caught.value.location == "MSH^1^18" and caught.value.err_code == "102"
    assert caught.value.ack_code == "AE"


@pytest.mark.parametrize("name", NOT_ACCEPTED)
def test_header_of_a_message_with_a_bad_msh18_is_read_in_ascii(name):
    header = read_header(make_oru("C1", charset=name).encode("latin-1"), "iso-8859-1")
    assert header.charset == "ascii" and header.control_id == "C1"


def test_a_table_row_naming_a_codec_that_is_not_ascii_compatible_is_refused(tmp_path):
    bad = tmp_path / "charsets.csv"
    bad.write_text("msh18,codec\nUTF-16,utf-16\n")
    with pytest.raises(ValueError, match="charsets.csv"):
        load_charsets(bad)
    bad.write_text("msh18,codec\nROT13,rot13\n")
    with pytest.raises(ValueError):
        load_charsets(bad)


def test_unreadable_msh12_is_ar_naming_it():
    with pytest.raises(NotProcessable) as caught:
        parse_message(make_oru("C1", version="².7").encode("utf-8"), "utf-8")
    assert caught.value.ack_code == "AR" and caught.value.location == "MSH^1^12"
    assert parse_message(make_oru("C2", version="2.5.1").encode(), "ascii").version == "2.5.1"


def test_unusable_msh2_is_ar_naming_it():
    raw = make_oru("C1").replace("^~\\&", "\x00\x01", 1).encode("latin-1")
    with pytest.raises(NotProcessable) as caught:
        parse_message(raw, "iso-8859-1")
    assert caught.value.ack_code == "AR" and caught.value.location == "MSH^1^2"


def test_too_many_segments_or_fields_refused_before_the_parse():
    many_segments = make_oru("C1") + "NTE|1||x\r" * 50
    with pytest.raises(FrameTooLarge):
        parse_message(many_segments.encode(), "ascii", max_segments=40)
    parse_message(many_segments.encode(), "ascii", max_segments=60)
    many_fields = make_oru("C1") + "NTE|1||" + "^" * 500 + "\r"
    with pytest.raises(FrameTooLarge) as caught:
        parse_message(many_fields.encode(), "ascii", max_fields=400)
    assert caught.value.ack_code == "AR"
    parse_message(many_fields.encode(), "ascii", max_fields=1000)
