"""`fse-bridge journal update-metadata ID --set KEY=VALUE...` (issue 6, "Actions")."""

import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.request

import pytest
import pytest_twisted
from twisted.internet import defer

from bridge.publish import metadata
from bridge.errors import InvalidValue
from bridge.gateway.bodies import Submission
from bridge.model import DocumentType
from fse_helpers import CHECKOUT

sys.path.insert(0, str(CHECKOUT / "tests" / "service"))
from mllp_server import MllpClient, ServerProcess, msa_fields, simulator_registry as _registry

SUB = Submission(document_id="2.16.840.1.113883.2.9.2.90.4.4^01386030488.RAD.999.X_1",
                 repository_id="2.16.840.1.113883.2.9.2.90.4.5.999", document_type=DocumentType.RAD,
                 facility_type="Territorio", practice_setting="AD_PSC103", clinical_activity="ERP",
                 submission_id="2.16.840.1.113883.2.9.2.90.4.3.1", patient_id="RMSLSO31M04Z404R",
                 administrative_request=("SSN",))


def test_settings_use_the_gateway_field_names():
    sub = metadata.apply_settings(SUB, ["attiCliniciRegoleAccesso=P99", "administrativeRequest=NOSSN",
                                        "tipologiaStruttura=Ospedale"],
                                  submission_id="2.16.840.1.113883.2.9.2.90.4.3.7")
    assert sub.event_codes == ("P99",) and sub.administrative_request == ("NOSSN",)
    assert sub.facility_type == "Ospedale" and sub.submission_id.endswith(".7")
    assert sub.document_id == SUB.document_id


@pytest.mark.parametrize("setting, field", [("colour=red", "colour"), ("tipologiaStruttura=Castello",
                                                                        "tipologiaStruttura"),
                                            ("dataInizioPrestazione=2026", "dataInizioPrestazione")])
def test_bad_settings_name_the_field(setting, field):
    with pytest.raises(InvalidValue, match=field):
        metadata.apply_settings(SUB, [setting], submission_id="2.16.840.1.113883.2.9.2.90.4.3.7")


def test_update_metadata_of_a_published_document(tmp_path):
    """With the service running, the CLI asks it: the service makes and journals the call."""
    server = ServerProcess(tmp_path).start()
    try:
        with MllpClient(server.port) as client:
            ack = client.exchange((CHECKOUT / "examples" / "rad.hl7").read_bytes())
        assert msa_fields(ack)[0][0] == "AA", server.log()
        run = [sys.executable, "-m", "bridge", "journal", "update-metadata", "RAD0001",
               "--set", "attiCliniciRegoleAccesso=P99", "--config", str(server.config_path)]
        done = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ),
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "HTTP 200" in done.stdout and "X-Cart-id" in done.stdout
        assert "journaled under entry 1" in done.stdout
        [document] = [d for d in _registry(tmp_path) if ".RAD." in d["id"]]
        assert document["metadata_updates"] == 1
        show = subprocess.run([sys.executable, "-m", "bridge", "journal", "show", "RAD0001", "--config",
                               str(server.config_path)], capture_output=True, text=True)
        assert "gateway call" in show.stdout and "metadata" in show.stdout
        # The current version only: an unknown key is refused before any call.
        bad = subprocess.run(run[:-4] + ["--set", "colour=red", "--config", str(server.config_path)],
                             capture_output=True, text=True)
        assert bad.returncode == 1 and "colour" in bad.stderr and "HTTP 400" in bad.stderr
        # The gateway refuses: its answer is printed, exit 1.
        _registry(tmp_path, faults=[{"operation": "metadata", "status": 400, "problem": "syntax"}])
        refused = subprocess.run(run, capture_output=True, text=True, check=False)
        assert refused.returncode == 1 and refused.stdout.startswith("gateway metadata: HTTP 400 "), refused
        # A service that refuses is never bypassed: a wrong token is an error, not a call from here.
        (tmp_path / "operator.token").write_text("not-the-token\n")
        refused = subprocess.run(run, capture_output=True, text=True, check=False)
        assert refused.returncode == 1 and "HTTP 403" in refused.stderr, refused.stderr
        [document] = [d for d in _registry(tmp_path) if ".RAD." in d["id"]]
        assert document["metadata_updates"] == 1
    finally:
        assert server.terminate() == 0, server.log()
    # The service made the call (the CLI only asked).
    assert "operator metadata update (entry 1): gateway metadata: HTTP 200" in server.log()
    assert not (tmp_path / "web.url").exists()


def _metadata_mappings(tmp_path):
    """A copy of the shipped mappings with the metadata routing rule switched on."""
    import shutil

    folder = tmp_path / "mappings"
    shutil.copytree(CHECKOUT / "mappings", folder)
    routing = folder / "routing.toml"
    text = routing.read_text()
    text = text.replace('# metadata = [{ path = "OBR-25", values = ["M"] }]',
                        'metadata = [{ path = "OBR-25", values = ["M"] }]')
    text = text.replace("# [action.metadata_set]\n# attiCliniciRegoleAccesso", "[action.metadata_set]\n"
                        "attiCliniciRegoleAccesso")
    routing.write_text(text)
    return folder


def _as_metadata_request(raw: bytes, control_id: bytes) -> bytes:
    segments = raw.replace(b"\r\n", b"\r").rstrip(b"\r").split(b"\r")
    out = []
    for segment in segments:
        fields = segment.split(b"|")
        if fields[0] == b"MSH":
            fields[9] = control_id
        if fields[0] == b"OBR":
            fields += [b""] * (26 - len(fields))
            fields[25] = b"M"
        out.append(b"|".join(fields))
    return b"\r".join(out + [b"ZFS|P99"]) + b"\r"


def test_routing_rule_makes_a_metadata_update(tmp_path):
    from bridge.hl7.message import parse_message
    from bridge.model import Action
    from bridge.mapping.route import load_routing, route

    mappings = _metadata_mappings(tmp_path)
    raw = (CHECKOUT / "examples" / "rad.hl7").read_bytes()
    request = _as_metadata_request(raw, b"RAD-M1")
    routed = route(parse_message(request), load_routing(mappings))
    assert routed.action is Action.METADATA and routed.settings == ("attiCliniciRegoleAccesso=P99",)
    # The shipped rules have it off: the same message is just not final.
    assert route(parse_message(request), load_routing(CHECKOUT / "mappings")).action is Action.IGNORE

    (tmp_path / "state").mkdir()
    server = ServerProcess(tmp_path / "state", mapping={"dir": str(mappings)}).start()
    try:
        with MllpClient(server.port) as client:
            before = client.exchange(request)
            assert msa_fields(before)[0][:3] == ["AA", "RAD-M1", "not published: no metadata to update: "
                                                 "accession not published"], before
            assert msa_fields(client.exchange(raw))[0][0] == "AA"
            answer = client.exchange(_as_metadata_request(raw, b"RAD-M2"))
        msa = msa_fields(answer)[0]
        assert msa[0] == "AA" and msa[2].startswith("X-Cart-id "), answer
        assert b"ERR" not in answer  # v2.4: the document id stays in the journal
        [document] = [d for d in _registry(tmp_path / "state") if ".RAD." in d["id"]]
        assert document["metadata_updates"] == 1
    finally:
        assert server.terminate() == 0, server.log()


# -- no service running: the CLI calls the gateway itself --------------------------------------------


@pytest_twisted.inlineCallbacks
def test_without_a_running_service_the_cli_calls_the_gateway_itself(tmp_path):
    """A gateway of its own (a simulator outside the service); the service publishes, stops, and
    the CLI then updates in-process: with no web.url, and with the stale files a kill leaves."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    from bridge import certs
    from bridge import config as config_module
    from bridge.publish.context import embedded_simulator_config
    from bridge.service.tap import makeService
    from bridge.simulator.server import start_simulator
    from fse_helpers import config_table, to_toml

    embedded = config_module.from_dict(config_table(tmp_path), base_dir=tmp_path)
    pki = certs.ensure_development_certificates(embedded)
    simulator = start_simulator(embedded_simulator_config(embedded, pki), reactor, rules=False)
    try:
        table = config_table(tmp_path, gateway={"base_url": simulator.url})
        config_path = tmp_path / "bridge.toml"
        config_path.write_text(to_toml(table))
        top = makeService(config_module.from_dict(table, base_dir=tmp_path), reactor)
        top.startService()
        yield top.resumed
        try:
            with MllpClient(top.mllp_port) as client:
                ack = yield deferToThread(client.exchange, (CHECKOUT / "examples" / "lab.hl7").read_bytes())
            assert msa_fields(ack)[0][0] == "AA"
        finally:
            yield top.stopService()
        assert not (tmp_path / "web.url").exists() and not (tmp_path / "operator.token").exists()

        run = [sys.executable, "-m", "bridge", "journal", "update-metadata", "LAB0001",
               "--set", "attiCliniciRegoleAccesso=P99", "--config", str(config_path)]
        done = yield deferToThread(subprocess.run, run, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "gateway metadata: HTTP 200 X-Cart-id" in done.stdout and "journaled under entry 1" in done.stdout
        assert simulator.registry.all()[0]["metadata_updates"] == 1

        # A killed service leaves its files: nobody listens at the URL, so no service runs.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        (tmp_path / "web.url").write_text(f"http://127.0.0.1:{closed}/\n")
        (tmp_path / "operator.token").write_text("left-behind\n")
        done = yield deferToThread(subprocess.run, run, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert simulator.registry.all()[0]["metadata_updates"] == 2

        from bridge.journal.sqlite import SqliteStore
        store = SqliteStore(tmp_path / "journal.sqlite")
        try:
            calls = [(c.operation, c.http_status) for c in store.gateway_calls(1)]
            stages = [(a.stage, a.name) for a in store.artifacts(1)]
        finally:
            store.close()
        assert calls == [("create", 202), ("metadata", 200), ("metadata", 200)]
        assert stages.count(("metadata", "submission.json")) == 2
    finally:
        yield defer.maybeDeferred(simulator.stop)


def test_each_update_starts_from_the_last_one_the_gateway_took(tmp_path):
    """P99 set by a message stays when an operator later changes another field; a change the
    gateway refused is not carried into the next update."""
    mappings = _metadata_mappings(tmp_path)
    raw = (CHECKOUT / "examples" / "rad.hl7").read_bytes()
    (tmp_path / "state").mkdir()
    state = tmp_path / "state"
    server = ServerProcess(state, mapping={"dir": str(mappings)}).start()

    def update(*settings):
        run = [sys.executable, "-m", "bridge", "journal", "update-metadata", "RAD0001", "--config",
               str(server.config_path)]
        for setting in settings:
            run += ["--set", setting]
        return subprocess.run(run, capture_output=True, text=True, check=False)

    try:
        with MllpClient(server.port) as client:
            assert msa_fields(client.exchange(raw))[0][0] == "AA", server.log()
            assert msa_fields(client.exchange(_as_metadata_request(raw, b"RAD-M9")))[0][0] == "AA", server.log()
        _registry(state, faults=[{"operation": "metadata", "status": 400, "problem": "syntax"}])
        refused = update("tipoAttivitaClinica=PHR")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        taken = update("conservazioneANorma=conservato")
        assert taken.returncode == 0, taken.stdout + taken.stderr
    finally:
        assert server.terminate() == 0, server.log()

    from bridge.journal.sqlite import SqliteStore
    store = SqliteStore(state / "journal.sqlite")
    try:
        applied = [json.loads(a.content) for a in store.artifacts(1)
                   if (a.stage, a.name) == ("metadata", "submission.json")]
        requests = [a for a in store.artifacts(1) if a.name == "metadata-request.json"]
    finally:
        store.close()
    # The message's update and the operator's second one were taken; the refused one was sent only.
    assert len(applied) == 2 and len(requests) == 2
    first, last = applied
    assert first["event_codes"] == ["P99"]
    assert last["event_codes"] == ["P99"] and last["conservation"] == "conservato"
    assert first["clinical_activity"] != "PHR" and last["clinical_activity"] == first["clinical_activity"]


def test_a_correction_of_a_hidden_report_stays_hidden(tmp_path):
    """P99 (the patient asked to hide the report) is carried into the replacement a correction makes."""
    mappings = _metadata_mappings(tmp_path)
    lab = (CHECKOUT / "examples" / "lab.hl7").read_bytes()
    correction = (CHECKOUT / "examples" / "lab-correction.hl7").read_bytes()
    (tmp_path / "state").mkdir()
    state = tmp_path / "state"
    server = ServerProcess(state, mapping={"dir": str(mappings)}).start()
    try:
        with MllpClient(server.port) as client:
            assert msa_fields(client.exchange(lab))[0][0] == "AA", server.log()
            assert msa_fields(client.exchange(_as_metadata_request(lab, b"LAB-M1")))[0][0] == "AA", server.log()
            answer = client.exchange(correction)
            assert msa_fields(answer)[0][0] == "AA", server.log()
        documents = [d for d in _registry(state) if ".LAB." in d["id"]]
    finally:
        assert server.terminate() == 0, server.log()
    assert sorted(d["version"] for d in documents) == [1, 2]

    from bridge.journal.sqlite import SqliteStore
    store = SqliteStore(state / "journal.sqlite")
    try:
        replacing = store.find(correction.split(b"|")[9].decode())[-1]
        [sent] = [json.loads(a.content) for a in store.artifacts(replacing.id) if a.name == "submission.json"]
    finally:
        store.close()
    assert replacing.operation == "replace" and sent["event_codes"] == ["P99"]
