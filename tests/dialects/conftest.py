"""Dialect tests: each message of ../shared/corpus/italian-dialects through route → map → render.

A CDA that should be published is checked against the official rules twice:
bridge.cda.validate, and the independent validator ../shared/tools/validate_cda.py
(another XSD + schematron engine) run as a subprocess once over every CDA.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import StructureSettings
from bridge.errors import BridgeError
from bridge.gateway.identifiers import document_ids
from bridge.hl7.message import parse_message
from bridge.mapping.mapper import map_report
from bridge.mapping.tables import load_mappings
from bridge.mapping.route import load_routing, route
from bridge.cda.render import make_environment, render_cda

from fse_helpers import CHECKOUT, REFERENCE, VALIDATOR  # noqa: F401 (REFERENCE re-exported to the dialect tests)
from fse_helpers import DIALECTS as CORPUS

MAPPINGS = CHECKOUT / "mappings"
STRUCTURE = StructureSettings()


def corpus_file(prefix: str) -> Path:
    found = sorted(CORPUS.glob(f"{prefix}-*.hl7"))
    if not found:
        pytest.skip(f"dialect corpus message {prefix} not found in {CORPUS}")
    return found[0]


@pytest.fixture(scope="session")
def stages():
    return (load_routing(MAPPINGS), load_mappings(MAPPINGS, MAPPINGS / "practitioners.csv"),
            make_environment(CHECKOUT / "templates"))


@pytest.fixture(scope="session")
def run(stages):
    """(route, report, CDA bytes) of message bytes; mapping errors raise."""
    routing, mappings, env = stages

    def go(raw: bytes, mappings_=None):
        parsed = parse_message(raw)
        routed = route(parsed, routing)
        report = map_report(parsed, routed, mappings_ or mappings, STRUCTURE)
        ids = document_ids(STRUCTURE.fiscal_code, routed.doc_type.name, STRUCTURE.repository, routed.accession)
        return routed, report, render_cda(report, env, ids)
    return go


@pytest.fixture(scope="session")
def published(run, tmp_path_factory):
    """Every corpus message that maps, rendered once: {prefix: (route, report, xml, path)}."""
    out_dir = tmp_path_factory.mktemp("dialect-cda")
    done = {}
    for path in sorted(CORPUS.glob("*.hl7")):
        prefix = path.name.split("-", 1)[0]
        try:
            routed, report, xml = run(path.read_bytes())
        except BridgeError:
            continue
        target = out_dir / f"{prefix}.xml"
        target.write_bytes(xml)
        done[prefix] = (routed, report, xml, target)
    return done


@pytest.fixture(scope="session")
def independent(published):
    """The independent validator's verdict per CDA: {prefix: (schematron errors, xsd ok, full text)}."""
    if not VALIDATOR.is_file():
        pytest.skip("../shared/tools/validate_cda.py not found")
    paths = [entry[3] for entry in published.values()]
    result = subprocess.run([sys.executable, str(VALIDATOR), "--terminology", *map(str, paths)],
                            capture_output=True, text=True, timeout=300)
    verdicts = {}
    for block in re.split(r"(?m)^# ", result.stdout)[1:]:
        name = Path(block.split(":", 1)[0]).stem
        summary = re.search(r"xsd=(\S+) schematron_errors=(\d+)", block)
        terminology = re.search(r"terminology_errors=(\d+)", block)
        verdicts[name] = (summary[1] if summary else "?", int(summary[2]) if summary else -1,
                          int(terminology[1]) if terminology else -1, block)
    return verdicts
