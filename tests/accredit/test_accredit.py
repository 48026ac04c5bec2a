"""`fse-bridge accredit` against the real gateway simulator (mutual TLS, contract checks)."""

from __future__ import annotations

import asyncio
import io
import json
import threading

import pytest
import pytest_twisted
from asn1crypto import x509 as asn1_x509
from twisted.internet import defer, threads

from bridge import certs, cli
from bridge.accredit import message as accredit_message, report as accredit_report, run as accredit
from bridge.errors import ConfigError
from bridge.journal.sqlite import SqliteStore
from bridge.simulator.server import Fault

from .conftest import config_table, write_toml


def aio(coro) -> defer.Deferred:
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


def off_loop(fn):
    """pyHanko's validation runs its own asyncio loop: on a fresh thread."""
    box = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join()
    return box[0]


def signature_status(pdf: bytes, pki):
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    ca = certs.load_credential(pki.ca_cert, pki.ca_key)
    trust = ValidationContext(trust_roots=[asn1_x509.Certificate.load(ca.der)])
    embedded = PdfFileReader(io.BytesIO(pdf)).embedded_signatures[0]
    return off_loop(lambda: asyncio.run(async_validate_pdf_signature(embedded, trust)))


@pytest_twisted.ensureDeferred
async def test_four_steps_ok_with_four_x_cart_ids_and_the_document_deleted(make_config, rules_dir, pki,
                                                                            tmp_path):
    from twisted.internet import reactor

    from bridge.simulator import start_simulator

    config = make_config(rules_dir=rules_dir)
    handle = start_simulator(config, reactor, rules=None)   # the simulator validates with the rules too
    try:
        out = tmp_path / "report"
        result = await aio(accredit.run_accreditation(config, accredit.Options(
            base_url=handle.url, out_dir=out, fiscal_code="MNTMRA03M71C615V")))
        registry = handle.registry.all()
    finally:
        await handle.stop()

    assert result.ok, [s.as_dict() for s in result.steps]
    assert result.local_validation
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] is True
    assert [s["operation"] for s in report["steps"]] == ["create", "replace", "metadata", "delete"]
    ids = [s["x_cart_id"] for s in report["steps"]]
    assert all(ids) and len(set(ids)) == 4
    assert [s["http_status"] for s in report["steps"]][:2] == [202, 202]
    assert report["structure"]["fiscal_code"] == "01386030488"
    assert report["application"] == {"id": "fse-bridge", "vendor": "PIPOHOUSE", "version": "1.0"}
    assert report["operator"]["fiscal_code"] == "MNZLSN99E05F205J"
    assert report["test_fiscal_code"] == "MNTMRA03M71C615V"
    assert all(s["trace_id"] and s["workflow_instance_id"] and s["started_at"] and s["ended_at"]
               for s in report["steps"])
    v1, v2 = report["steps"][0]["document_id"], report["steps"][1]["document_id"]
    assert v1.endswith("_1") and v2.endswith("_2") and report["steps"][1]["path_id"] == v1
    assert report["steps"][2]["document_id"] == report["steps"][3]["document_id"] == v2

    markdown = (out / "report.md").read_text()
    assert "fseprivati@regione.toscana.it" in markdown and all(x in markdown for x in ids)
    assert "all four steps OK" in markdown

    # The simulator's registry: version 1 replaced by version 2, version 2 deleted.
    by_id = {row["id"]: row for row in registry}
    assert by_id[v1]["status"] == "replaced" and by_id[v1]["replaced_by"] == v2
    assert by_id[v2]["status"] == "deleted" and by_id[v2]["version"] == 2
    assert by_id[v2]["metadata_updates"] == 1

    # The artifacts: both CDAs, both PDFs signed (PAdES that pyHanko validates), the requests.
    cda2 = (out / "cda-v2.xml").read_text()
    v1_extension = v1.split("^")[1]
    assert '<versionNumber value="2"/>' in cda2 and '<relatedDocument typeCode="RPLC">' in cda2
    assert cda2.count(f'<setId root="2.16.840.1.113883.2.9.2.90.4.4" extension="{v1_extension}"/>') == 2
    assert 'value="5.4"' in cda2 and 'value="5.4"' not in (out / "cda-v1.xml").read_text()   # corrected
    for version in (1, 2):
        status = signature_status((out / f"document-v{version}.pdf").read_bytes(), pki)
        assert status.intact and status.valid
    for n, op in enumerate(accredit.STEPS, start=1):
        text = (out / f"request-{n}-{op}.json").read_text()
        assert "PRIVATE KEY" not in text and "Bearer" not in text
    create = json.loads((out / "request-1-create.json").read_text())
    assert create["requestBody"]["identificativoDoc"] == v1 and create["method"] == "POST"

    # The journal: `journal show <X-Cart-id>` finds each step's entry and its call.
    store = SqliteStore(config.journal.path)
    try:
        for step, x_cart_id in zip(report["steps"], ids):
            (entry,) = store.find(x_cart_id)
            assert entry.peer == "accredit" and entry.outcome == "AA" and entry.operation == step["operation"]
            assert [c.x_cart_id for c in store.gateway_calls(entry.id)] == [x_cart_id]
        assert store.unfinished() == []
        states = {d.document_id: d.state for d in store.documents_for("01386030488", "LAB", report["accession"])}
        assert states == {v1: "replaced", v2: "deleted"}
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_metadata_failure_stops_at_step_3_with_the_gateway_error(simulator, pki, tmp_path, capsys):
    """The CLI against the embedded gateway of a running service (its URL in state_dir/gateway.url),
    no rules installed, a fault scripted at the metadata update."""
    simulator.simulator.add_faults([Fault(operation="metadata", status=400, problem="mandatory-element")])
    config_file = write_toml(tmp_path / "bridge.toml", config_table(tmp_path, pki))
    (tmp_path / "var").mkdir(exist_ok=True)
    (tmp_path / "var" / "gateway.url").write_text(simulator.url + "\n")
    out = tmp_path / "out"
    code = await threads.deferToThread(cli.main, ["accredit", "--config", str(config_file), "--out", str(out)])
    assert code == 1
    printed = capsys.readouterr().out.splitlines()
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] is False
    assert report["gateway_url"] == simulator.url
    assert report["local_validation"].startswith("OFF")
    assert printed[0].startswith("step 1 create") and report["steps"][0]["x_cart_id"] in printed[0]
    assert printed[2].startswith("step 3 metadata NOT OK HTTP 400")
    assert any("/msg/mandatory-element" in line for line in printed)
    assert [s["ok"] for s in report["steps"]] == [True, True, False]   # delete never ran
    step3 = report["steps"][2]
    assert step3["operation"] == "metadata" and step3["http_status"] == 400
    assert step3["outcome"] == "refused" and step3["x_cart_id"]
    assert step3["error"]["type"].endswith("/msg/mandatory-element")
    markdown = (out / "report.md").read_text()
    assert "NOT OK at step 3 (metadata)" in markdown and "/msg/mandatory-element" in markdown
    # The document stays published at the gateway (no delete was sent).
    live = [r["id"] for r in simulator.registry.all() if r["status"] == "current"]
    assert live == [report["steps"][1]["document_id"]]
    # `fse-bridge journal show <X-Cart-id>` finds the failed step's entry and its call.
    assert cli.main(["journal", "show", step3["x_cart_id"], "--config", str(config_file)]) == 0
    shown = capsys.readouterr().out
    assert "peer: accredit" in shown and "operation: metadata" in shown and "HTTP 400" in shown


@pytest.mark.parametrize("cf", ["RSSMRA70A01H501S", "rmslso31m04z404x", ""])
def test_a_fiscal_code_outside_the_stage_test_list_is_refused(cf):
    if cf == "":
        assert accredit.check_fiscal_code(cf) == "RMSLSO31M04Z404R"   # empty: the default
        return
    with pytest.raises(ConfigError, match="stage test fiscal codes"):
        accredit.check_fiscal_code(cf)


def test_the_cli_refuses_a_real_fiscal_code_with_exit_2(tmp_path, pki, capsys):
    config_file = write_toml(tmp_path / "bridge.toml",
                             config_table(tmp_path, pki, base_url="https://fse20gwstage.regione.toscana.it/gateway/v2/"))
    code = cli.main(["accredit", "--config", str(config_file), "--fiscal-code", "RSSMRA70A01H501S"])
    assert code == 2
    assert "stage test fiscal codes" in capsys.readouterr().err
    assert not (tmp_path / "var" / "accreditation").exists()


@pytest.mark.parametrize("url", ["https://fse20gw.regione.toscana.it/gateway/v2/",
                                 "https://FSE20GW.regione.toscana.it:443/gateway/v2",
                                 "https://modipa.fse.salute.gov.it/govway/rest/in/FSE/gateway/v1"])
def test_a_production_gateway_is_refused_without_production(tmp_path, pki, capsys, url):
    config_file = write_toml(tmp_path / "bridge.toml", config_table(tmp_path, pki, base_url=url))
    code = cli.main(["accredit", "--config", str(config_file)])
    assert code == 2
    assert "production" in capsys.readouterr().err
    assert not (tmp_path / "var").exists() or not (tmp_path / "var" / "accreditation").exists()


def test_an_unknown_metadata_field_is_refused_before_anything_is_sent(make_config):
    options = accredit.Options(base_url="https://fse20gwstage.regione.toscana.it/gateway/v2/",
                               metadata_settings=("colore=rosso",))
    with pytest.raises(ConfigError, match="colore"):
        accredit.check_options(make_config(), options)


def test_stage_hosts_pass_and_production_passes_only_when_asked():
    accredit.check_gateway("https://fse20gwstage.regione.toscana.it/gateway/v2/", production=False)
    accredit.check_gateway("https://fse20gw.regione.toscana.it/gateway/v2/", production=True)
    with pytest.raises(ConfigError):
        accredit.check_gateway("https://fse20gw.regione.toscana.it/gateway/v2/", production=False)


def test_the_test_message_routes_and_maps_for_every_supported_type(make_config):
    from bridge.mapping.analysis import analyse
    from bridge.model import Action
    from bridge.service.stages import Stages
    import datetime as dt

    stages = Stages(make_config())
    when = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.timezone.utc)
    for kind in accredit.SUPPORTED_TYPES:
        raw = accredit_message.test_message(doc_type=kind, facility="LABPRIV", patient="RMSLSO31M04Z404R",
                                    accession="ACCR-1", control_id="C1", status="F", when=when)
        result = analyse(stages, raw)
        assert result.routed().action is Action.PUBLISH and result.routed().doc_type.name == kind
        assert result.mapped_report().patient.person_id.startswith("RMSLSO31M04Z404R")
        cancel = accredit_message.test_message(doc_type=kind, facility="LABPRIV", patient="RMSLSO31M04Z404R",
                                       accession="ACCR-1", control_id="C2", status="X", when=when)
        assert analyse(stages, cancel).routed().action is Action.DELETE


def test_the_report_names_the_production_delete_path_ambiguity_and_gateway_warnings(tmp_path):
    result = accredit.Accreditation(
        out_dir=tmp_path, started_at="2026-11-26T09:00:00.000Z",
        structure={"fiscal_code": "01386030488", "name": "Lab", "repository": "999",
                   "repository_id": "2.16.840.1.113883.2.9.2.90.4.5.999", "locality": "x"},
        application={"id": "a", "vendor": "v", "version": "1"},
        operator={"fiscal_code": "MNZLSN99E05F205J", "role": "AAS", "certificate_cn": "S1#090#x"},
        gateway_url="https://fse20gw.regione.toscana.it/gateway/v2/", fiscal_code="RMSLSO31M04Z404R",
        doc_type="LAB", accession="ACCR-1", local_validation=False,
        paths={"create": "documents/validate-and-create", "delete": "documents/{id}"}, production=True,
        steps=[accredit.Step(number=1, operation="create", outcome="published", http_status=202, x_cart_id="c1",
                             warning="Attenzione, transazione presa in carico. Nuovo tentativo in corso")])
    text = accredit_report.report_markdown(result)
    assert "no `documents/`" in text and "delete path `documents/{id}`" in text
    assert "warning from the gateway: Attenzione, transazione presa in carico" in text
    assert "OFF: no rules installed" in text
    assert "Not drafted" in text   # one step of four: no email to the Region


@pytest_twisted.ensureDeferred
async def test_every_supported_type_passes_local_and_gateway_validation(make_config, rules_dir, pki, tmp_path,
                                                                       capsys):
    """RAD, RSA, RAP, LDO through the command (exit 0), with the rules installed."""
    from twisted.internet import reactor

    from bridge.simulator import start_simulator

    handle = start_simulator(make_config(rules_dir=rules_dir), reactor, rules=None)
    config_file = write_toml(tmp_path / "bridge.toml",
                             config_table(tmp_path, pki, base_url=handle.url, rules_dir=rules_dir))
    try:
        for kind in ("RAD", "RSA", "RAP", "LDO"):
            code = await threads.deferToThread(cli.main, [
                "accredit", "--config", str(config_file), "--type", kind.lower(),
                "--fiscal-code", "brglrz80d58h501q", "--out", str(tmp_path / kind)])
            report = json.loads((tmp_path / kind / "report.json").read_text())
            assert code == 0, (kind, report["steps"])
            assert report["ok"] and report["local_validation"] == "ON"
            assert f".{kind}.999.ACCR-" in report["steps"][0]["document_id"]
            printed = capsys.readouterr().out.splitlines()
            assert [line.split()[2] for line in printed[:4]] == ["create", "replace", "metadata", "delete"]
            assert all(step["x_cart_id"] in printed[n] for n, step in enumerate(report["steps"]))
    finally:
        await handle.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_the_mappings_refuse_stops_at_step_1_before_any_call(make_config, tmp_path):
    config = make_config()
    result = await aio(accredit.run_accreditation(config, accredit.Options(
        base_url="https://127.0.0.1:9/gateway/v2/", out_dir=tmp_path / "out", facility="NOWHERE")))
    assert not result.ok and len(result.steps) == 1
    step = result.steps[0]
    assert step.outcome == "local-error" and "facilities table" in step.error and step.attempts == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["steps"][0]["error"] == step.error
    assert not (tmp_path / "out" / "request-1-create.json").exists()
