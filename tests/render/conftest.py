"""Render tests: the checkout's mappings and templates, the official rules in ../shared/reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import StructureSettings
from bridge.hl7.message import parse_message
from bridge.gateway.identifiers import document_ids
from bridge.mapping.mapper import map_report
from bridge.mapping.tables import load_mappings
from bridge.cda.render import make_environment, render_cda
from bridge.mapping.route import load_routing, route

from fse_helpers import CHECKOUT, REFERENCE  # noqa: F401 (re-exported to the render tests)

FIXTURES = CHECKOUT / "tests" / "fixtures" / "hl7"
EXAMPLES = CHECKOUT / "examples"
STRUCTURE = StructureSettings()


@pytest.fixture(scope="session")
def pipeline():
    """route → map → render for a message file, with optional previous version."""
    routing = load_routing(CHECKOUT / "mappings")
    mappings = load_mappings(CHECKOUT / "mappings", CHECKOUT / "mappings" / "practitioners.csv")
    env = make_environment(CHECKOUT / "templates")

    def run(path: Path, *, previous_id: str | None = None, previous_version: int | None = None):
        parsed = parse_message(Path(path).read_bytes())
        routed = route(parsed, routing)
        report = map_report(parsed, routed, mappings, STRUCTURE)
        ids = document_ids(STRUCTURE.fiscal_code, routed.doc_type.name, STRUCTURE.repository,
                           routed.accession, previous_id=previous_id, previous_version=previous_version)
        return report, ids, render_cda(report, env, ids)
    return run
