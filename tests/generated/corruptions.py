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
BAD_TIMES = ("20260310253000", "20260230120000", "2026031")


def _groups(segments, *names):
    return [s for s in segments if s[0] in names]


# Each breaker breaks one field of *segments* and says the refusal it must get:
# (HL7 error code, regular expression of the ERR location).

def _birth_date(draw, segments):
    _set(_first(segments, "PID"), 7, draw(st.sampled_from(BAD_DATES)))
    return "102", r"PID\^1\^7"


def _fiscal_code(draw, segments):
    pid = _first(segments, "PID")
    ids = pid[3].split("~")
    at = next(k for k, i in enumerate(ids) if i.endswith("^NNITA"))
    cf = ids[at][:16]
    ids[at] = cf[:15] + next(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c != cf[15]) + ids[at][16:]
    pid[3] = "~".join(ids)
    return "102", r"PID\^1\^3"


def _family_name(draw, segments):
    pid = _first(segments, "PID")
    _set(pid, 5, "^" + pid[5].split("^")[1])
    return "101", r"PID\^1\^5\^1"


def _facility(draw, segments):
    _set(_first(segments, "MSH"), 4, "SCONOSCIUTA")
    return "103", r"MSH\^1\^4\^1"


def _accession(draw, segments):
    for segment in _groups(segments, "ORC", "OBR"):
        _set(segment, 2, "")
        _set(segment, 3, "")
    return "101", r"OBR\^1\^3"


def _observation_time(draw, segments):
    _set(_first(segments, "OBR"), 7, "20261310080000")
    return "102", r"OBR\^1\^7"


def _report_time(draw, segments):
    for obr in _groups(segments, "OBR"):
        _set(obr, 22, draw(st.sampled_from(BAD_TIMES)))
    return "102", r"OBR\^\d+\^22"


def _interpreter(draw, segments):
    for obr in _groups(segments, "OBR"):
        _set(obr, 32, "M999&Nessuno&Mario")
    return "103", r"OBR\^\d+\^32(\^1)?"


def _numeric_result(draw, segments):
    occurrence, obx = next((k, s) for k, s in enumerate(_groups(segments, "OBX"), start=1) if _shown_number(s))
    obx[5] = "non dosabile"
    return "102", rf"OBX\^{occurrence}\^5"     # ERR-2: the OBX's occurrence in the message


# Breaker → whether a message has that field to break.
BREAKERS = {
    "birth date": (_birth_date, lambda g, segments: True),
    "fiscal code": (_fiscal_code, lambda g, segments: "NNITA" in _first(segments, "PID")[3]),
    "family name": (_family_name, lambda g, segments: True),
    "facility": (_facility, lambda g, segments: True),
    "accession": (_accession, lambda g, segments: True),
    "observation time": (_observation_time, lambda g, segments: True),
    "report time": (_report_time, lambda g, segments: True),
    "interpreter": (_interpreter, lambda g, segments: len(_first(segments, "OBR")) > 32
                    and bool(_first(segments, "OBR")[32])),
    "numeric result": (_numeric_result, lambda g, segments: g.doc_type == "LAB"
                       and any(_shown_number(s) for s in segments)),
}


@st.composite
def refused_messages(draw, types=("LAB", "RAD", "RSA", "RAP", "LDO")) -> tuple[Generated, Refusal]:
    generated = draw(messages(types=types))
    segments = _segments(generated)
    what = draw(st.sampled_from([name for name, (_, applies) in BREAKERS.items() if applies(generated, segments)]))
    code, location = BREAKERS[what][0](draw, segments)
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
