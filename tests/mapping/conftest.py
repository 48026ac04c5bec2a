"""Helpers for mapping tests: the checkout's mappings, example messages with fields patched."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import StructureSettings
from bridge.hl7.message import parse_message
from bridge.mapping.mapper import map_report
from bridge.mapping.tables import load_mappings
from bridge.mapping.route import load_routing, route

CHECKOUT = Path(__file__).resolve().parents[2]
MAPPINGS = CHECKOUT / "mappings"
EXAMPLES = CHECKOUT / "examples"


@pytest.fixture(scope="session")
def mappings():
    return load_mappings(MAPPINGS, MAPPINGS / "practitioners.csv")


@pytest.fixture(scope="session")
def routing():
    return load_routing(MAPPINGS)


def example(name: str) -> str:
    """An example message as text (segments separated by CR)."""
    raw = (EXAMPLES / name).read_bytes()
    return parse_message(raw).text


def patch(text: str, segment: str, field: int, value: str, occurrence: int = 1) -> str:
    """*text* with SEG-field of the given occurrence replaced (the whole field, raw)."""
    lines = text.split("\r")
    seen = 0
    for i, line in enumerate(lines):
        if line[:3] != segment:
            continue
        seen += 1
        if seen != occurrence:
            continue
        parts = line.split("|")
        index = field - 1 if segment == "MSH" else field
        parts += [""] * (index + 1 - len(parts))
        parts[index] = value
        lines[i] = "|".join(parts)
        return "\r".join(lines)
    raise AssertionError(f"no {segment} occurrence {occurrence}")


def drop(text: str, segment: str) -> str:
    return "\r".join(line for line in text.split("\r") if line[:3] != segment)


@pytest.fixture
def do_map(mappings, routing):
    """Route and map message text (UTF-8 unless told) with the default structure."""
    def run(text: str, encoding: str = "utf-8", structure: StructureSettings | None = None):
        parsed = parse_message(text.encode(encoding))
        return map_report(parsed, route(parsed, routing), mappings, structure or StructureSettings())
    return run
