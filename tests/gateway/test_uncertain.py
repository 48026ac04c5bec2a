"""Issue 11 items 2, 3, 6 against the simulator (real HTTP, mutual TLS): an uncertain call is
reconciled only by an answer about its own id; submission set ids are fresh and the registry
refuses one it holds; Retry-After never parks a call past the maximum back-off."""

from __future__ import annotations

import asyncio
import email.utils
import re
import time

import pytest
import pytest_twisted

from bridge.gateway import OutcomeClass
from bridge.gateway.identifiers import SUBMISSION_ROOT, new_submission_id
from bridge.simulator import Fault

from gateway_kit import OTHER_PATIENT, aio, doc_id, make_client, registry_rows, signed_package, submission


def test_submission_ids_are_fresh_random_oids_under_64_characters():
    ids = {new_submission_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in ids:
        assert re.fullmatch(re.escape(SUBMISSION_ROOT) + r"\.[1-9][0-9]*", value)
        assert len(value) <= 61
    # 96 random bits: almost all draws have the full 29 digits (about 60 characters in all).
    assert sum(len(v) >= 59 for v in ids) > 1900


@pytest_twisted.ensureDeferred
async def test_the_registry_refuses_a_submission_set_id_it_holds(client, simulator, package, pki):
    held = new_submission_id()
    first = await aio(client.create(submission(submission_id=held), package))
    assert first.published
    other = signed_package(pki, local="A26-00413_1")
    second = await aio(client.create(submission(document_id=doc_id("A26-00413_1"), submission_id=held), other))
    assert second.status == 409 and second.problem["type"] == "/msg/ini-error"
    assert held in second.problem["detail"] and doc_id("A26-00413_1") not in second.problem["detail"]
    assert second.outcome_class is OutcomeClass.REFUSED and not second.reconciled
    assert [r["id"] for r in registry_rows(simulator)] == [doc_id()]


@pytest_twisted.ensureDeferred
async def test_409_for_a_held_submission_id_after_an_uncertain_create_is_refused_with_an_alert(
        client, simulator, package, pki):
    held = new_submission_id()
    assert (await aio(client.create(submission(submission_id=held), package))).published
    other = signed_package(pki, local="A26-00413_1")
    # The first attempt gets a 503 (it may have landed), the second a 409 about the submission set.
    simulator.simulator.add_faults([Fault(operation="create", status=503)])
    result = await aio(client.create(submission(document_id=doc_id("A26-00413_1"), submission_id=held), other))
    assert [a.status for a in result.attempts] == [503, 409]
    assert result.outcome_class is OutcomeClass.REFUSED, "never published: the gateway holds nothing"
    assert not result.reconciled and result.operator_alert and "409" in result.alert
    assert doc_id("A26-00413_1") not in [r["id"] for r in registry_rows(simulator)]


@pytest_twisted.ensureDeferred
async def test_409_naming_this_document_after_an_uncertain_create_is_reconciled(client, simulator, package):
    simulator.simulator.add_faults([Fault(operation="create", action="drop-after-processing")])
    result = await aio(client.create(submission(), package))
    assert [a.status for a in result.attempts] == [None, 409]
    assert doc_id() in result.problem["detail"]
    assert result.published and result.reconciled and not result.operator_alert


@pytest_twisted.ensureDeferred
async def test_any_other_409_on_a_resend_is_not_proof(client, simulator, package):
    simulator.simulator.add_faults([Fault(operation="create", status=409, problem="ini-error")])
    result = await aio(client.create(submission(), package, resend=True))
    assert result.status == 409 and result.outcome_class is OutcomeClass.REFUSED
    assert not result.reconciled and result.operator_alert
    assert registry_rows(simulator) == []


@pytest_twisted.ensureDeferred
async def test_404_not_about_the_document_after_an_uncertain_replace_is_not_proof(client, simulator, package, pki):
    assert (await aio(client.create(submission(), package))).published
    v2 = signed_package(pki, local="A26-00412_2")
    # A front end's 404 (no such route), not the dispatcher's record-not-found about the id.
    simulator.simulator.add_faults([Fault(operation="replace", status=503),
                                    Fault(operation="replace", status=404, problem="generic-error")])
    result = await aio(client.replace(doc_id(), submission(document_id=doc_id("A26-00412_2")), v2))
    assert [a.status for a in result.attempts] == [503, 404]
    assert result.outcome_class is OutcomeClass.REFUSED and not result.reconciled and result.operator_alert
    assert {r["id"]: r["status"] for r in registry_rows(simulator)} == {doc_id(): "current"}


@pytest_twisted.ensureDeferred
async def test_404_about_the_document_after_an_uncertain_delete_is_reconciled(client, simulator, package):
    assert (await aio(client.create(submission(), package))).published
    simulator.simulator.add_faults([Fault(operation="delete", action="drop-after-processing")])
    result = await aio(client.delete(submission()))
    assert [a.status for a in result.attempts] == [None, 404]
    assert doc_id() in result.problem["detail"] and result.published and result.reconciled


@pytest_twisted.ensureDeferred
async def test_the_registry_refuses_a_replace_across_patients(client, simulator, package, pki):
    assert (await aio(client.create(submission(), package))).published
    other = signed_package(pki, patient=OTHER_PATIENT, local="A26-00412_2")
    result = await aio(client.replace(doc_id(), submission(document_id=doc_id("A26-00412_2"),
                                                           patient_id=OTHER_PATIENT), other))
    assert result.status == 409 and result.problem["detail"].startswith("Paziente diverso")
    assert OTHER_PATIENT not in result.problem["detail"]
    assert result.outcome_class is OutcomeClass.REFUSED
    assert {r["id"]: r["status"] for r in registry_rows(simulator)} == {doc_id(): "current"}


@pytest_twisted.ensureDeferred
async def test_retry_after_is_capped_at_the_maximum_back_off(client, simulator, package, fake_sleep):
    in_an_hour = email.utils.formatdate(time.time() + 3600, usegmt=True)
    simulator.simulator.add_faults([Fault(operation="create", status=429, retry_after="3600"),
                                    Fault(operation="create", status=503, retry_after=in_an_hour)])
    result = await aio(client.create(submission(), package))
    assert [a.status for a in result.attempts] == [429, 503, 202]
    assert result.attempts[0].retry_after == 3600.0 and result.attempts[1].retry_after > 3500
    assert fake_sleep.delays == [client.max_backoff_s] * 2 == [30.0, 30.0]


@pytest_twisted.ensureDeferred
async def test_a_stopping_client_leaves_a_call_waiting_to_retry(config, simulator, package, sign_credential):
    """SIGTERM: the wait between attempts is cancelled, not turned into an answer."""
    slept = asyncio.Event()

    async def long_sleep(seconds: float) -> None:
        slept.set()
        await asyncio.sleep(seconds)

    client = make_client(config, simulator, long_sleep, sign_credential)
    simulator.simulator.add_faults([Fault(operation="create", status=503, retry_after="20")])
    call = asyncio.ensure_future(client.create(submission(), package))
    await aio(slept.wait())
    client.stop_waiting()
    with pytest.raises(asyncio.CancelledError):
        await aio(call)
    with pytest.raises(asyncio.CancelledError):   # and a later retry does not wait either
        simulator.simulator.add_faults([Fault(operation="create", status=503)])
        await aio(client.create(submission(), package))
