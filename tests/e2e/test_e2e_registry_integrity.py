"""Issue 11 items 2, 3, 4, 6 through `fse-bridge serve` and its embedded gateway.

- An uncertain call answered by a 409/404 that is not about its own id: AE with an
  operator alert, never AA (item 2).
- identificativoSottomissione fresh per call, random, under 64 characters; no counter (item 3).
- The patient's request to hide the report (ARV) makes the create carry P99; the new
  document of the wrong-patient plan carries only its own patient's restriction (item 4).
- A message waiting to retry when SIGTERM comes is left for recovery (item 6).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time

import pytest

from bridge.model import Report

from .e2e_kit import Bridge, Message, document_message, poll

CORPUS = __import__("fse_helpers").SHARED / "corpus" / "italian-dialects"
SUBMISSION_ROOT = "2.16.840.1.113883.2.9.2.90.4.3."
ARV = "ARV|1|A|ALL^All^HL70717|PAT^Patient Request^HL70719"

needs_access_policies = pytest.mark.skipif(
    "access_policies" not in {f.name for f in dataclasses.fields(Report)},
    reason="Report.access_policies (the ARV mapping) has not landed yet")


def _alerts(bridge: Bridge, since: int) -> list[str]:
    return [line for line in bridge.log()[since:].splitlines() if "OPERATOR ALERT" in line]


def test_a_409_not_about_this_document_after_an_uncertain_create_is_ae_with_an_alert(bridge, unique):
    accession = unique("U409-")
    since = len(bridge.log())
    # The first attempt may have landed (503); the resend's 409 does not name this document.
    bridge.faults({"operation": "create", "status": 503},
                  {"operation": "create", "status": 409, "problem": "ini-error"})
    ack = bridge.exchange(document_message("LAB", unique("U"), accession))
    assert ack.code == "AE", ack
    entry = bridge.finished(ack.control_id)
    assert [c["http_status"] for c in bridge.calls(entry["id"])] == [503, 409]
    alerts = _alerts(bridge, since)
    assert any("[uncertain]" in line and "409" in line for line in alerts), alerts
    assert [r["state"] for r in bridge.documents(accession)] == ["pending"]
    assert not [r for r in bridge.registry() if f".{accession}_" in r["id"]]


def test_a_404_not_about_this_document_after_an_uncertain_delete_is_ae_with_an_alert(bridge, unique):
    accession = unique("U404-")
    assert bridge.exchange(document_message("RAD", unique("U"), accession)).code == "AA"
    since = len(bridge.log())
    bridge.faults({"operation": "delete", "status": 503},
                  {"operation": "delete", "status": 404, "problem": "generic-error"})
    ack = bridge.exchange(document_message("RAD", unique("U"), accession, status="X"))
    assert ack.code == "AE", ack
    assert any("[uncertain]" in line for line in _alerts(bridge, since))
    [live] = [r for r in bridge.registry() if f".{accession}_" in r["id"]]
    assert live["status"] == "current"
    assert [r["state"] for r in bridge.documents(accession)] == ["published"]


def test_every_call_has_its_own_random_submission_id(bridge, unique):
    accession = unique("SUB-")
    acks = [bridge.exchange(document_message("LAB", unique("S"), accession, status=status, variant=variant))
            for status, variant in (("F", 1), ("C", 2))]
    acks.append(bridge.exchange(document_message("LAB", unique("S"), unique("SUB-"), variant=3)))
    assert [a.code for a in acks] == ["AA"] * 3, acks
    ids = []
    for ack in acks:
        entry = bridge.finished(ack.control_id)
        ids.append(json.loads(bridge.artifacts(entry["id"])["submission.json"])["submission_id"])
    assert len(set(ids)) == 3
    for value in ids:
        assert value.startswith(SUBMISSION_ROOT) and value[len(SUBMISSION_ROOT):].isdigit()
        assert 50 <= len(value) < 64
    assert not bridge.query("SELECT * FROM counters WHERE name = 'submission'")


@needs_access_policies
def test_the_patients_request_to_hide_makes_the_create_carry_p99(bridge, unique):
    message = Message((CORPUS / "05-lab-v26-arv-oscuramento.hl7").read_bytes().decode("utf-8"), "utf-8")
    message.set("MSH", 10, unique("ARV"))
    accession = unique("ARV-")
    for segment in ("OBR", "ORC"):
        for s in message.all(segment):
            s[3] = accession
    ack = bridge.exchange(message)
    assert ack.code == "AA", ack
    entry = bridge.finished(ack.control_id)
    assert json.loads(bridge.artifacts(entry["id"])["submission.json"])["event_codes"] == ["P99"]


@needs_access_policies
def test_the_wrong_patient_plan_never_carries_the_first_patients_restriction(bridge, unique):
    from .test_e2e_wrong_patient import CORRECTION, FIRST, corpus

    accession = unique("WPH-")
    first = corpus(FIRST, accession=accession)
    first.segments.insert(2, ARV.split("|"))          # patient A asked to hide the report
    assert bridge.exchange(first).code == "AA"
    first_entry = bridge.finished(first.get("MSH", 10))
    assert json.loads(bridge.artifacts(first_entry["id"])["submission.json"])["event_codes"] == ["P99"]
    ack = bridge.exchange(corpus(CORRECTION, accession=accession))
    assert ack.code == "AA", ack
    entry = bridge.finished(ack.control_id)
    submission = json.loads(bridge.artifacts(entry["id"])["submission.json"])
    assert submission["event_codes"] == [] and submission["document_id"].endswith(f"{accession}_2")


def test_sigterm_leaves_a_message_waiting_to_retry_for_recovery(tmp_path, unique):
    """A gateway's Retry-After: 3600 (capped at the maximum back-off, 30 s here) and then a
    SIGTERM: the service stops at once, the message is not recorded as an internal error,
    and the next start publishes it."""
    bridge = Bridge(tmp_path / "state", gateway={"max_attempts": 3, "backoff_s": 0.05, "max_backoff_s": 30,
                                                 "timeout_s": 20}).start()
    try:
        bridge.faults({"operation": "create", "status": 503, "retry_after": "3600"})
        message = document_message("LAB", unique("TERM"), unique("TERM-"))
        with bridge.connect() as sender:
            sender.send(message)
            poll(lambda: [r for r in bridge.requests() if r.get("status") == 503], 30, "the 503")
            started = time.monotonic()
            bridge.proc.send_signal(signal.SIGTERM)
            assert bridge.proc.wait(60) == 0, bridge.log()[-3000:]
            assert time.monotonic() - started < 15, "the stop waited for the retry"
        entry = bridge.entry(message.get("MSH", 10))
        assert entry["outcome"] is None, dict(entry)
        log = bridge.log()
        assert "internal error" not in log and "CancelledError" not in log and "Traceback" not in log
        assert "left for recovery" in log
        bridge.start()
        finished = bridge.finished(message.get("MSH", 10))
        assert finished["outcome"] == "AA", bridge.log()[-3000:]
        assert [r["operation"] for r in bridge.requests()] == ["create"]
    finally:
        if bridge.proc.poll() is None:
            assert bridge.stop() == 0
