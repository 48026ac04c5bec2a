"""The simulator as a server: answers, X-Cart-id, registry on disk, /_sim/ hooks, TLS modes."""

import hashlib
import re
import ssl

import httpx
import pytest
import pytest_twisted

from bridge.simulator import Fault
from bridge.simulator.registry import Registry

from gateway_kit import aio, doc_id, make_client, make_config, start, submission
from sim_requests import RawSender

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def _get(handle, pki, path, method="GET", **kwargs):
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.auth_cert), str(pki.auth_key))
    base = handle.url.split("/gateway/")[0]
    async with httpx.AsyncClient(verify=context) as http:
        return await http.request(method, base + path, **kwargs)


@pytest_twisted.ensureDeferred
async def test_success_bodies_have_the_gateway_formats(client, simulator, package):
    created = await aio(client.create(submission(), package))
    root, digest, rand = re.match(r"^(.*)\.([0-9a-f]{64})\.([0-9a-f]{10})\^\^\^\^urn:ihe:iti:xdw:2013:"
                                  r"workflowInstanceId$", created.workflow_instance_id).groups()
    assert root == "2.16.840.1.113883.2.9.2.90.4.4"
    assert digest == hashlib.sha256(b"01386030488.LAB.999.A26-00412_1").hexdigest()
    assert UUID.match(created.x_cart_id)
    assert re.match(r"^[0-9a-f]{16}$", created.trace_id) and re.match(r"^[0-9a-f]{16}$", created.span_id)
    assert created.warning is None  # mode ATTACHMENT sent: no warning
    deleted = await aio(client.delete(submission()))
    assert re.match(r"^[0-9a-f]{64}\.[0-9a-f]{10}\^\^\^\^urn:ihe:iti:xdw:2013:workflowInstanceId$",
                    deleted.workflow_instance_id)
    assert deleted.workflow_instance_id.startswith(hashlib.sha256(doc_id().encode()).hexdigest())


@pytest_twisted.ensureDeferred
async def test_x_cart_id_on_every_answer(simulator, pki):
    for path, method in (("/gateway/v2/nothing", "GET"), ("/_sim/registry", "GET"),
                         ("/gateway/v2/documents/validate-and-create", "GET")):
        response = await aio(_get(simulator, pki, path, method))
        assert UUID.match(response.headers["x-cart-id"]), path


@pytest_twisted.ensureDeferred
async def test_registry_survives_a_restart_and_keeps_version_chains(config, pki, package, fake_sleep,
                                                                   sign_credential):
    from gateway_kit import signed_package

    first = start(config)
    client = make_client(config, first, fake_sleep, sign_credential)
    assert (await aio(client.create(submission(), package))).published
    first.simulator.stop()
    await first.listening.stopListening()
    first.registry.close()

    second = start(config)  # same registry file
    try:
        client = make_client(config, second, fake_sleep, sign_credential)
        duplicate = await aio(client.create(submission(), package))
        assert duplicate.status == 409
        v2 = signed_package(pki, local="A26-00412_2")
        v3 = signed_package(pki, local="A26-00412_3")
        assert (await aio(client.replace(doc_id(), submission(document_id=doc_id("A26-00412_2")), v2))).published
        assert (await aio(client.replace(doc_id("A26-00412_2"),
                                         submission(document_id=doc_id("A26-00412_3")), v3))).published
        stale = await aio(client.replace(doc_id(), submission(document_id=doc_id("A26-00412_4")), v3))
        assert stale.status == 404
        rows = {r["id"]: r for r in second.registry.all()}
        chain = [rows[doc_id(f"A26-00412_{n}")] for n in (1, 2, 3)]
        assert [r["version"] for r in chain] == [1, 2, 3]
        assert {r["set_id"] for r in chain} == {doc_id()}
        assert [r["status"] for r in chain] == ["replaced", "replaced", "current"]
        assert chain[2]["replaces"] == doc_id("A26-00412_2")
        listed = (await aio(_get(second, pki, "/_sim/registry"))).json()
        assert [r["id"] for r in listed] == [doc_id(f"A26-00412_{n}") for n in (1, 2, 3)]
    finally:
        second.simulator.stop()
        await second.listening.stopListening()
        second.registry.close()


@pytest_twisted.ensureDeferred
async def test_faults_through_the_admin_endpoint(simulator, pki, client, package):
    added = await aio(_get(simulator, pki, "/_sim/faults", "POST",
                           json=[{"operation": "create", "status": 502}]))
    assert added.json() == {"added": 1}
    bad = await aio(_get(simulator, pki, "/_sim/faults", "POST", json=[{"operation": "create", "bogus": 1}]))
    assert bad.status_code == 400 and "bogus" in bad.json()["error"]
    result = await aio(client.create(submission(), package))
    assert [a.status for a in result.attempts] == [502, 202]
    seen = (await aio(_get(simulator, pki, "/_sim/requests"))).json()
    assert [s["status"] for s in seen] == [502, 202]
    assert all(len(s["jti"]) == 2 and all(s["jti"]) for s in seen)
    simulator.simulator.add_faults([Fault(status=500, times=5)])
    cleared = await aio(_get(simulator, pki, "/_sim/faults", "DELETE"))
    assert cleared.status_code == 200
    assert (await aio(client.delete(submission()))).status == 200


@pytest_twisted.ensureDeferred
async def test_plain_http_mode_and_tls_without_client_certificates(tmp_path, pki, package, fake_sleep,
                                                                   sign_credential):
    for tls, client_ca in ((False, False), (True, False)):
        folder = tmp_path / f"{tls}-{client_ca}"
        folder.mkdir()
        config = make_config(folder, pki, tls=tls, client_ca=client_ca)
        handle = start(config)
        try:
            assert handle.url.startswith("https://" if tls else "http://")
            client = make_client(config, handle, fake_sleep, sign_credential)
            assert (await aio(client.create(submission(), package))).status == 202
        finally:
            handle.simulator.stop()
            await handle.listening.stopListening()
            handle.registry.close()


@pytest_twisted.ensureDeferred
async def test_percent_encoded_id_is_decoded_once(sender_factory, pdfs_good):
    sender, handle = sender_factory
    assert (await aio(sender.send(sender.spec("create", pdfs_good)))).status_code == 202
    spec = sender.spec("delete")
    spec.path_id = doc_id().replace("^", "%5E")  # encoded twice on the wire: %255E
    response = await aio(sender.send(spec))
    assert response.status_code == 400 and response.json()["type"] == "/msg/id-doc"


@pytest.fixture
def sender_factory(simulator, config, sign_credential, pki):
    return RawSender(simulator, config, sign_credential, pki), simulator


@pytest.fixture
def pdfs_good(package):
    return package


def test_registry_unit(tmp_path):
    registry = Registry(tmp_path / "r.sqlite")
    assert registry.create("a^1", workflow_instance_id="w", resource_hl7_type="t", class_code="REF", now=1)
    assert not registry.create("a^1", workflow_instance_id="w", resource_hl7_type="t", class_code="REF", now=2)
    assert registry.replace("a^1", "a^2", workflow_instance_id="w2", resource_hl7_type="t", class_code="REF",
                            now=3) == "ok"
    assert registry.replace("a^1", "a^3", workflow_instance_id="w3", resource_hl7_type="t", class_code="REF",
                            now=4) == "not-found"
    assert registry.create("a^3", workflow_instance_id="w", resource_hl7_type="t", class_code="REF", now=5)
    assert registry.replace("a^2", "a^3", workflow_instance_id="w4", resource_hl7_type="t", class_code="REF",
                            now=6) == "duplicate"
    assert registry.update_metadata("a^2", class_code="REF", now=7)
    assert registry.delete("a^2", now=8) and not registry.delete("a^2", now=9)
    assert not registry.update_metadata("a^2", class_code="REF", now=10)
    assert registry.use_jti("j", 100, now=50) and not registry.use_jti("j", 100, now=51)
    registry.close()
    reopened = Registry(tmp_path / "r.sqlite")
    assert reopened.get("a^2")["status"] == "deleted" and reopened.get("a^2")["version"] == 2
    reopened.close()
