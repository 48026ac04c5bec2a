"""hl7.py: batches, tolerant headers, charsets (issue 2, "HL7 v2 handling")."""

import pytest

from bridge.errors import ParseError
from bridge.hl7.message import header_of, parse_message, read_header, split_batch
from fse_helpers import CORPUS, make_oru


def test_single_message_is_a_batch_of_one_without_envelope():
    batch = split_batch(make_oru().encode())
    assert len(batch.messages) == 1 and not batch.enveloped


def test_several_msh_in_one_frame_with_lf_terminators():
    raw = (make_oru("A1", sep="\n") + make_oru("A2", sep="\n")).encode()
    batch = split_batch(raw)
    assert [read_header(m).control_id for m in batch.messages] == ["A1", "A2"]
    assert not batch.enveloped


def test_bhs_bts_batch():
    raw = ("BHS|^~\\&|LIS|OSP|FSE|REG|20240101||||B77\r" + make_oru("A1") + make_oru("A2") + "BTS|2\r").encode()
    batch = split_batch(raw)
    assert batch.batch_header.control_id == "B77" and batch.file_header is None
    assert len(batch.messages) == 2
    assert not any(b"BTS" in m for m in batch.messages)


def test_fhs_bhs_batch_from_the_corpus():
    batch = split_batch((CORPUS / "ruby-hl7-7.hl7").read_bytes())
    assert batch.file_header is not None and batch.batch_header is not None
    assert len(batch.messages) == 2


def test_msh_inside_a_field_is_not_a_segment_start():
    raw = make_oru().replace("Glucosio", "Glucosio MSH|x").encode()
    assert len(split_batch(raw).messages) == 1


def test_bom_crlf_and_blank_lines():
    raw = b"\xef\xbb\xbf" + make_oru("B1", sep="\r\n").encode() + b"\r\n\r\n"
    parsed = parse_message(split_batch(raw).messages[0])
    assert parsed.control_id == "B1" and parsed.get("OBX", 5) == "95"


@pytest.mark.parametrize("declared,codec", [("8859/1", "iso-8859-1"), ("", "iso-8859-1")])
def test_italian_accented_names_in_latin1(declared, codec):
    raw = make_oru(charset=declared, name="NICCOLÒ^ÀNGELA").encode("iso-8859-1")
    parsed = parse_message(raw, "iso-8859-1")
    assert parsed.charset == codec
    assert parsed.get("PID", 5, 1) == "NICCOLÒ" and parsed.get("PID", 5, 2) == "ÀNGELA"


@pytest.mark.parametrize("declared", ["UNICODE UTF-8", "UTF-8", "utf8"])
def test_italian_accented_names_in_utf8(declared):
    raw = make_oru(charset=declared, name="D'ANNUNZIÒ^GIOSUÈ").encode("utf-8")
    parsed = parse_message(raw, "iso-8859-1")
    assert parsed.charset == "utf-8"
    assert parsed.get("PID", 5, 2) == "GIOSUÈ"


def test_undecodable_bytes_name_msh18():
    raw = make_oru(charset="UNICODE UTF-8", name="NICCOLÒ").encode("iso-8859-1")
    with pytest.raises(ParseError) as info:
        parse_message(raw, "iso-8859-1")
    assert info.value.location == "MSH^1^18" and info.value.ack_code == "AE"


def test_read_header_of_undecodable_message_still_gives_control_id():
    raw = make_oru("Z9", charset="UNICODE UTF-8", name="NICCOLÒ").encode("iso-8859-1")
    header = read_header(raw)
    assert header.control_id == "Z9" and header.field(3) == "LIS" and header.field(18) == "UNICODE UTF-8"


def test_read_header_of_garbage():
    assert read_header(b"\x00\x01 not hl7 at all") is None
    assert read_header(b"MSH") is None


def test_header_accessors_follow_msh2():
    header = read_header(b"MSH#$%\\*#A#B#C#D#2024##ORU$R01#C1#P#2.5.1#####UNICODE UTF-8\r")
    assert (header.separator, header.component, header.repetition, header.escape, header.subcomponent) == \
        ("#", "$", "%", "\\", "*")
    assert header.field(9, 2) == "R01" and header.version == "2.5.1"
    assert read_header(b"MSH|^~&|A\r").escape == ""


def test_header_of_parsed_matches_read_header():
    raw = make_oru("Q1", accept_ack="AL").encode()
    assert header_of(parse_message(raw)).fields == read_header(raw).fields
    assert read_header(raw).enhanced


def test_every_corpus_message_splits_and_has_a_header():
    files = sorted(CORPUS.glob("*.hl7"))
    assert len(files) == 58
    for path in files:
        batch = split_batch(path.read_bytes())
        assert batch.messages, path.name
        for message in batch.messages:
            assert read_header(message) is not None, path.name


def test_single_message_frames_split_as_the_segment_scan_does():
    """The one-message shortcut of split_batch agrees with the full scan (forced by a leading LF)."""
    frames = [p.read_bytes() for p in sorted(CORPUS.glob("*.hl7"))]
    frames += [b"MSH\rPID|1", b"MSHX|^~\\&|A", b"MSH|^~\\&|A\rBTS|1", b"MSH|^~\\&|A\rOBX|1|TX|||FHS text"]
    assert len(frames) > 50
    for raw in frames:
        body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
        fast, scanned = split_batch(body), split_batch(b"\n" + body)
        assert fast.messages == scanned.messages, raw[:40]
        assert (fast.file_header, fast.batch_header) == (scanned.file_header, scanned.batch_header)
