"""The client against the real simulator over loopback HTTPS with mutual TLS (gateway.md sections 1, 2, 8)."""

import asyncio
import json

import httpx
import jwt
import pytest
import pytest_twisted

from bridge.errors import GatewayRejected, GatewayUnavailable
from bridge.gateway import OutcomeClass
from bridge.gateway.client import classify, parse_retry_after, ssl_context_from_config
from bridge.simulator import Fault

from gateway_kit import (PATIENT, aio, doc_id, make_client, make_config, registry_rows, signed_package,
                         start, submission)

WIF = r"\^\^\^\^urn:ihe:iti:xdw:2013:workflowInstanceId$"


@pytest_twisted.ensureDeferred
async def test_four_operations_succeed_and_record_x_cart_id(client, simulator, package, pki):
    created = await aio(client.create(submission(), package))
    assert created.status == 202 and created.published and not created.reconciled
    assert created.x_cart_id and len(created.x_cart_id) == 36
    assert created.trace_id and created.span_id
    assert created.workflow_instance_id.startswith("2.16.840.1.113883.2.9.2.90.4.4.")

    new_package = signed_package(pki, local="A26-00412_2")
    replaced = await aio(client.replace(doc_id(), submission(document_id=doc_id("A26-00412_2"),
                                                             submission_id="2.16.840.1.113883.2.9.2.90.4.3.2"),
                                        new_package))
    assert replaced.status == 202 and replaced.x_cart_id

    updated = await aio(client.metadata(submission(document_id=doc_id("A26-00412_2"),
                                                   submission_id="2.16.840.1.113883.2.9.2.90.4.3.3")))
    assert updated.status == 200 and updated.x_cart_id
    deleted = await aio(client.delete(submission(document_id=doc_id("A26-00412_2"))))
    assert deleted.status == 200 and deleted.x_cart_id
    assert deleted.workflow_instance_id.endswith("^^^^urn:ihe:iti:xdw:2013:workflowInstanceId")

    rows = {r["id"]: r for r in registry_rows(simulator)}
    assert rows[doc_id()]["status"] == "replaced"
    assert rows[doc_id()]["replaced_by"] == doc_id("A26-00412_2")
    assert rows[doc_id("A26-00412_2")]["version"] == 2
    assert rows[doc_id("A26-00412_2")]["status"] == "deleted"
    assert rows[doc_id("A26-00412_2")]["metadata_updates"] == 1
    # four different CART transactions, each id seen by the simulator
    seen = [r["x_cart_id"] for r in simulator.simulator.seen]
    assert [created.x_cart_id, replaced.x_cart_id, updated.x_cart_id, deleted.x_cart_id] == seen


@pytest_twisted.ensureDeferred
async def test_503_then_202_with_new_tokens(client, simulator, package, fake_sleep):
    simulator.simulator.add_faults([Fault(operation="create", status=503)])
    result = await aio(client.create(submission(), package))
    assert result.published and result.status == 202
    assert [a.status for a in result.attempts] == [503, 202]
    first, second = (a.jti for a in result.attempts)
    assert not set(first) & set(second)
    assert [r["jti"] for r in simulator.simulator.seen] == [list(first), list(second)]
    assert fake_sleep.delays == [1.0]
    assert len(result.x_cart_ids) == 2 and result.x_cart_ids[0] != result.x_cart_ids[1]


@pytest_twisted.ensureDeferred
async def test_400_is_never_retried(client, simulator, fake_sleep):
    result = await aio(client.replace(doc_id(), submission(document_id=doc_id("x_2")), b"not a pdf"))
    assert result.status == 400 and result.problem["type"] == "/msg/document-type"
    assert len(result.attempts) == 1 and fake_sleep.delays == []
    assert result.outcome_class is OutcomeClass.REFUSED
    assert isinstance(result.to_error(), GatewayRejected)
    simulator.simulator.add_faults([Fault(status=400, problem="mandatory-element")])
    result = await aio(client.delete(submission()))
    assert len(result.attempts) == 1 and result.outcome_class is OutcomeClass.REFUSED


class FirstReadTimesOut(httpx.AsyncBaseTransport):
    """The real transport; the first request's read timeout is 0.1 s and its ReadTimeout is raised
    once *after()* holds (polled: a real condition, not a time window). Later requests as configured."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, after):
        self.inner, self.after, self.timed_out = inner, after, 0

    async def handle_async_request(self, request):
        if self.timed_out:
            return await self.inner.handle_async_request(request)
        request.extensions["timeout"] = {**request.extensions.get("timeout", {}), "read": 0.1}
        try:
            return await self.inner.handle_async_request(request)
        except httpx.ReadTimeout:
            self.timed_out += 1
            for _ in range(3000):
                if self.after():
                    raise
                await asyncio.sleep(0.01)
            raise AssertionError("the condition never held after the first read timeout")

    async def aclose(self):
        await self.inner.aclose()


@pytest_twisted.ensureDeferred
async def test_timeout_after_registration_ends_published_not_duplicated(tmp_path, pki, package, fake_sleep,
                                                                        sign_credential):
    # The simulator registers the create and holds its answer (until the test ends it); the first
    # attempt alone has a short read timeout, and its ReadTimeout reaches the client only once the
    # registration is done, so the resend (with a new mutual-TLS handshake) has the whole configured
    # timeout and always finds the document there: no race between the two attempts, on any machine.
    config = make_config(tmp_path, pki, timeout_s=30)
    handle = start(config, faults=[Fault(operation="create", delay_s=600.0)])
    try:
        def registered():
            return bool(handle.simulator.seen) and handle.simulator.seen[0].get("status") == 202

        transport = FirstReadTimesOut(httpx.AsyncHTTPTransport(verify=ssl_context_from_config(config)),
                                      after=registered)
        client = make_client(config, handle, fake_sleep, sign_credential, transport=transport)
        result = await aio(client.create(submission(), package))
        assert transport.timed_out == 1
        assert result.published and result.reconciled
        assert result.attempts[0].status is None and result.attempts[0].error.startswith("ReadTimeout")
        assert result.attempts[1].status == 409
        assert result.attempts[1].problem["type"] == "/msg/ini-error"
        assert [r["id"] for r in registry_rows(handle)] == [doc_id()]
    finally:
        handle.simulator.stop()
        await handle.listening.stopListening()
        handle.registry.close()


@pytest_twisted.ensureDeferred
async def test_processed_but_no_answer_is_reconciled(client, simulator, package):
    simulator.simulator.add_faults([Fault(operation="create", action="drop-after-processing")])
    result = await aio(client.create(submission(), package))
    assert result.published and result.reconciled
    assert [a.status for a in result.attempts] == [None, 409]
    assert len(registry_rows(simulator)) == 1


@pytest_twisted.ensureDeferred
async def test_reset_before_processing_is_resent_and_created(client, simulator, package):
    simulator.simulator.add_faults([Fault(operation="create", action="reset")])
    result = await aio(client.create(submission(), package))
    assert [a.status for a in result.attempts] == [None, 202]
    assert result.published and not result.reconciled


@pytest_twisted.ensureDeferred
async def test_uncertain_replace_and_delete_reconciled_by_404(client, simulator, package, pki):
    await aio(client.create(submission(), package))
    simulator.simulator.add_faults([Fault(operation="replace", action="drop-after-processing")])
    new = signed_package(pki, local="A26-00412_2")
    replaced = await aio(client.replace(doc_id(), submission(document_id=doc_id("A26-00412_2")), new))
    assert [a.status for a in replaced.attempts] == [None, 404] and replaced.published and replaced.reconciled
    simulator.simulator.add_faults([Fault(operation="delete", action="drop-after-processing")])
    deleted = await aio(client.delete(submission(document_id=doc_id("A26-00412_2"))))
    assert [a.status for a in deleted.attempts] == [None, 404] and deleted.reconciled
    statuses = {r["id"]: r["status"] for r in registry_rows(simulator)}
    assert statuses == {doc_id(): "replaced", doc_id("A26-00412_2"): "deleted"}


@pytest_twisted.ensureDeferred
async def test_resend_after_crash_reconciles(client, simulator, package):
    await aio(client.create(submission(), package))
    again = await aio(client.create(submission(), package, resend=True))
    assert again.published and again.reconciled and again.status == 409
    fresh = await aio(client.create(submission(), package))  # not a resend: a real duplicate
    assert fresh.outcome_class is OutcomeClass.REFUSED and fresh.status == 409


@pytest_twisted.ensureDeferred
async def test_retry_after_is_honoured(client, simulator, package, fake_sleep):
    simulator.simulator.add_faults([Fault(operation="create", status=429, retry_after="7"),
                                    Fault(operation="create", status=503, retry_after="0")])
    result = await aio(client.create(submission(), package))
    assert [a.status for a in result.attempts] == [429, 503, 202]
    assert result.attempts[0].retry_after == 7.0
    assert fake_sleep.delays == [7.0, 2.0]  # Retry-After over the 1 s back-off; then the doubled back-off


@pytest_twisted.ensureDeferred
async def test_bounded_retries_end_not_now(client, simulator, package, fake_sleep):
    simulator.simulator.add_faults([Fault(status=500, times=10)])
    result = await aio(client.create(submission(), package))
    assert len(result.attempts) == 4 and result.status == 500
    assert fake_sleep.delays == [1.0, 2.0, 4.0]
    assert result.outcome_class is OutcomeClass.NOT_NOW and not result.operator_alert
    assert isinstance(result.to_error(), GatewayUnavailable)


@pytest_twisted.ensureDeferred
async def test_404_on_metadata_retried_then_not_now(client, simulator):
    result = await aio(client.metadata(submission()))
    assert [a.status for a in result.attempts] == [404] * 4
    assert result.problem["type"] == "/msg/record-not-found"
    assert result.outcome_class is OutcomeClass.NOT_NOW


@pytest_twisted.ensureDeferred
async def test_expired_token_retried_once_then_alert(client, simulator, package, fake_sleep):
    simulator.simulator.add_faults([Fault(status=401, problem="TokenExpired", times=3)])
    result = await aio(client.create(submission(), package))
    assert [a.status for a in result.attempts] == [401, 401]
    assert result.outcome_class is OutcomeClass.NOT_NOW and result.operator_alert
    assert result.to_error().operator_alert


@pytest_twisted.ensureDeferred
async def test_clock_ahead_of_gateway_is_refused_with_alert(config, simulator, package, fake_sleep,
                                                            sign_credential):
    import time

    client = make_client(config, simulator, fake_sleep, sign_credential, clock=lambda: time.time() + 3600)
    result = await aio(client.create(submission(), package))
    assert result.problem["title"] == "TokenInTheFuture"
    assert len(result.attempts) == 2 and result.operator_alert


@pytest_twisted.ensureDeferred
async def test_on_send_is_called_before_each_attempt_leaves(config, simulator, package, fake_sleep,
                                                            sign_credential):
    calls = []

    async def on_send(info):
        calls.append((info.attempt, info.operation, info.document_id, info.jti,
                      len(simulator.simulator.seen)))

    simulator.simulator.add_faults([Fault(operation="create", status=502)])
    client = make_client(config, simulator, fake_sleep, sign_credential, on_send=on_send)
    result = await aio(client.create(submission(), package))
    assert [(c[0], c[4]) for c in calls] == [(1, 0), (2, 1)]
    assert all(c[1] == "create" and c[2] == doc_id() for c in calls)
    assert [c[3] for c in calls] == [a.jti for a in result.attempts]


@pytest_twisted.ensureDeferred
async def test_refusals_recorded_with_problem_body(client, simulator, pki):
    other = signed_package(pki, patient="MNTMRA03M71C615V")
    result = await aio(client.create(submission(), other))
    assert result.status == 403 and result.problem["type"] == "/msg/jwt-validation"
    assert result.problem["title"] == "Campo token JWT non valido."
    assert result.x_cart_id and result.trace_id and result.problem["workflowInstanceId"]
    assert result.outcome_class is OutcomeClass.REFUSED
    assert PATIENT not in result.summary()


@pytest_twisted.ensureDeferred
async def test_server_not_trusted_is_an_operator_alert(tmp_path, pki, simulator, package, fake_sleep,
                                                       sign_credential, tmp_path_factory):
    from bridge import certs

    other = certs.generate_development_pki(tmp_path_factory.mktemp("other"), fiscal_code="01386030488",
                                           vendor="X")
    config = _with_auth(make_config(tmp_path, pki), gateway_ca=other.ca_cert)
    client = make_client(config, simulator, fake_sleep, sign_credential)
    result = await aio(client.create(submission(), package))
    assert result.status is None and result.error.startswith("TLS")
    assert result.outcome_class is OutcomeClass.NOT_NOW and result.operator_alert
    assert not simulator.simulator.seen


@pytest_twisted.ensureDeferred
async def test_simulator_requires_the_client_certificate(config, simulator, package, pki):
    import ssl

    async def without_client_certificate():
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        async with httpx.AsyncClient(verify=context) as raw:
            with pytest.raises((httpx.TransportError, ssl.SSLError)):
                await raw.delete(simulator.url + "documents/x%5Ey")

    await aio(without_client_certificate())
    assert not simulator.simulator.seen


@pytest_twisted.ensureDeferred
async def test_wire_format_with_mock_transport(config, sign_credential, package):
    """requestBody a plain form field, file x.pdf application/pdf, id percent-encoded once, JSON metadata."""
    from bridge.gateway import GatewayClient

    seen = []

    def handler(request: httpx.Request):
        seen.append(request)
        return httpx.Response(202, json={"traceID": "t", "spanID": "s", "workflowInstanceId": "w"},
                              headers={"X-Cart-id": "b7cad8e2-72c4-41ce-ac9a-24ff2b3f72a0"})

    async def run():
        async def sleep(_):
            pass

        client = GatewayClient.from_config(config, sleep=sleep, base_url="https://cart.example/gateway/v2/",
                                           sign_credential=sign_credential,
                                           transport=httpx.MockTransport(handler))
        await client.create(submission(), package)
        await client.replace(doc_id(), submission(document_id=doc_id("A26-00412_2")), package)
        await client.metadata(submission())
        await client.delete(submission())
        await client.aclose()

    await aio(run())
    create, replace, metadata, delete = seen
    assert create.method == "POST" and str(create.url) == "https://cart.example/gateway/v2/documents/validate-and-create"
    encoded = "2.16.840.1.113883.2.9.2.90.4.4%5E01386030488.LAB.999.A26-00412_1"
    assert replace.method == "PUT" and replace.url.raw_path.decode() == f"/gateway/v2/documents/{encoded}"
    assert metadata.url.raw_path.decode() == f"/gateway/v2/documents/{encoded}/metadata"
    assert delete.method == "DELETE" and delete.url.raw_path.decode() == f"/gateway/v2/documents/{encoded}"
    raw = create.read()
    assert b'Content-Disposition: form-data; name="requestBody"\r\n\r\n{' in raw
    assert b'name="file"; filename="x.pdf"\r\nContent-Type: application/pdf\r\n\r\n' + package[:20] in raw
    assert b'"mode": "ATTACHMENT"' in raw
    assert create.headers["Accept"] == "application/json"
    assert create.headers["Authorization"].startswith("Bearer ")
    assert create.headers["FSE-JWT-Signature"].count(".") == 2
    assert metadata.headers["Content-Type"] == "application/json"
    assert json.loads(metadata.read())["tipoDocumentoLivAlto"] == "REF"
    assert delete.read() == b""
    claims = jwt.decode(delete.headers["FSE-JWT-Signature"], options={"verify_signature": False})
    assert claims["action_id"] == "DELETE" and "attachment_hash" not in claims


@pytest.mark.parametrize("status, problem, expected", [
    (202, None, (OutcomeClass.PUBLISHED, False)),
    (400, {"type": "/msg/syntax"}, (OutcomeClass.REFUSED, False)),
    (403, {"type": "/msg/jwt-validation"}, (OutcomeClass.REFUSED, False)),
    (403, {"type": "/msg/missing-token"}, (OutcomeClass.NOT_NOW, True)),
    (400, {"type": "/msg/missing-token"}, (OutcomeClass.NOT_NOW, True)),
    (403, {"type": "/msg/mandatory-element-token"}, (OutcomeClass.NOT_NOW, True)),
    (401, {"type": "https://govway.org/handling-errors/401/TokenAuthenticationFailed.html"},
     (OutcomeClass.NOT_NOW, True)),
    (409, {"type": "/msg/ini-error"}, (OutcomeClass.REFUSED, False)),
    (413, None, (OutcomeClass.REFUSED, False)),
    (415, {"type": "/msg/document-type"}, (OutcomeClass.REFUSED, False)),
    (422, {"type": "/msg/semantic"}, (OutcomeClass.REFUSED, False)),
    (404, {"type": "/msg/record-not-found"}, (OutcomeClass.NOT_NOW, False)),
    (429, None, (OutcomeClass.NOT_NOW, False)),
    (504, None, (OutcomeClass.NOT_NOW, False)),
])
def test_classify(status, problem, expected):
    assert classify(status, problem) == expected


def test_parse_retry_after():
    assert parse_retry_after("12", 0) == 12.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert parse_retry_after("soon", 0) is None


@pytest_twisted.ensureDeferred
async def test_reactor_sleep_waits_on_the_reactor_clock():
    import asyncio

    from twisted.internet import task

    from bridge.gateway import reactor_sleep

    clock = task.Clock()
    sleep = reactor_sleep(clock)

    async def wait_and_report():
        await sleep(5)
        return clock.seconds()

    future = asyncio.ensure_future(wait_and_report())
    await aio(asyncio.sleep(0))
    clock.advance(4.9)
    await aio(asyncio.sleep(0))
    assert not future.done()
    clock.advance(0.1)
    assert await aio(future) == 5.0


def _with_auth(config, **changes):
    import dataclasses

    return dataclasses.replace(config, certificates=dataclasses.replace(config.certificates, **changes))


@pytest_twisted.ensureDeferred
async def test_mutual_tls_with_encrypted_key_and_pkcs12(config, simulator, package, fake_sleep, sign_credential,
                                                        pki, tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from bridge import certs
    from bridge.errors import ConfigError

    auth = certs.load_credential(pki.auth_cert, pki.auth_key)
    encrypted = tmp_path / "auth-encrypted.key"
    encrypted.write_bytes(auth.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret")))
    monkeypatch.setenv("AUTH_PASS", "s3cret")
    pem_config = _with_auth(config, auth_key=encrypted, auth_passphrase_env="AUTH_PASS")
    client = make_client(pem_config, simulator, fake_sleep, sign_credential)
    assert (await aio(client.create(submission(), package))).status == 202

    p12 = tmp_path / "auth.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"auth", auth.private_key, auth.certificate, None, serialization.BestAvailableEncryption(b"s3cret")))
    p12_config = _with_auth(config, auth_cert=p12, auth_key=None, auth_passphrase_env="AUTH_PASS")
    client = make_client(p12_config, simulator, fake_sleep, sign_credential)
    assert (await aio(client.delete(submission()))).status == 200

    monkeypatch.setenv("AUTH_PASS", "Zq9-not-it")
    with pytest.raises(ConfigError) as info:
        make_client(pem_config, simulator, fake_sleep, sign_credential)
    assert "certificates.auth_cert" in str(info.value) and "Zq9" not in str(info.value)


@pytest_twisted.ensureDeferred
async def test_client_certificate_of_another_subscription_is_refused(config, simulator, package, fake_sleep,
                                                                     sign_credential, pki, tmp_path):
    import shutil

    from bridge import certs

    other = tmp_path / "other-vendor"
    other.mkdir()
    shutil.copy(pki.ca_cert, other / "ca.pem")
    shutil.copy(pki.ca_key, other / "ca.key")
    other_pki = certs.generate_development_pki(other, fiscal_code="01386030488", vendor="OTHER")  # same CA
    foreign = _with_auth(config, auth_cert=other_pki.auth_cert, auth_key=other_pki.auth_key)
    client = make_client(foreign, simulator, fake_sleep, sign_credential)
    result = await aio(client.create(submission(), package))
    assert result.status == 401 and result.problem["title"] == "TokenAuthenticationFailed"
    assert "subscriptions" in result.problem["detail"]
    assert result.outcome_class is OutcomeClass.NOT_NOW and result.operator_alert and len(result.attempts) == 1


@pytest_twisted.ensureDeferred
async def test_paths_are_configurable(tmp_path, pki, package, fake_sleep, sign_credential):
    """RT's production text gives delete as .../gateway/v2/{id}: a configuration change only."""
    import dataclasses

    from bridge.config import GatewayPaths

    config = make_config(tmp_path, pki)
    config = dataclasses.replace(config, gateway=dataclasses.replace(
        config.gateway, paths=GatewayPaths(delete="{id}")))
    handle = start(config)
    try:
        client = make_client(config, handle, fake_sleep, sign_credential)
        assert (await aio(client.create(submission(), package))).status == 202
        deleted = await aio(client.delete(submission()))
        assert deleted.status == 200
        assert client.url_for(config.gateway.paths.delete, doc_id()) == (
            handle.url + "2.16.840.1.113883.2.9.2.90.4.4%5E01386030488.LAB.999.A26-00412_1")
    finally:
        handle.simulator.stop()
        await handle.listening.stopListening()
        handle.registry.close()


@pytest_twisted.ensureDeferred
async def test_202_with_ini_retry_warning_is_published_and_not_resent(client, simulator, package):
    await aio(client.create(submission(), package))
    simulator.simulator.add_faults([Fault(operation="delete", action="ini-async")])
    result = await aio(client.delete(submission()))
    assert result.status == 202 and result.published and len(result.attempts) == 1
    assert result.warning == "Attenzione, transazione presa in carico. Nuovo tentativo in corso"
