"""The accreditation run makes its document with the pipeline's own render → validate → package
(bridge.publish.version.make_version): a CDA the local rules refuse stops the run at step 1
before any call, with the error and the findings the pipeline would give, and no PDF."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil

import pytest_twisted
from twisted.internet import defer

from bridge.accredit import run as accredit
from bridge.journal.sqlite import SqliteStore

from fse_helpers import CHECKOUT


@pytest_twisted.ensureDeferred
async def test_a_cda_the_rules_refuse_stops_at_step_1_with_the_pipelines_error(make_config, rules_dir, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(CHECKOUT / "templates", templates)
    macros = templates / "_macros.xml.j2"
    # The Italian realm is required by the CDA2 IG's schematron: any other refuses the CDA.
    macros.write_text(macros.read_text("utf-8").replace('<realmCode code="IT"/>', '<realmCode code="XX"/>'),
                      "utf-8")
    config = make_config(rules_dir=rules_dir)
    config = dataclasses.replace(config, mapping=dataclasses.replace(config.mapping, templates=templates))
    out = tmp_path / "out"
    result = await defer.Deferred.fromFuture(asyncio.ensure_future(accredit.run_accreditation(
        config, accredit.Options(base_url="https://127.0.0.1:9/gateway/v2/", out_dir=out))))

    assert not result.ok and len(result.steps) == 1
    step = result.steps[0]
    saved = json.loads((out / "validation-v1.json").read_text("utf-8"))
    first = next(f for f in saved["findings"] if f["severity"] == "error")
    assert step.outcome == "local-error" and step.attempts == 0
    assert step.error == f"local validation failed: {first['rule'] or 'XSD'}"
    assert (out / "cda-v1.xml").exists() and not (out / "document-v1.pdf").exists()
    assert not (out / "request-1-create.json").exists()
    # Nothing journaled for the step: its entry opens just before the call.
    store = SqliteStore(config.journal.path)
    try:
        assert store.documents_for(config.structure.fiscal_code, "LAB", result.accession) == []
    finally:
        store.close()
