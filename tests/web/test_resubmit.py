"""``journal resubmit`` through the running service: ``POST /operator/resubmit`` (bridge.web.operator) and
the CLI asking it, on the service built by makeService, over real sockets.

The full-pipeline tests run the real stages and the embedded simulator in process (the test
scripts the simulator's faults); blocking clients, the CLI among them, run in threads.
"""

import datetime
import json

import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from bridge import cli
from bridge.journal.sqlite import SqliteStore
from bridge.model import AckCode
from bridge.outcome import Outcome
from bridge.simulator.server import Fault
from fse_helpers import CHECKOUT, config_table, make_oru, to_toml
from .test_operator import simulator_of, token_of, until
from .web_kit import answer_at_once, exchange, operator_post, start

LAB = (CHECKOUT / "examples" / "lab.hl7").read_bytes()


def resubmit(url: str, body, **kwargs) -> defer.Deferred:
    """``(status, JSON answer)`` of a request to ``/operator/resubmit``, in a thread."""
    return operator_post(url, "operator/resubmit", body, **kwargs)


def cli_in_thread(tmp_path, capsys, *argv) -> defer.Deferred:
    """``(exit code, stdout, stderr)`` of ``fse-bridge journal ...`` against the service's state_dir,
    in a thread (it waits for the service, whose reactor must go on)."""
    config = tmp_path / "bridge.toml"
    config.write_text(to_toml(config_table(tmp_path)))

    def done(code):
        out = capsys.readouterr()
        return code, out.out, out.err
    return deferToThread(cli.main, ["journal", *argv, "--config", str(config)]).addCallback(done)


@pytest_twisted.inlineCallbacks
def test_a_message_the_gateway_refused_is_resubmitted_and_published(tmp_path):
    top, web = yield start(tmp_path)
    try:
        sim = simulator_of(top)
        sim.simulator.add_faults([Fault(operation="create", status=400, problem="syntax")])
        code, _, _ = yield exchange(top.mllp_port, LAB)
        assert code == "AE"
        assert sim.registry.all() == []
        token = token_of(tmp_path)

        status, answer = yield resubmit(web.url, {"target": "LAB0001"}, token=token)
        assert status == 200, answer
        assert (answer["entry"], answer["resend_of"], answer["outcome"], answer["state"]) == (2, 1, "AA", "done")
        assert answer["ack_code"] == "AA" and answer["ack_text"]
        assert answer["operation"] == "create" and answer["x_cart_id"]
        [document] = sim.registry.all()
        assert answer["document_id"] == document["id"]
        assert answer["summary"].startswith("entry 2 (resubmitted from entry 1): AA ")
        assert f"; document {document['id']} (create); X-Cart-id {answer['x_cart_id']}" in answer["summary"]

        # The journal links the new entry to the old, whose own outcome stays.
        old = yield top.context.journal.get(1)
        new = yield top.context.journal.get(2)
        assert (old.outcome, new.outcome, new.resend_of, new.raw) == ("AE", "AA", 1, old.raw)
        assert new.peer == "resubmit"

        # The control id now names both: the operator must say which.
        status, answer = yield resubmit(web.url, {"target": "LAB0001"}, token=token)
        assert status == 409 and answer["matches"] == [1, 2]
        assert answer["error"] == "'LAB0001' matches entries 1, 2: give the id"
        status, answer = yield resubmit(web.url, {"target": "NOSUCH"}, token=token)
        assert status == 404 and answer["error"] == "no journal entry matches 'NOSUCH'"
        assert len(sim.registry.all()) == 1
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_the_cli_asks_the_running_service_and_exits_with_the_outcome(tmp_path, capsys):
    top, web = yield start(tmp_path)
    try:
        sim = simulator_of(top)
        sim.simulator.add_faults([Fault(operation="create", status=400, problem="syntax", times=2)])
        assert (yield exchange(top.mllp_port, LAB))[0] == "AE"

        # Refused again: printed, exit 1.
        code, out, err = yield cli_in_thread(tmp_path, capsys, "resubmit", "1")
        assert code == 1, err
        assert out.startswith("entry 2 (resubmitted from entry 1): AE ")
        # Taken this time: exit 0, the service made the call (the CLI only asked).
        code, out, err = yield cli_in_thread(tmp_path, capsys, "resubmit", "2", "--timeout", "60")
        assert code == 0, err
        [document] = sim.registry.all()
        assert out.startswith("entry 3 (resubmitted from entry 2): AA ")
        assert f"document {document['id']} (create); X-Cart-id " in out
        # The service's refusal is an error, never a resubmit from the CLI behind its back.
        code, out, err = yield cli_in_thread(tmp_path, capsys, "resubmit", "LAB0001")
        assert code == 1 and "refused the resubmit (HTTP 409)" in err and "matches entries 1, 2, 3" in err
        (tmp_path / "operator.token").write_text("not-the-token\n")
        code, out, err = yield cli_in_thread(tmp_path, capsys, "resubmit", "1")
        assert code == 1 and "HTTP 403" in err
        entries = yield top.context.journal.entries()
        assert [e.id for e in entries] == [3, 2, 1]
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_requests_without_the_token_are_403_and_bad_input_400(tmp_path):
    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        assert (yield exchange(top.mllp_port, make_oru("R1").encode()))[0] == "AA"
        token = token_of(tmp_path)
        for wrong in (None, "", "not-the-token", token + "x"):
            status, answer = yield resubmit(web.url, {"target": "1"}, token=wrong)
            assert status == 403 and "Bearer" in answer["error"], wrong
        status, answer = yield resubmit(web.url, None, token=token, method="GET")
        assert status == 405 and "POST" in answer["error"]
        for body, field in [({"target": " "}, "target"), ({}, "target"), ({"target": True}, "target"),
                            ({"target": "1", "settings": ["a=b"]}, "settings"), (["1"], "body")]:
            status, answer = yield resubmit(web.url, body, token=token)
            assert (status, answer.get("field")) == (400, field), (body, answer)
        status, answer = yield resubmit(web.url, b'{"target": "1"}', token=token, content_type="text/plain")
        assert (status, answer["field"]) == (400, "body")
        # Nothing was journaled by the refusals.
        entries = yield top.context.journal.entries()
        assert [e.id for e in entries] == [1]
        # The same service takes the right request (this handler answers AA at once).
        status, answer = yield resubmit(web.url, {"target": 1}, token=token)
        assert status == 200 and (answer["entry"], answer["outcome"], answer["ack_text"]) == (2, "AA", "received")
        assert answer["document_id"] is None and answer["summary"] == "entry 2 (resubmitted from entry 1): AA received"
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_a_purged_message_is_409(tmp_path):
    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        assert (yield exchange(top.mllp_port, make_oru("P1").encode()))[0] == "AA"
        tomorrow = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
        report = yield top.context.journal.purge(artifacts_before=None, messages_before=tomorrow)
        assert report.messages == 1
        status, answer = yield resubmit(web.url, {"target": "P1"}, token=token_of(tmp_path))
        today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        assert status == 409, answer
        assert answer["error"] == (f"entry 1: the message was purged on {today}; ask the sender to send it again")
        assert [e.id for e in (yield top.context.journal.entries())] == [1]
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_an_entry_in_processing_is_409_and_a_stop_waits_for_a_resubmit(tmp_path):
    held: dict[int, defer.Deferred] = {}

    def hold(ctx, entry, analysis):
        held[entry.id] = defer.Deferred()
        return held[entry.id]

    top, web = yield start(tmp_path, handler=hold)
    token = token_of(tmp_path)
    stopped = None
    try:
        first = exchange(top.mllp_port, make_oru("H1").encode())
        yield until(lambda: 1 in held, "the message in processing")
        status, answer = yield resubmit(web.url, {"target": "1"}, token=token)
        assert status == 409 and answer["error"] == ("entry 1 is not finished yet (state received): "
                                                     "the service is processing it")
        held[1].callback(Outcome(code=AckCode.AE, text="refused for the test"))
        assert (yield first)[0] == "AE"

        pending = resubmit(web.url, {"target": "1"}, token=token)
        yield until(lambda: 2 in held, "the resubmitted entry in processing")
        stopped = top.stopService()
        yield deferToThread(lambda: None)   # a round trip through the thread pool: the stop goes on
        assert not stopped.called and not pending.called
        held[2].callback(Outcome(code=AckCode.AA, text="taken"))
        status, answer = yield pending
        assert status == 200 and (answer["entry"], answer["outcome"], answer["ack_text"]) == (2, "AA", "taken")
        yield stopped
    finally:
        if stopped is None:
            for d in held.values():
                if not d.called:
                    d.callback(Outcome(code=AckCode.AA))
            yield top.stopService()
    # The outcome was journaled before the journal closed.
    store = SqliteStore(tmp_path / "journal.sqlite")
    try:
        assert (store.get(2).outcome, store.get(2).resend_of) == ("AA", 1)
    finally:
        store.close()


@pytest_twisted.inlineCallbacks
def test_a_copy_with_other_bytes_under_the_control_id_is_refused_as_at_a_restart(tmp_path):
    """resume() refuses such a copy (AE 205); the service's resubmit does the same, not to the first."""
    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        assert (yield exchange(top.mllp_port, make_oru("C1").encode()))[0] == "AA"
        other = make_oru("C1", name="BIANCHI^LUCA").encode()
        assert (yield exchange(top.mllp_port, other))[0] == "AE"
        status, answer = yield resubmit(web.url, {"target": "2"}, token=token_of(tmp_path))
        assert status == 200 and (answer["entry"], answer["outcome"], answer["ack_code"]) == (3, "AE", "AE")
        assert answer["ack_text"] == "control id already received with different content"
        assert "BIANCHI" not in json.dumps(answer)
        # The first copy came before the other bytes: processed again as it was.
        status, answer = yield resubmit(web.url, {"target": "1"}, token=token_of(tmp_path))
        assert status == 200 and (answer["entry"], answer["outcome"]) == (4, "AA")
    finally:
        yield top.stopService()
