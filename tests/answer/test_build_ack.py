"""answer.build_ack: interface.md's ACK contract."""

import datetime

import hl7 as python_hl7
import pytest
from hypothesis import given, settings, strategies as st

from bridge.hl7.ack import MSA3_MAX, build_ack, build_batch_ack
from bridge.errors import MissingField, UnsupportedMessage
from bridge.hl7.message import default_header, parse_message, read_header, split_batch
from bridge.model import AckCode
from bridge.outcome import ErrItem, Outcome
from fse_helpers import make_oru

NOW = datetime.datetime(2024, 2, 1, 10, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))


def ack_of(message_text, outcome, charset="ascii", **kw):
    raw = message_text.encode(charset) if isinstance(message_text, str) else message_text
    ack = build_ack(parse_message(raw, "iso-8859-1"), outcome, control_id="ACK1", now=NOW, **kw)
    return ack, python_hl7.parse(ack.decode(charset).replace("\r", "\r"))


def test_msh_swapped_new_id_version_as_received_and_msa():
    ack, parsed = ack_of(make_oru("C42", version="2.5.1"), Outcome(code=AckCode.AA, text="ok"))
    msh = parsed.segment("MSH")
    assert str(msh[3]) == "FSE" and str(msh[4]) == "REGIONE" and str(msh[5]) == "LIS" and str(msh[6]) == "OSP"
    assert str(msh[7]) == "20240201100000+0100"
    assert str(msh[9]) == "ACK^R01^ACK" and str(msh[10]) == "ACK1" and str(msh[12]) == "2.5.1"
    assert str(parsed.segment("MSA")) == "MSA|AA|C42|ok"
    assert ack.endswith(b"\r") and b"\n" not in ack


def test_err_v25_has_location_code_severity_text():
    outcome = Outcome.from_error(MissingField("patient id missing", location="PID^1^3"))
    _, parsed = ack_of(make_oru(version="2.5"), outcome)
    err = parsed.segment("ERR")
    assert str(err[2]) == "PID^1^3"
    assert str(err[3][0][0]) == "101" and str(err[3][0][2]) == "HL70357"
    assert str(err[4]) == "E" and str(err[8]) == "patient id missing"
    assert str(parsed.segment("MSA")[1]) == "AE"


@pytest.mark.parametrize("version", ["2.2", "2.3", "2.3.1", "2.4"])
def test_err1_for_old_versions(version):
    outcome = Outcome.from_error(UnsupportedMessage("type ADT not supported", location="MSH^1^9", code="200"))
    ack, parsed = ack_of(make_oru(version=version), outcome)
    err = parsed.segment("ERR")
    assert str(err) == "ERR|MSH^1^9^200&type ADT not supported&HL70357"
    assert str(parsed.segment("MSA")[1]) == "AR"
    message_type = str(parsed.segment("MSH")[9])
    assert message_type == ("ACK^R01^ACK" if version in ("2.3.1", "2.4") else "ACK^R01")


def test_several_errs_and_info_item():
    outcome = Outcome(code=AckCode.AA, text="X-Cart-id 1234", errors=(
        ErrItem(code="0", text="2.16.840.1.113883.2.9.2.90.4.4^^^ABC", severity="I"),
        ErrItem(code="207", text="warning", severity="W", location="OBX^2^5")))
    _, parsed = ack_of(make_oru(version="2.6"), outcome)
    errs = parsed.segments("ERR")
    assert [str(e[4]) for e in errs] == ["I", "W"]
    # delimiters in the text are escaped, so the document id survives the round trip
    assert "\\S\\" in str(errs[0][8])


def test_msa3_escaped_and_at_most_80_characters():
    text = "bad value | with ^ delimiters & more ~ and \\ escapes " * 4
    ack, parsed = ack_of(make_oru(), Outcome(code=AckCode.AE, text=text))
    msa3 = ack.split(b"\r")[1].split(b"|", 3)[3]
    assert len(msa3) <= MSA3_MAX
    assert b"\\F\\" in msa3 and b"\\S\\" in msa3
    assert not msa3.endswith(b"\\") or msa3.endswith(b"\\E\\") or msa3.count(b"\\") % 2 == 0
    assert str(parsed.segment("MSA")[2]) == "CTRL0001"


def test_own_separators_are_used():
    raw = b"MSH#$%\\*#LIS#OSP#FSE#REG#2024##ORU$R01#C7#P#2.5\rPID#1\r"
    ack = build_ack(parse_message(raw), Outcome.from_error(MissingField("x#y", location="PID^1^3")),
                    control_id="N", now=NOW)
    assert ack.startswith(b"MSH#$%\\*#FSE#REG#LIS#OSP#")
    assert b"\rMSA#AE#C7#x\\F\\y\r" in ack
    assert b"ERR##PID$1$3#101$" in ack


def test_no_escape_character_declared():
    raw = b"MSH|^~&|LIS|OSP|FSE|REG|2024||ORU^R01|C8|P|2.5.1\rPID|1\r"
    ack = build_ack(parse_message(raw), Outcome(code=AckCode.AE, text="a|b^c"), now=NOW)
    assert b"MSA|AE|C8|a b c" in ack


@pytest.mark.parametrize("code,expected", [(AckCode.AA, "CA"), (AckCode.AE, "CE"), (AckCode.AR, "CR")])
def test_enhanced_mode_answers_ca_ce_cr(code, expected):
    _, parsed = ack_of(make_oru(accept_ack="AL", application_ack="NE"), Outcome(code=code, text="t"))
    assert str(parsed.segment("MSA")[1]) == expected


def test_charset_is_the_messages():
    ack, parsed = ack_of(make_oru(charset="8859/1"), Outcome(code=AckCode.AE, text="nome NICCOLÒ errato"),
                         charset="iso-8859-1")
    assert "NICCOLÒ".encode("iso-8859-1") in ack
    assert str(parsed.segment("MSH")[18]) == "8859/1"
    ack, _ = ack_of(make_oru(charset="UNICODE UTF-8"), Outcome(code=AckCode.AE, text="NICCOLÒ"), charset="utf-8")
    assert "NICCOLÒ".encode("utf-8") in ack


def test_header_only_ack_for_unparseable_message():
    raw = make_oru("U1", charset="UNICODE UTF-8", name="NICCOLÒ").encode("iso-8859-1")
    ack = build_ack(read_header(raw), Outcome(code=AckCode.AE, text="bad bytes"), now=NOW)
    assert b"MSA|AE|U1|bad bytes" in ack
    ack = build_ack(default_header(), Outcome(code=AckCode.AE, text="no MSH"), now=NOW)
    assert b"\rMSA|AE||no MSH\r" in ack


def test_batch_answer_inside_bhs_bts():
    raw = ("FHS|^~\\&|LIS|OSP|FSE|REG|2024||||F1\rBHS|^~\\&|LIS|OSP|FSE|REG|2024||||B1\r"
           + make_oru("A1") + make_oru("A2") + "BTS|2\rFTS|1\r").encode()
    batch = split_batch(raw)
    acks = [build_ack(parse_message(m), Outcome(code=AckCode.AA), now=NOW) for m in batch.messages]
    answer = build_batch_ack(batch, acks, control_id="R1", now=NOW)
    segments = answer.decode().strip("\r").split("\r")
    assert segments[0].startswith("FHS|^~\\&|FSE|REG|LIS|OSP|") and segments[0].endswith("|R1|F1")
    assert segments[1].startswith("BHS|") and segments[1].endswith("|R1|B1")
    assert [s.split("|")[2] for s in segments if s.startswith("MSA")] == ["A1", "A2"]
    assert segments[-2:] == ["BTS|2", "FTS|1"]


def test_batch_without_envelope_is_the_acks_in_order():
    batch = split_batch((make_oru("A1") + make_oru("A2")).encode())
    acks = [b"first\r", b"second\r"]
    assert build_batch_ack(batch, acks) == b"first\rsecond\r"


control_ids = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="|^~\\&"),
                      min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(control_ids, st.sampled_from(["2.2", "2.3", "2.4", "2.5", "2.5.1", "2.7.1", ""]),
       st.sampled_from(list(AckCode)[:3]), st.text(max_size=200))
def test_msa2_is_always_msh10(control_id, version, code, text):
    raw = make_oru(control_id, version=version).encode()
    ack = build_ack(parse_message(raw), Outcome(code=code, text=text), now=NOW)
    assert b"\x0b" not in ack and b"\x1c" not in ack and b"\n" not in ack
    parsed = python_hl7.parse(ack.decode("iso-8859-1"))
    assert str(parsed.segment("MSA")[2]) == control_id
    assert len(ack.split(b"\r")[1].split(b"|", 3)[3]) <= MSA3_MAX


def test_info_item_only_in_journal_before_v25():
    outcome = Outcome(code=AckCode.AA, text="X-Cart-id 1234", errors=(
        ErrItem(code="0", text="published 2.16.840.1.113883.2.9.2.90.4.4^X", severity="I"),))
    _, parsed = ack_of(make_oru(version="2.4"), outcome)
    assert not any(str(s[0]) == "ERR" for s in parsed)
    _, parsed = ack_of(make_oru(version="2.5"), outcome)
    assert str(parsed.segment("ERR")[4]) == "I"


frames = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda head, tail: head + tail,
              st.sampled_from([b"MSH|^~\\&|", b"MSH|", b"MSH#$%\\*#", b"\xef\xbb\xbfMSH|^~&|", b"BHS|^~\\&|"]),
              st.binary(max_size=300)))


@settings(max_examples=400, deadline=None)
@given(frames)
def test_any_frame_can_be_answered(frame_bytes):
    """Whatever a frame holds, each of its messages gets an ACK (never an exception)."""
    from bridge.errors import BridgeError
    batch = split_batch(frame_bytes)
    acks = []
    for raw in batch.messages or (batch.leading,):
        try:
            source = parse_message(raw, "iso-8859-1")
        except BridgeError:
            source = read_header(raw) or default_header()
        acks.append(build_ack(source, Outcome(code=AckCode.AE, text="x"), now=NOW))
    answer = build_batch_ack(batch, acks, now=NOW)
    assert answer.count(b"\rMSA") == len(acks) >= 1
    assert b"\x0b" not in answer and b"\x1c" not in answer
