"""The status page's operator endpoint, ``POST /operator/metadata`` (bridge.web.operator), on the service
built by makeService, over real sockets.

The full-pipeline tests run the real stages and the embedded simulator in process, so the
test can script the simulator's faults and look at the accession's lock; blocking clients
run in threads (the reactor must go on).
"""

import json
import stat
import time
import urllib.error
import urllib.request

import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.threads import deferToThread

from bridge.publish.context import PublishingService
from bridge.simulator.server import Fault
from bridge.web.operator import TOKEN_FILE, URL_FILE
from fse_helpers import CHECKOUT
from .web_kit import answer_at_once, exchange, operator_post, start

LAB = (CHECKOUT / "examples" / "lab.hl7").read_bytes()
CORRECTION = (CHECKOUT / "examples" / "lab-correction.hl7").read_bytes()
P99 = ["attiCliniciRegoleAccesso=P99"]


def post(url: str, body, **kwargs) -> defer.Deferred:
    """``(status, JSON answer)`` of a request to ``/operator/metadata``, in a thread."""
    return operator_post(url, "operator/metadata", body, **kwargs)


@defer.inlineCallbacks
def until(condition, what: str, timeout: float = 30.0):
    """Let the reactor run until *condition()* holds (a bounded poll of a real condition)."""
    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        yield task.deferLater(reactor, 0.01, lambda: None)


def token_of(tmp_path) -> str:
    return (tmp_path / TOKEN_FILE).read_text().strip()


def simulator_of(top):
    return next(child for child in top if isinstance(child, PublishingService)).simulator


def operations(sim) -> list[str]:
    return [r["operation"] for r in sim.simulator.seen]


# -- the files and the token ------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_token_and_url_written_private_at_start_replaced_at_restart_removed_at_stop(tmp_path):
    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        token_file, url_file = tmp_path / TOKEN_FILE, tmp_path / URL_FILE
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert url_file.read_text().strip() == web.url
        first = token_of(tmp_path)
        assert len(first) >= 40
    finally:
        yield top.stopService()
    assert not token_file.exists() and not url_file.exists()

    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        assert token_of(tmp_path) != first
        # The old token is worth nothing once the service restarted.
        status, _ = yield post(web.url, {"target": "1", "settings": P99}, token=first)
        assert status == 403
    finally:
        yield top.stopService()
    assert not token_file.exists() and not url_file.exists()


@pytest_twisted.inlineCallbacks
def test_requests_without_the_token_are_403(tmp_path):
    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        body = {"target": "1", "settings": P99}
        for token in (None, "", "not-the-token", token_of(tmp_path) + "x"):
            status, answer = yield post(web.url, body, token=token)
            assert status == 403 and "Bearer" in answer["error"], token
        # The right token under another scheme is still refused.
        def basic():
            request = urllib.request.Request(web.url + "operator/metadata", data=json.dumps(body).encode(),
                                             headers={"Authorization": f"Basic {token_of(tmp_path)}",
                                                      "Content-Type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=30)
            except urllib.error.HTTPError as error:
                return error.code
        assert (yield deferToThread(basic)) == 403
        # Only POST, and only once the token is right.
        status, answer = yield post(web.url, None, token=token_of(tmp_path), method="GET")
        assert status == 405 and "POST" in answer["error"]
        status, _ = yield post(web.url, None, token=None, method="GET")
        assert status == 403
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_bad_input_is_400_naming_the_field(tmp_path):
    top, web = yield start(tmp_path, handler=answer_at_once)
    try:
        token = token_of(tmp_path)
        cases = [
            (b'{"target": "1", "settings": ["a=b"]}', "text/plain", "body"),
            (b"target=1", "application/json", "body"),
            (b"\xff\xfe", "application/json", "body"),
            (b'["1", ["a=b"]]', "application/json", "body"),
            (json.dumps({"settings": P99}).encode(), "application/json", "target"),
            (json.dumps({"target": "  ", "settings": P99}).encode(), "application/json", "target"),
            (json.dumps({"target": ["1"], "settings": P99}).encode(), "application/json", "target"),
            (json.dumps({"target": "1"}).encode(), "application/json", "settings"),
            (json.dumps({"target": "1", "settings": "a=b"}).encode(), "application/json", "settings"),
            (json.dumps({"target": "1", "settings": []}).encode(), "application/json", "settings"),
            (json.dumps({"target": "1", "settings": [1]}).encode(), "application/json", "settings"),
            (json.dumps({"target": "1", "settings": P99, "force": True}).encode(), "application/json", "force"),
            (b"{" + b" " * 70000 + b"}", "application/json", "body"),
        ]
        for body, content_type, field in cases:
            status, answer = yield post(web.url, body, token=token, content_type=content_type)
            assert (status, answer.get("field")) == (400, field), (body[:60], answer)
            assert answer["error"].startswith(field), answer
        # Well formed, but this service runs no document pipeline.
        status, answer = yield post(web.url, {"target": "1", "settings": P99}, token=token)
        assert status == 503 and "publishes no documents" in answer["error"]
    finally:
        yield top.stopService()


# -- through the real pipeline and the embedded simulator ---------------------------------------------


@pytest_twisted.inlineCallbacks
def test_update_is_made_by_the_service_journaled_and_shown_on_the_page(tmp_path):
    top, web = yield start(tmp_path)
    try:
        sim = simulator_of(top)
        code, _, _ = yield exchange(top.mllp_port, LAB)
        assert code == "AA"
        token = token_of(tmp_path)
        status, answer = yield post(web.url, {"target": "LAB0001", "settings": P99}, token=token)
        assert status == 200, answer
        assert answer["operation"] == "metadata" and answer["ok"] is True and answer["entry"] == 1
        assert answer["document_id"].endswith("01386030488.LAB.999.A26-00412_1")
        assert answer["http_status"] == 200 and answer["x_cart_id"] and answer["error"] is None
        assert answer["summary"] == f"gateway metadata: HTTP 200 X-Cart-id {answer['x_cart_id']}"
        [document] = sim.registry.all()
        assert document["metadata_updates"] == 1

        # On the status page, under the message that published the document.
        def message():
            with urllib.request.urlopen(web.url + "messages/1", timeout=30) as response:
                return json.loads(response.read())
        shown = yield deferToThread(message)
        create, update = shown["gateway_calls"]
        assert create["operation"] == "create"
        assert (update["operation"], update["http_status"], update["x_cart_id"], update["state"]) == (
            "metadata", 200, answer["x_cart_id"], "answered")
        assert {"stage": "metadata", "name": "submission.json"} in [
            {k: a[k] for k in ("stage", "name")} for a in shown["artifacts"]]
        assert shown["state"] == "done"   # the entry's own processing is untouched

        # The same document by its document id; a second update starts from the first.
        status, answer = yield post(web.url, {"target": document["id"], "settings": ["administrativeRequest=NOSSN"]},
                                    token=token)
        assert status == 200 and sim.registry.all()[0]["metadata_updates"] == 2
        sent = operations(sim)

        # Refusals make no gateway call.
        for body, expected, text in [
                ({"target": "NOSUCH", "settings": P99}, 404, "no journal entry matches 'NOSUCH'"),
                ({"target": "LAB0001", "settings": ["colour=red"]}, 400, "colour"),
                ({"target": "LAB0001", "settings": ["tipologiaStruttura=Castello"]}, 400, "tipologiaStruttura")]:
            status, answer = yield post(web.url, body, token=token)
            assert status == expected and text in answer["error"], answer
        assert operations(sim) == sent
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_gateway_refusal_is_502_with_the_problem(tmp_path):
    top, web = yield start(tmp_path)
    try:
        sim = simulator_of(top)
        assert (yield exchange(top.mllp_port, LAB))[0] == "AA"
        sim.simulator.add_faults([Fault(operation="metadata", status=400, problem="syntax")])
        status, answer = yield post(web.url, {"target": "LAB0001", "settings": P99}, token=token_of(tmp_path))
        assert status == 502 and answer["ok"] is False and answer["http_status"] == 400
        assert answer["summary"].startswith("gateway metadata: HTTP 400 ") and answer["error"]
        assert "scripted by the simulator" not in json.dumps(answer)   # the problem's detail stays out
        assert sim.registry.all()[0]["metadata_updates"] == 0
    finally:
        yield top.stopService()


@pytest_twisted.inlineCallbacks
def test_update_waits_for_a_publication_of_the_same_accession_in_flight(tmp_path):
    """The update runs under the accession's lock: after a correction in flight, never during it."""
    top, web = yield start(tmp_path)
    try:
        sim = simulator_of(top)
        locks = top.context.publisher.locks
        token = token_of(tmp_path)
        assert (yield exchange(top.mllp_port, LAB))[0] == "AA"

        # 1. A correction the gateway holds (2 s: time enough to queue the update behind it), then
        # refuses: the version stays current, and the update made after the correction's answer reaches it.
        sim.simulator.add_faults([Fault(operation="replace", status=400, delay_s=2.0)])
        correction = exchange(top.mllp_port, CORRECTION)
        yield until(lambda: "replace" in operations(sim), "the correction at the gateway")
        update = post(web.url, {"target": "LAB0001", "settings": P99}, token=token)
        yield until(lambda: any(lock.waiting for lock in locks.values()), "the update waiting for the lock")
        assert operations(sim) == ["create", "replace"] and not update.called
        assert (yield correction)[0] == "AE"
        status, answer = yield update
        assert status == 200 and answer["document_id"].endswith("_1"), answer
        assert operations(sim) == ["create", "replace", "metadata"]
        assert sim.registry.all()[0]["metadata_updates"] == 1

        # 2. A correction held, then taken: once it is through, the version named is replaced
        # and the update is refused (made during it, it would have gone to a version going away).
        sim.simulator.add_faults([Fault(operation="replace", delay_s=2.0)])
        correction = exchange(top.mllp_port, CORRECTION.replace(b"|LAB0002|", b"|LAB0003|"))
        yield until(lambda: operations(sim).count("replace") == 2, "the second correction at the gateway")
        update = post(web.url, {"target": "LAB0001", "settings": ["administrativeRequest=NOSSN"]}, token=token)
        yield until(lambda: any(lock.waiting for lock in locks.values()), "the update waiting for the lock")
        assert not update.called
        assert (yield correction)[0] == "AA"
        status, answer = yield update
        assert status == 409, answer
        assert "is not the published version (replaced)" in answer["error"]
        assert "the current version is " in answer["error"] and answer["error"].endswith("_3")
        assert operations(sim) == ["create", "replace", "metadata", "replace"]
        assert not locks   # every lock released and forgotten
    finally:
        yield top.stopService()


def test_operator_actions_come_from_this_host_only():
    from bridge.web.operator import same_host

    assert same_host("127.0.0.1", "0.0.0.0") and same_host("127.0.0.2", "127.0.0.1")
    assert same_host("::1", "::") and same_host("::ffff:127.0.0.1", "::")
    assert same_host("10.1.2.3", "10.1.2.3")        # the CLI reached the page on its own address
    assert not same_host("10.1.2.4", "10.1.2.3")    # another machine
    assert not same_host("", "0.0.0.0") and not same_host("unix-socket", "x")


@pytest_twisted.inlineCallbacks
def test_a_request_from_another_host_is_refused_even_with_the_token():
    from twisted.internet.address import IPv4Address
    from twisted.web.test.requesthelper import DummyRequest

    from bridge.web.operator import MetadataResource, OperatorEndpoint

    operator = OperatorEndpoint("the-token")
    request = DummyRequest([b""])
    request.method = b"POST"
    request.client = IPv4Address("TCP", "192.0.2.7", 40000)   # another machine
    request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer the-token"])
    finished = request.notifyFinish()
    MetadataResource(None, operator).render(request)   # refused before the service is asked
    yield finished
    assert request.responseCode == 403
    assert b"from this host only" in b"".join(request.written)
