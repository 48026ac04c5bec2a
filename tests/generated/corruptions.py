"""One field the CDA needs made wrong in a generated message: the product must refuse it naming that field.

Issue 13 item 5: bad input gets an AE whose ERR names the field (a month 13
birth date was published as birthTime 19751304). :func:`refused_messages`
takes a message of :func:`~.strategies.messages` (valid by construction) and
breaks exactly one field, so the only right answer is the refusal below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypothesis import strategies as st

from bridge.mapping.analysis import analyse

from .strategies import CHARSETS, Generated, messages


@dataclass(frozen=True)
class Refusal:
    what: str
    raw: bytes
    code: str
    """The HL7 error code of the ERR (101 missing, 102 bad value, 103 unknown code)."""
    location: str
    """A regular expression the ERR location must match in full."""


def _segments(generated: Generated) -> list[list[str]]:
    text = generated.raw.decode(CHARSETS[generated.charset])
    return [line.split("|") for line in text.split("\r") if line]


def _encode(segments: list[list[str]], generated: Generated) -> bytes:
    return ("\r".join("|".join(f) for f in segments) + "\r").encode(CHARSETS[generated.charset])


def _set(segment: list[str], index: int, value: str) -> None:
    """Field *index* of a segment (MSH counts MSH-1 as the separator)."""
    at = index - 1 if segment[0] == "MSH" else index
    segment += [""] * (at + 1 - len(segment))
    segment[at] = value


def _first(segments, name):
    return next(s for s in segments if s[0] == name)


def _shown_number(segment: list[str]) -> bool:
    """An NM result whose value the document shows (not X: no value, nor D/W: left out)."""
    return segment[0] == "OBX" and segment[2] == "NM" and segment[11] in ("F", "C")


BAD_DATES = ("19751304", "19750432", "19750230", "20990101", "1975-04-13")


@st.composite
def refused_messages(draw, types=("LAB", "RAD", "RSA", "RAP", "LDO")) -> tuple[Generated, Refusal]:
    generated = draw(messages(types=types))
    segments = _segments(generated)
    pid = _first(segments, "PID")
    choices = ["birth date", "family name", "facility", "accession", "observation time", "report time"]
    if "NNITA" in pid[3]:
        choices.append("fiscal code")
    obr = _first(segments, "OBR")
    if len(obr) > 32 and obr[32]:
        choices.append("interpreter")
    if any(_shown_number(s) for s in segments) and generated.doc_type == "LAB":
        choices.append("numeric result")
    what = draw(st.sampled_from(choices))
    if what == "birth date":
        _set(pid, 7, draw(st.sampled_from(BAD_DATES)))
        code, location = "102", r"PID\^1\^7"
    elif what == "fiscal code":
        ids = pid[3].split("~")
        at = next(k for k, i in enumerate(ids) if i.endswith("^NNITA"))
        cf = ids[at][:16]
        ids[at] = cf[:15] + next(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c != cf[15]) + ids[at][16:]
        pid[3] = "~".join(ids)
        code, location = "102", r"PID\^1\^3"
    elif what == "family name":
        _set(pid, 5, "^" + pid[5].split("^")[1])
        code, location = "101", r"PID\^1\^5\^1"
    elif what == "facility":
        _set(_first(segments, "MSH"), 4, "SCONOSCIUTA")
        code, location = "103", r"MSH\^1\^4\^1"
    elif what == "accession":
        for s in segments:
            if s[0] in ("ORC", "OBR"):
                _set(s, 2, "")
                _set(s, 3, "")
        code, location = "101", r"OBR\^1\^3"
    elif what == "observation time":
        obr = _first(segments, "OBR")
        _set(obr, 7, "20261310080000")
        code, location = "102", r"OBR\^1\^7"
    elif what == "report time":
        for s in segments:
            if s[0] == "OBR":
                _set(s, 22, draw(st.sampled_from(("20260310253000", "20260230120000", "2026031"))))
        code, location = "102", r"OBR\^\d+\^22"
    elif what == "interpreter":
        for s in segments:
            if s[0] == "OBR":
                _set(s, 32, "M999&Nessuno&Mario")
        code, location = "103", r"OBR\^\d+\^32(\^1)?"
    else:
        obx = [s for s in segments if s[0] == "OBX"]
        occurrence, segment = next((k, s) for k, s in enumerate(obx, start=1) if _shown_number(s))
        segment[5] = "non dosabile"
        code, location = "102", rf"OBX\^{occurrence}\^5"      # ERR-2: the OBX's occurrence in the message
    return generated, Refusal(what, _encode(segments, generated), code, location)


def misjudged(stages, refusal: Refusal) -> str:
    """Why the product's answer to *refusal* is not the AE naming the broken field ("" when it is)."""
    analysis = analyse(stages, refusal.raw)
    error = analysis.route_error or analysis.mapping_error
    if error is None:
        return f"{refusal.what}: accepted"
    if (error.ack_code, error.err_code) != ("AE", refusal.code) or not re.fullmatch(refusal.location, error.location):
        return f"{refusal.what}: {error.ack_code} {error.err_code} {error.location} {error.message}"
    return ""
