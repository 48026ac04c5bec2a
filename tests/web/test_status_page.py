"""The status page (bridge.web.site, bridge.web.status) over real sockets, on the service built by makeService.

Full-pipeline tests run the real stages and the embedded simulator in process;
the others use a handler answering at once (their subject is the page, not
the pipeline). Blocking clients run in threads: the reactor must go on.
"""

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

import bridge
from bridge.model import AckCode
from bridge.outcome import Outcome
from fse_helpers import CHECKOUT, SHARED, config_table, make_oru
from .web_kit import answer_at_once, exchange, get, start

LAB = (CHECKOUT / "examples" / "lab.hl7").read_bytes()
#: What the page must never show of the example's patient (names, fiscal code, address, phone).
PATIENT = (b"Rossi", b"Alessio", b"RMSLSO31M04Z404R", b"Via Roma", b"1234567", b"alessio.rossi")


# -- the embedded default: the real pipeline and simulator -------------------------------------


@pytest_twisted.inlineCallbacks
def test_healthz_page_and_message_json_after_a_publication(tmp_path):
    top, web = yield start(tmp_path)
    try:
        status, content_type, body = yield get(web.url + "healthz")
        assert status == 200 and content_type.startswith("application/json")
        health = json.loads(body)
        assert health["status"] == "ok" and health["version"] == bridge.__version__
        assert health["journal"]["open"] is True
        assert health["gateway"]["embedded"] is True
        assert health["gateway"]["url"].startswith("https://localhost:")
        assert health["validation"]["local"] == "OFF" and "rules install" in health["validation"]["notice"]
        assert health["validation"]["rules_dir"] == str(tmp_path / "rules")
        assert health["mllp"] == {"host": "127.0.0.1", "port": top.mllp_port, "listening": True, "tls": False}
        assert health["unfinished"] == {"total": 0, "by_state": {}}
        assert health["workers"] == {"processes": 1, "up": 1, "replaced": 0, "waiting": 0}

        code, control_id, text = yield exchange(top.mllp_port, LAB)
        assert (code, control_id) == ("AA", "LAB0001") and text.startswith("X-Cart-id ")
        x_cart_id = text.split()[1]

        status, content_type, page = yield get(web.url)
        assert status == 200 and content_type.startswith("text/html")
        assert b"LAB0001" in page and b"ORU^R01" in page and x_cart_id.encode() in page
        assert b"01386030488.LAB.999.A26-00412_1" in page
        assert b'href="messages/1"' in page and b"local validation OFF" in page
        for secret in PATIENT:
            assert secret not in page, secret

        status, _, body = yield get(web.url + "messages/1")
        assert status == 200
        message = json.loads(body)
        assert message["control_id"] == "LAB0001" and message["outcome"] == "AA"
        assert message["state"] == "done" and message["operation"] == "create"
        assert message["x_cart_id"] == x_cart_id
        assert message["document_id"].endswith("01386030488.LAB.999.A26-00412_1")
        states = [t["state"] for t in message["transitions"]]
        assert states[0] == "received" and states[-1] == "done"
        assert {"routed", "rendered", "packaged", "submitting"} <= set(states)
        [call] = message["gateway_calls"]
        assert call["operation"] == "create" and call["http_status"] == 202
        assert call["x_cart_id"] == x_cart_id and call["state"] == "answered"
        assert {(a["stage"], a["name"]) for a in message["artifacts"]} >= {
            ("render", "cda.xml"), ("package", "document.pdf"), ("submit", "submission.json")}
        assert all(isinstance(a["bytes"], int) and a["bytes"] > 0 for a in message["artifacts"])
        # No message content: no raw bytes, no ACK, no artifact content, no patient data.
        assert not {"raw", "ack", "content"} & set(message)
        for secret in PATIENT:
            assert secret not in body, secret
        assert b"MSH|" not in body and b"PID|" not in body and b"%PDF" not in body

        # The same entry by its X-Cart-id.
        status, _, body = yield get(web.url + "messages/" + x_cart_id)
        assert status == 200 and json.loads(body)["id"] == 1
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_gateway_refusal_shows_problem_type_without_its_detail(tmp_path):
    top, web = yield start(tmp_path)
    try:
        simulator = top.context.publisher.client.base_url.split("/gateway/")[0]
        # The simulator's hooks need the development client certificate (mutual TLS).
        yield deferToThread(_post_fault, simulator, tmp_path / "certs",
                            {"operation": "create", "status": 400, "problem": "syntax"})
        code, _, _ = yield exchange(top.mllp_port, LAB)
        assert code == "AE"
        _, _, body = yield get(web.url + "messages/1")
        message = json.loads(body)
        assert message["outcome"] == "AE" and message["state"] == "failed"
        problem = message["gateway_calls"][0]["problem"]
        assert problem["status"] == 400 and problem["type"] and "detail" not in problem
        assert b"scripted by the simulator" not in body
    finally:
        yield top.stopService()


def _post_fault(base: str, certs: Path, fault: dict) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "auth.pem"), str(certs / "auth.key"))
    request = urllib.request.Request(f"{base}/_sim/faults", data=json.dumps([fault]).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        assert response.status == 200


# -- the page itself (a handler answering at once) ------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_healthz_answers_503_once_the_journal_is_closed(tmp_path):
    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        status, _, _ = yield get(web.url + "healthz")
        assert status == 200
        yield top.context.journal.close()
        status, _, body = yield get(web.url + "healthz")
        health = json.loads(body)
        assert status == 503 and health["status"] == "unavailable" and health["journal"]["open"] is False
        status, _, _ = yield get(web.url)
        assert status == 200   # the page still says what it can
    finally:
        yield top.stopService()   # closing a closed journal is allowed


@pytest_twisted.inlineCallbacks
def test_healthz_reports_installed_rules_and_unfinished_messages(tmp_path):
    from bridge.cda.rules import install_rules

    install_rules(str((SHARED / "reference").resolve()), tmp_path / "rules")
    called, blocked = defer.Deferred(), defer.Deferred()

    def hold(ctx, entry, analysis):
        called.callback(entry.id)
        return blocked

    top, web = yield start(tmp_path, handler=hold,
                           gateway={"base_url": "https://gateway.example/gateway/v2/"})
    try:
        # One message held by the handler: journaled, not finished.
        pending = exchange(top.mllp_port, make_oru("HOLD1").encode())
        assert (yield called) == 1
        _, _, body = yield get(web.url + "healthz")
        health = json.loads(body)
        assert health["validation"] == {"local": "ON", "rules_dir": str(tmp_path / "rules")}
        assert health["gateway"] == {"embedded": False, "url": "https://gateway.example/gateway/v2/"}
        assert health["unfinished"] == {"total": 1, "by_state": {"received": 1}}
        blocked.callback(Outcome(code=AckCode.AA, text="done"))
        assert (yield pending)[0] == "AA"
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_page_escapes_what_senders_wrote_and_pages_on(tmp_path):
    from bridge.web import status as web_module

    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        yield exchange(top.mllp_port, make_oru("<b>X&1</b>", facility="<i>F</i>").encode())
        for n in range(web_module.PAGE_SIZE):
            yield exchange(top.mllp_port, make_oru(f"P{n:03d}").encode())
        _, _, page = yield get(web.url)
        assert b"P049" in page and b"<b>X&1</b>" not in page
        assert b'href="?before=2"' in page
        _, _, older = yield get(web.url + "?before=2")
        assert b"&lt;b&gt;X&amp;1&lt;/b&gt;" in older and b"&lt;i&gt;F&lt;/i&gt;" in older
        assert b"<i>F</i>" not in older and b"P000" not in older
        for secret in (b"ROSSI", b"MARIO", b"RSSMRA80A01H501U"):
            assert secret not in page + older
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_unknown_message_and_ambiguous_key(tmp_path):
    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        status, content_type, body = yield get(web.url + "messages/999")
        assert status == 404 and content_type.startswith("application/json")
        assert json.loads(body)["error"] == "no journal entry 999"
        # Two facilities, one control id: the key names two entries.
        yield exchange(top.mllp_port, make_oru("SAME", facility="A").encode())
        yield exchange(top.mllp_port, make_oru("SAME", facility="B").encode())
        status, _, body = yield get(web.url + "messages/SAME")
        answer = json.loads(body)
        assert status == 300 and [m["facility"] for m in answer["matches"]] == ["A", "B"]
        status, _, _ = yield get(web.url + "nothing-here")
        assert status == 404
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_web_service_stops_listening(tmp_path):
    top, web = yield start(tmp_path, handler=answer_at_once)
    port = web.port.getHost().port
    assert port != 0 and port != top.mllp_port
    yield top.stopService()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest_twisted.inlineCallbacks
def test_fiscal_codes_quoted_by_validation_messages_are_masked(tmp_path):
    from bridge.outcome import ErrItem

    # Official schematron messages may quote the patient's fiscal code (ERRORE-46).
    quoted = "schematron ERRORE-46: codice fiscale 'RSSMRA80A01H501U' cittadino ed operatore"

    def refuse(ctx, entry, analysis):
        return defer.succeed(Outcome(code=AckCode.AE, text="local validation failed: ERRORE-46",
                                     errors=(ErrItem(code="207", text=quoted),)))

    top, web = yield start(tmp_path, handler=refuse)
    try:
        code, _, _ = yield exchange(top.mllp_port, make_oru("CF1").encode())
        assert code == "AE"
        _, _, body = yield get(web.url + "messages/1")
        message = json.loads(body)
        assert message["outcome"] == "AE" and "ERRORE-46" in message["error"]
        assert "[redacted]" in message["error"] and b"RSSMRA80A01H501U" not in body
    finally:
        yield top.stopService()


def test_serve_says_where_the_status_page_is_and_it_answers(tmp_path):
    """`fse-bridge serve` as a user runs it: one log line gives the page's address."""
    import os
    import re
    import subprocess
    import sys
    import threading

    from fse_helpers import to_toml

    config = tmp_path / "bridge.toml"
    config.write_text(to_toml(config_table(tmp_path)))
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--config", str(config)], cwd=CHECKOUT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace",
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines, found = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "status page on" in line:
                found.set()
        found.set()   # the process ended

    threading.Thread(target=read, daemon=True).start()
    try:
        assert found.wait(60), "no status page line"
        match = re.search(r"status page on (http://127\.0\.0\.1:\d+/)", "".join(lines))
        assert match, "".join(lines)
        with urllib.request.urlopen(match.group(1) + "healthz", timeout=30) as response:
            health = json.loads(response.read())
        assert response.status == 200 and health["status"] == "ok"
        assert health["validation"]["local"] == "OFF" and health["gateway"]["embedded"] is True
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, "".join(lines)


@pytest_twisted.inlineCallbacks
def test_healthz_is_503_while_no_worker_process_is_up(tmp_path):
    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        workers = top.context.workers
        for worker in list(workers.workers):
            worker.up = False   # as between a worker's death and its replacement
        status, _, body = yield get(web.url + "healthz")
        health = json.loads(body)
        assert status == 503 and health["workers"]["up"] == 0 and health["workers"]["processes"] == 1
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_a_purged_message_says_so_instead_of_sizes(tmp_path):
    """Retention empties contents, never rows: /messages/<id> says "purged on DATE"."""
    import datetime

    from twisted.internet import reactor

    from bridge.journal import Received
    from bridge.journal.sqlite import SqliteJournal
    from bridge.web.messages import message_detail

    journal = SqliteJournal(tmp_path / "journal.sqlite", reactor=reactor)
    try:
        admission = yield journal.admit(Received(raw=make_oru("PG1").encode(), msh4="OSP", msh10="PG1",
                                                 message_type="ORU^R01"))
        entry_id = admission.entry.id
        yield journal.add_artifact(entry_id, "render", "cda.xml", b"<ClinicalDocument/>")
        yield journal.finish(entry_id, Outcome(code=AckCode.AA, text="done"), b"MSH|ack\r")
        status, before = yield message_detail(journal, str(entry_id))
        assert status == 200 and before["artifacts"][0]["bytes"] == 19 and "message" not in before
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
        report = yield journal.purge(artifacts_before=later, messages_before=later)
        assert (report.artifacts, report.messages) == (1, 1)
        status, after = yield message_detail(journal, str(entry_id))
    finally:
        yield journal.close()
    today = after["purged_at"][:10]   # the purge's own day
    assert status == 200 and after["message"] == f"purged on {today}"
    assert after["artifacts"][0] == {"stage": "render", "name": "cda.xml", "at": before["artifacts"][0]["at"],
                                     "purged": f"purged on {today}"}
    assert after["purged_at"].startswith(today) and after["control_id"] == "PG1"
