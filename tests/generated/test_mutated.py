"""A broken message is refused, never an internal error: the worker's analysis (parse, route,
map) of mutated real and generated messages raises nothing but the product's own errors, each
naming where (the fuzz of bench/fuzz_mllp.py found an MSH-2 of one character crashing the
routing's field reader: AR 207 and a traceback instead of the answer naming MSH-2)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import BridgeError
from bridge.gateway.identifiers import document_ids
from bridge.mapping.analysis import analyse
from bridge.service import stages as stage_functions
from fse_helpers import CORPUS, CHECKOUT

from .strategies import messages

SEEDS = [p.read_bytes() for p in sorted(CORPUS.glob("*.hl7"))] + \
        [p.read_bytes() for p in sorted((CHECKOUT / "examples").glob("*.hl7"))]
DELIMITERS = b"|^~\\&\r"
#: Examples per test in CI; FSE_MUTATIONS=N for a longer search.
MUTATIONS = int(os.environ.get("FSE_MUTATIONS", "300"))


@st.composite
def mutated(draw, seeds=st.sampled_from(SEEDS)) -> bytes:
    """A seed message with 1 to 4 byte-level edits of the kinds senders' bugs make: a delimiter
    put in, a span cut out or doubled, MSH-2 shortened, segments swapped."""
    raw = bytearray(draw(seeds).replace(b"\r\n", b"\r").replace(b"\n", b"\r"))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("delimiter", "cut", "double", "msh2", "swap")))
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "delimiter":
            raw[at:at + draw(st.integers(0, 1))] = bytes([draw(st.sampled_from(DELIMITERS))])
        elif kind == "cut":
            del raw[at:at + draw(st.integers(1, 40))]
        elif kind == "double":
            raw[at:at] = raw[at:at + draw(st.integers(1, 80))]
        elif kind == "msh2" and raw[:3] == b"MSH" and len(raw) > 8:
            end = raw.find(raw[3:4], 4)
            if end > 4:
                raw[4:end] = raw[4:4 + draw(st.integers(1, end - 4))]
        elif kind == "swap":
            segments = bytes(raw).split(b"\r")
            if len(segments) > 2:
                i, j = draw(st.integers(1, len(segments) - 1)), draw(st.integers(1, len(segments) - 1))
                segments[i], segments[j] = segments[j], segments[i]
                raw = bytearray(b"\r".join(segments))
    return bytes(raw)


def analysed_or_refused(stages, raw: bytes) -> None:
    """The analysis, then the CDA of a mapped report: each ends or raises a BridgeError with a location."""
    try:
        analysis = analyse(stages, raw)
    except BridgeError as exc:
        assert exc.location, exc
        return
    for error in (analysis.route_error, analysis.mapping_error):
        assert error is None or error.location or error.ack_code == "AR", error
    if analysis.report is not None and analysis.route is not None:
        structure, routed = stages.config.structure, analysis.route
        ids = document_ids(structure.fiscal_code, routed.doc_type.name, structure.repository, routed.accession,
                           repository_index=structure.repository_index)
        stage_functions.render(stages, analysis.report, ids)


@settings(max_examples=MUTATIONS, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(raw=mutated())
def test_mutated_real_messages_are_refused_not_crashed(stages, raw):
    analysed_or_refused(stages, raw)


@settings(max_examples=max(1, MUTATIONS // 5), deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(raw=mutated(seeds=messages().map(lambda g: g.raw)))
def test_mutated_generated_messages_are_refused_not_crashed(stages, raw):
    analysed_or_refused(stages, raw)


@pytest.mark.parametrize("msh2", ["^", "^~", "^~\\"])
def test_short_msh_2_is_read_with_the_default_delimiters(stages, msh2):
    raw = (CHECKOUT / "examples" / "lab.hl7").read_bytes().replace(b"MSH|^~\\&|", f"MSH|{msh2}|".encode(), 1)
    analysed_or_refused(stages, raw)
