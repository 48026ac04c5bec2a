"""Every CDA the test session validates with the official schematrons is judged again by the second engine.

:func:`second_engine_on_every_validated_cda` (a session-scoped autouse
fixture, from the root conftest) wraps :meth:`bridge.cda.validate.Rules.check_schematron`:
whatever test renders and validates a CDA in this process (render, corpus,
generated reports, the pipeline, the simulator's CDA step) leaves the document,
its type and our findings here. At the end of the session the second engine
(:mod:`oracles.second_engine`) runs on them, one batch per type, and any
difference fails the session.

Only documents checked with the official schematron files are kept (a test's
own schematron cannot be given to the second engine), each once. A test that
breaks our translator on purpose pauses the collection (:func:`paused`).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from pathlib import Path

import pytest

from bridge.cda.validate import Rules

from oracles.second_engine import REFERENCE, disagreements, ours, run_second_engine


class _Report:
    """The two fields :func:`oracles.second_engine.ours` reads, from a list of findings."""

    def __init__(self, issues):
        self.xsd_errors = []
        self.schematron_errors = [i for i in issues if i.severity != "warning"]
        self.warnings = [i for i in issues if i.severity == "warning"]


class Collector:
    def __init__(self):
        self.documents: dict[tuple[str, str], tuple[str, object]] = {}
        self.paused = 0
        self._lock = threading.Lock()
        self._official: dict[Path, bool] = {}

    def official(self, path: Path) -> bool:
        """True when *path* holds the same bytes as the reference pack's file of that name."""
        if path not in self._official:
            reference = REFERENCE / "schematron" / path.name
            self._official[path] = reference.is_file() and reference.read_bytes() == path.read_bytes()
        return self._official[path]

    def record(self, rules: Rules, xml_text: str, doc_type, issues) -> None:
        chosen = rules.schematron_for(doc_type)
        with self._lock:
            if self.paused or chosen is None or not self.official(chosen.path):
                return
            key = (doc_type.name, hashlib.sha256(xml_text.encode("utf-8")).hexdigest())
            self.documents.setdefault(key, (xml_text, ours(_Report(issues))))

    def judge(self, folder: Path) -> list[str]:
        """Every disagreement between our findings and the second engine's, per document."""
        found = []
        for doc_type in sorted({t for t, _ in self.documents}):
            keys = [k for k in self.documents if k[0] == doc_type]
            paths = {}
            for number, key in enumerate(keys):
                paths[key] = folder / f"{doc_type}-{number:05d}.xml"
                paths[key].write_text(self.documents[key][0], encoding="utf-8")
            theirs = run_second_engine(list(paths.values()), doc_type)
            for key in keys:
                found += [f"{paths[key].name}: {d}" for d in disagreements(self.documents[key][1],
                                                                          theirs[paths[key]])]
        return found


COLLECTOR = Collector()


@contextlib.contextmanager
def paused():
    """No collection inside (a test that breaks the translation on purpose)."""
    with COLLECTOR._lock:
        COLLECTOR.paused += 1
    try:
        yield
    finally:
        with COLLECTOR._lock:
            COLLECTOR.paused -= 1


@pytest.fixture(scope="session", autouse=True)
def second_engine_on_every_validated_cda(tmp_path_factory):
    checked = Rules.check_schematron

    def check_schematron(self, xml_text, doc_type):
        issues = checked(self, xml_text, doc_type)
        COLLECTOR.record(self, xml_text, doc_type, issues)
        return issues

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Rules, "check_schematron", check_schematron)
        yield COLLECTOR
    if COLLECTOR.documents:
        found = COLLECTOR.judge(tmp_path_factory.mktemp("second-engine-session"))
        COLLECTOR.documents.clear()
        if found:
            pytest.fail(f"the second engine disagrees with ours on CDAs this session validated:\n"
                        + "\n".join(found[:50]), pytrace=False)
