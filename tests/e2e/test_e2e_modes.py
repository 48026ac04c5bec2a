"""Issue 6 acceptance: the examples with validation rules installed, "commit" ACK mode,
and a slow gateway that must not hold up another sender."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from fse_helpers import CHECKOUT

from .e2e_kit import EXAMPLES, FAST_GATEWAY, Bridge, chains, document_message, poll
from .test_e2e_chains import doc_id

#: The README's order: one per type, then the correction and the cancellation of lab.hl7.
EXAMPLE_FILES = ["lab.hl7", "rad.hl7", "rsa.hl7", "rap.hl7", "ldo.hl7", "lab-correction.hl7", "lab-cancel.hl7"]


def test_examples_pass_local_validation_and_are_published(validating_bridge):
    """`fse-bridge send examples/*.hl7` with the rules installed: AA for each, validated locally
    and by the simulator (the README shows this run)."""
    bridge = validating_bridge
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "send", "--port", str(bridge.port),
         *[str(EXAMPLES / name) for name in EXAMPLE_FILES]],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert [line.split()[1] for line in lines] == ["AA"] * 7, done.stdout
    assert all(" X-Cart-id " in line for line in lines), done.stdout
    for control_id in ("LAB0001", "RAD0001", "RSA0001", "RAP0001", "LDO0001", "LAB0002"):
        entry = bridge.finished(control_id)
        report = json.loads(bridge.artifacts(entry["id"])["validation.json"])
        assert report["summary"] and not [f for f in report["findings"] if f["severity"] == "error"], control_id
    # The lab report: created, corrected (version 2), cancelled.
    [chain] = chains(bridge.registry(), "A26-00412")
    assert [(d["version"], d["status"]) for d in chain] == [(1, "replaced"), (2, "deleted")]
    for accession in ("RX26-0007", "VIS26-0311", "I26-00771", "LDO26-00155"):
        [chain] = chains(bridge.registry(), accession)
        assert [d["status"] for d in chain] == ["current"], accession


@pytest.fixture(scope="module")
def commit_bridge(tmp_path_factory):
    gateway = dict(FAST_GATEWAY, requeue_s=0.2, requeue_max_s=0.5)
    bridge = Bridge(tmp_path_factory.mktemp("commit"), ack={"mode": "commit"}, gateway=gateway).start()
    yield bridge
    assert bridge.stop() == 0, bridge.log()[-4000:]


def test_commit_mode_answers_once_journaled_and_journals_the_outcome(commit_bridge, unique):
    bridge = commit_bridge
    accession = unique("CM-")
    message = document_message("RAD", unique("CM"), accession)
    ack = bridge.exchange(message)
    assert (ack.code, ack.text, ack.errors) == ("AA", "received", []), ack
    # The outcome arrives later, in the journal only.
    entry = bridge.finished(ack.control_id)
    assert (entry["outcome"], entry["operation"], entry["document_id"]) == \
        ("AA", "create", doc_id("RAD", accession, 1))
    assert bridge.calls(entry["id"])[0]["x_cart_id"] == entry["x_cart_id"]
    [chain] = chains(bridge.registry(), accession)
    assert [d["id"] for d in chain] == [entry["document_id"]]
    # The stored ACK is the commit ACK: a resend gets it again.
    assert bytes(entry["ack"]) == ack.raw and bridge.exchange(message).raw == ack.raw

    # A message that cannot be published is still accepted; the journal says why.
    bad = document_message("RAD", unique("CM"), unique("CM-"))
    bad.set("OBR", 32, "M999&Nessuno&Medico")
    ack = bridge.exchange(bad)
    assert ack.code == "AA", ack
    entry = bridge.finished(ack.control_id)
    assert entry["outcome"] == "AE" and "practitioner" in entry["error"]


def test_commit_mode_tries_again_what_the_gateway_could_not_take(commit_bridge, unique):
    """The sender got AA and will not resend: after an AR from the gateway the bridge waits and
    tries again itself; the publication then shows in the journal and at the gateway."""
    bridge = commit_bridge
    accession = unique("CMW-")
    bridge.faults({"operation": "create", "status": 503, "times": 2})   # both attempts of the first try
    ack = bridge.exchange(document_message("RSA", unique("CW"), accession))
    assert (ack.code, ack.text) == ("AA", "received"), ack
    entry = bridge.finished(ack.control_id)
    assert (entry["outcome"], entry["document_id"]) == ("AA", doc_id("RSA", accession, 1))
    states = [r["state"] for r in bridge.query("SELECT state FROM transitions WHERE message_id = ? ORDER BY id",
                                               entry["id"])]
    assert "waiting" in states and states[-1] == "done", states
    assert [c["http_status"] for c in bridge.calls(entry["id"])][:2] == [503, 503]
    [chain] = chains(bridge.registry(), accession)
    assert [(d["id"], d["status"]) for d in chain] == [(entry["document_id"], "current")]


def test_a_slow_gateway_does_not_stop_another_sender(bridge, unique):
    slow_accession, quick_accession = unique("SLOW-"), unique("QUICK-")
    slow_message = document_message("LDO", unique("SL"), slow_accession)
    # The simulator holds the next create's answer until the test releases it (the delay only
    # bounds a failed test): the slow sender waits for it, however long the quick one takes.
    bridge.faults({"operation": "create", "delay_s": 600.0})
    answers = {}

    def slow_sender():
        answers["slow"] = bridge.exchange(slow_message)

    thread = threading.Thread(target=slow_sender, daemon=True)
    thread.start()
    # Its call is out: journaled as sent, the simulator holding the answer ...
    poll(lambda: bridge.query("SELECT 1 FROM messages m JOIN gateway_calls c ON c.message_id = m.id"
                              " WHERE m.msh10 = ? AND c.state = 'sent'", slow_message.get("MSH", 10)),
         10, "the slow call to leave")
    # ... while another sender's message is published and answered.
    quick = bridge.exchange(document_message("RAD", unique("QK"), quick_accession))
    assert quick.code == "AA" and quick.x_cart_id, quick
    assert "slow" not in answers and thread.is_alive()
    assert bridge.release() == 1
    thread.join(30)
    assert answers["slow"].code == "AA" and answers["slow"].x_cart_id, answers["slow"]
