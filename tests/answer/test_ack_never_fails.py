"""build_ack cannot fail, and answers in a charset the sender can read (issue 14)."""

import datetime

import hl7 as python_hl7
import pytest

from bridge.errors import BridgeError
from bridge.hl7.ack import build_ack
from bridge.hl7.message import Header, read_header
from bridge.model import AckCode
from bridge.outcome import Outcome
from fse_helpers import make_oru

NOW = datetime.datetime(2024, 2, 1, 10, 0, 0, tzinfo=datetime.timezone.utc)


def msa(ack: bytes) -> list[str]:
    return [s for s in ack.decode("ascii").split("\r") if s.startswith("MSA")][0].split("|")


def test_msh12_with_a_superscript_digit_is_answered():
    # "².7": str.isdigit() says yes, int() says no; the ACK used to fail there.
    header = read_header(make_oru("P1", version="².7").encode("utf-8"), "utf-8")
    ack = build_ack(header, Outcome.from_error(BridgeError("x", location="MSH^1^12")), now=NOW)
    assert msa(ack.decode("utf-8").encode("ascii", "replace"))[:3] == ["MSA", "AR", "P1"]


@pytest.mark.parametrize("name", ["UTF-16", "CP037", "ROT13", "BASE64", "UNDEFINED"])
def test_ack_to_a_message_with_a_bad_msh18_is_ascii_without_echoing_it(name):
    header = read_header(make_oru("P2", charset=name, name="NICCOLÒ").encode("latin-1"), "iso-8859-1")
    ack = build_ack(header, Outcome(code=AckCode.AE, text="x"), now=NOW)
    text = ack.decode("ascii")   # readable as ASCII, whatever the message declared
    msh = python_hl7.parse(text).segment("MSH")
    assert len(msh) < 18 or str(msh[18]) == ""
    assert msa(ack)[:3] == ["MSA", "AE", "P2"]


def test_accepted_msh18_is_echoed_and_used():
    header = read_header(make_oru("P3", charset="8859/15").encode("iso-8859-15"), "ascii")
    ack = build_ack(header, Outcome(code=AckCode.AA, text="città"), now=NOW)
    assert b"|8859/15" in ack and "città".encode("iso-8859-15") in ack


def test_a_header_that_cannot_be_answered_gets_the_fallback_ar():
    broken = Header(segment="MSH", fields=("MSH", "|", "^~\\&") + ("",) * 7 + ("Q1",), charset="no-such-codec")
    ack = build_ack(broken, Outcome(code=AckCode.AA, text="ok"), now=NOW)
    assert msa(ack)[:3] == ["MSA", "AR", "Q1"] and b"207^" in ack
    python_hl7.parse(ack.decode("ascii"))
