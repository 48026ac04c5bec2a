"""HL7 paths and escapes (bridge.hl7.path)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from bridge.hl7.message import parse_message
from bridge.hl7.path import HIGHLIGHT, NORMAL, Path, Reader, parse_path


@pytest.mark.parametrize("text, expected", [
    ("PID-3", Path("PID", 3, 1, None, None)),
    ("PID-5.1", Path("PID", 5, 1, 1, None)),
    ("OBR-32.1.2", Path("OBR", 32, 1, 1, 2)),
    ("PID-3[2].5", Path("PID", 3, 2, 5, None)),
    ("OBX-5[*]", Path("OBX", 5, None, None, None))])
def test_parse_path(text, expected):
    assert parse_path(text) == expected
    assert str(parse_path(text)) == text


@pytest.mark.parametrize("text", ["PID", "PID-", "pid-3", "PID-3.x", "PID-3[0", "PID-3.1.2.3"])
def test_bad_paths(text):
    with pytest.raises(ValueError):
        parse_path(text)


def test_locations():
    assert parse_path("PID-3").location() == "PID^1^3"
    assert parse_path("OBR-32.1").location(2) == "OBR^2^32^1"


def reader(segment: str, encoding="utf-8", charset=""):
    msh = f"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|1|P|2.5|||||||{charset}"
    return Reader(parse_message(f"{msh}\r{segment}".encode(encoding)))


def test_msh_fields_are_numbered_from_the_separator():
    r = reader("PID|1")
    assert r.value(0, parse_path("MSH-1")) == "|"
    assert r.value(0, parse_path("MSH-2")) == "^~\\&"
    assert r.value(0, parse_path("MSH-9.2")) == "R01"
    assert r.value(0, parse_path("MSH-12")) == "2.5"


def test_repetitions_components_subcomponents():
    r = reader("PID|1||A^^^X&1.2&ISO^NNITA~B^^^Y^PI")
    assert r.value(1, parse_path("PID-3[2].5")) == "PI"
    assert r.value(1, parse_path("PID-3.4.2")) == "1.2"
    assert r.values(1, parse_path("PID-3[*].1")) == ["A", "B"]
    assert r.value(1, parse_path("PID-3[3].1")) == ""
    assert r.value(1, parse_path("PID-40")) == ""


def test_hex_escape_uses_the_message_charset():
    r = reader("NTE|1||perch\\XE9\\", encoding="latin-1", charset="8859/1")
    assert r.value(1, parse_path("NTE-3")) == "perché"


ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\", "\n": "\\.br\\"}


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("|^&~\\\n"),
               max_size=60))
def test_unescape_inverts_escape(text):
    escaped = "".join(ESCAPES.get(c, c) for c in text)
    r = reader("NTE|1||x")
    assert r.unescape(escaped) == text


def test_highlight_is_dropped_or_kept_as_marks_when_asked():
    r = reader("OBX|1|FT|X||\\H\\A)\\N\\ testo\\.br\\riga")
    assert r.value(1, parse_path("OBX-5")) == "A) testo\nriga"
    assert r.values(1, parse_path("OBX-5"), highlight=True) == [f"{HIGHLIGHT}A){NORMAL} testo\nriga"]


def test_every_escape_of_the_issue_decoded():
    r = reader("NTE|1||\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\X41\\ \\H\\b\\N\\\\.br\\x")
    assert r.value(1, parse_path("NTE-3")) == "| ^ & ~ \\ A b\nx"
