"""Issue 11 item 1: wrong patient (RT section 4.2, gateway.md section 9), through `fse-bridge serve`.

The corpus pair 14a/14b: a LAB report published for patient A, then its correction for
patient B (same accession). The bridge deletes A's document and publishes B's as a new
set (next seq, its own setId, version 1), as one journaled plan that recovery completes
after a crash at any step; the ACK's MSA-3 names the create's X-Cart-id and an ERR the
delete's; an OPERATOR ALERT line is logged.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fse_helpers import CHECKOUT

from .e2e_kit import Bridge, Message, poll

CORPUS = __import__("fse_helpers").SHARED / "corpus" / "italian-dialects"
FIRST = "14a-lab-v25-wrong-patient.hl7"
CORRECTION = "14b-lab-v25-correction-other-patient.hl7"
ACCESSION = "A26-09455"
STRUCTURE_PREFIX = "2.16.840.1.113883.2.9.2.90.4.4^"


def corpus(name: str, *, accession: str = ACCESSION) -> Message:
    message = Message((CORPUS / name).read_bytes().decode("utf-8"), "utf-8")
    if accession != ACCESSION:
        for segment in ("OBR", "ORC"):
            for s in message.all(segment):
                s[3] = s[3].replace(ACCESSION, accession)
        message.set("MSH", 10, f"{message.get('MSH', 10)}-{accession}")
    return message


def patient_of(message: Message) -> str:
    return message.get("PID", 3).split("^")[0]


def local(document_id: str) -> str:
    return document_id.rsplit(".", 1)[-1]


@pytest.fixture
def fresh(tmp_path):
    """A bridge of its own: the corpus pair's accession is fixed."""
    bridge = Bridge(tmp_path / "state").start()
    yield bridge
    assert bridge.stop() == 0, bridge.log()[-4000:]


def _sim(bridge: Bridge, accession: str = ACCESSION) -> dict[str, dict]:
    return {local(r["id"]): r for r in bridge.registry() if f".{accession}_" in r["id"]}


def test_a_correction_for_another_patient_deletes_and_publishes_a_new_set(fresh):
    first, correction = corpus(FIRST), corpus(CORRECTION)
    assert patient_of(first) != patient_of(correction)
    ack1 = fresh.exchange(first)
    assert ack1.code == "AA", ack1
    ack2 = fresh.exchange(correction)
    assert ack2.code == "AA", ack2

    sim = _sim(fresh)
    assert sim[f"{ACCESSION}_1"]["status"] == "deleted"
    new = sim[f"{ACCESSION}_2"]
    assert new["status"] == "current" and new["version"] == 1 and new["set_id"] == new["id"]
    assert new["replaces"] is None and new["patient"] == patient_of(correction)
    assert sim[f"{ACCESSION}_1"]["patient"] == patient_of(first)

    # The ACK: MSA-3 the create's X-Cart-id, an ERR naming the delete and its X-Cart-id.
    seen = {r["x_cart_id"]: r for r in fresh.requests()}
    assert seen[ack2.x_cart_id]["operation"] == "create"
    [deleted] = [e for e in ack2.errors if e["text"].startswith("deleted ")]
    delete_cart = deleted["text"].rsplit(" ", 1)[-1]
    assert seen[delete_cart]["operation"] == "delete" and seen[delete_cart]["path_id"].endswith(f"{ACCESSION}_1")
    assert deleted["severity"] == "W"
    assert patient_of(first) not in ack2.raw.decode() and patient_of(correction) not in ack2.raw.decode()

    # The journal: both calls under the message, the registry rows, the plan.
    entry = fresh.finished(ack2.control_id)
    calls = [(c["operation"], c["http_status"], c["x_cart_id"]) for c in fresh.calls(entry["id"])]
    assert calls == [("delete", 200, delete_cart), ("create", 202, ack2.x_cart_id)]
    rows = [(r["seq"], r["state"], r["version"], local(r["set_id"])) for r in fresh.documents(ACCESSION)]
    assert rows == [(1, "deleted", 1, f"{ACCESSION}_1"), (2, "published", 1, f"{ACCESSION}_2")]
    for cart in (delete_cart, ack2.x_cart_id):      # either X-Cart-id finds the message
        shown = subprocess.run([sys.executable, "-m", "bridge", "journal", "show", cart, "--config",
                                str(fresh.config_path)], cwd=CHECKOUT, capture_output=True, text=True)
        assert shown.returncode == 0 and ack2.control_id in shown.stdout, shown.stdout + shown.stderr
    plan = json.loads(fresh.artifacts(entry["id"])["plan.json"])
    assert plan["plan"] == "wrong-patient" and local(plan["delete"]) == f"{ACCESSION}_1"
    submission = json.loads(fresh.artifacts(entry["id"])["submission.json"])
    assert submission["patient_id"] == patient_of(correction) and submission["event_codes"] == []
    # The replace across patients is never sent; the operator is told.
    assert [r["operation"] for r in fresh.requests()] == ["create", "delete", "create"]
    alerts = [line for line in fresh.log().splitlines() if "OPERATOR ALERT" in line]
    assert any("wrong_patient" in line and f"{ACCESSION}_1" in line for line in alerts), alerts
    assert all(patient_of(first) not in line and patient_of(correction) not in line for line in alerts)

    # A correction of the new document for the same patient B is an ordinary replace.
    again = corpus(CORRECTION)
    again.set("MSH", 10, "LIS-AGAIN-1")
    again.all("OBX")[0][5] = "30.1"
    ack3 = fresh.exchange(again)
    assert ack3.code == "AA" and not [e for e in ack3.errors if e["text"].startswith("deleted ")], ack3
    assert _sim(fresh)[f"{ACCESSION}_3"]["replaces"].endswith(f"{ACCESSION}_2")


def test_a_crash_after_the_answered_delete_is_completed_with_the_create_only(fresh):
    """The delete answered and journaled; killed while the create is in flight: at restart
    the create is made (same ids), the delete is not sent again."""
    first = fresh.exchange(corpus(FIRST))
    assert first.code == "AA", (first, fresh.log()[-3000:])
    fresh.faults({"operation": "create", "action": "reset", "delay_s": 60})
    correction = corpus(CORRECTION)
    with fresh.connect() as sender:
        sender.send(correction)
        poll(lambda: [r for r in fresh.requests() if r["operation"] == "create"][1:], 30, "the create")
        fresh.kill()
    entry = fresh.entry(correction.get("MSH", 10))
    assert entry["outcome"] is None
    assert [(c["operation"], c["http_status"]) for c in fresh.calls(entry["id"])] == [("delete", 200),
                                                                                      ("create", None)]
    fresh.start()
    finished = fresh.finished(correction.get("MSH", 10))
    assert finished["outcome"] == "AA", fresh.log()[-3000:]
    assert [r["operation"] for r in fresh.requests()] == ["create"], "the delete is not sent again"
    sim = _sim(fresh)
    assert sim[f"{ACCESSION}_1"]["status"] == "deleted" and sim[f"{ACCESSION}_2"]["status"] == "current"
    assert sim[f"{ACCESSION}_2"]["patient"] == patient_of(correction)
    ack = finished["ack"].decode()
    assert f"X-Cart-id {finished['x_cart_id']}" in ack and "deleted " in ack, ack
    rows = [(r["seq"], r["state"]) for r in fresh.documents(ACCESSION)]
    assert rows == [(1, "deleted"), (2, "published")]


def test_a_crash_after_the_delete_landed_unanswered_is_completed(fresh):
    """The delete landed at the registry but its answer never came back (killed while
    waiting): at restart the resent delete's 404 about that id proves it, then the create."""
    first = fresh.exchange(corpus(FIRST))
    assert first.code == "AA", (first, fresh.log()[-3000:])
    fresh.faults({"operation": "delete", "action": "drop-after-processing", "delay_s": 60})
    correction = corpus(CORRECTION)
    with fresh.connect() as sender:
        sender.send(correction)
        poll(lambda: _sim(fresh)[f"{ACCESSION}_1"]["status"] == "deleted", 30, "the delete to land")
        fresh.kill()
    fresh.start()
    finished = fresh.finished(correction.get("MSH", 10))
    assert finished["outcome"] == "AA", fresh.log()[-3000:]
    assert [(r["operation"], r["status"]) for r in fresh.requests()] == [("delete", 404), ("create", 202)]
    sim = _sim(fresh)
    assert sim[f"{ACCESSION}_2"]["status"] == "current" and sim[f"{ACCESSION}_2"]["version"] == 1
    assert [(r["seq"], r["state"]) for r in fresh.documents(ACCESSION)] == [(1, "deleted"), (2, "published")]


def test_an_uncertain_version_of_the_first_patient_is_settled_as_sent_before_the_plan(fresh):
    """A's correction left without an answer (AR), then B's: A's version is sent again as it
    was (its own PDF, same ids), then deleted, and B's published as a new set; B's content
    never goes out under A's ids (the registry would refuse a replace across patients)."""
    assert fresh.exchange(corpus(FIRST)).code == "AA"
    again = corpus(FIRST)
    again.set("MSH", 10, "LIS-A-CORRECTION")
    again.set("OBR", 25, "C")
    again.all("OBX")[0][5] = "27.0"
    fresh.faults({"operation": "replace", "action": "reset", "times": 2})
    assert fresh.exchange(again).code == "AR"
    assert [(r["seq"], r["state"]) for r in fresh.documents(ACCESSION)] == [(1, "published"), (2, "pending")]
    correction = corpus(CORRECTION)
    ack = fresh.exchange(correction)
    assert ack.code == "AA", ack
    entry = fresh.finished(ack.control_id)
    assert [(c["operation"], c["http_status"]) for c in fresh.calls(entry["id"])] == [
        ("replace", 202), ("delete", 200), ("create", 202)]
    sim = _sim(fresh)
    assert [(k, sim[k]["status"], sim[k]["patient"]) for k in sorted(sim)] == [
        (f"{ACCESSION}_1", "replaced", patient_of(again)), (f"{ACCESSION}_2", "deleted", patient_of(again)),
        (f"{ACCESSION}_3", "current", patient_of(correction))]
    assert sim[f"{ACCESSION}_3"]["version"] == 1
    assert [(r["seq"], r["state"]) for r in fresh.documents(ACCESSION)] == [
        (1, "replaced"), (2, "deleted"), (3, "published")]
