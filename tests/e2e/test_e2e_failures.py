"""Issue 6 acceptance: each class of failure gives the right ACK code and ERR.

Local refusals (invalid CF, unknown practitioner, schematron) make no gateway call;
the gateway's own refusals (scripted with the simulator's faults) are AE with the
problem's type/title and the X-Cart-id; an unreachable gateway is AR.
"""

from __future__ import annotations

import base64
import json
import random
import shutil

import pytest

from fse_helpers import CHECKOUT

from .e2e_kit import Bridge, chains, document_message
from .test_e2e_chains import UUID, doc_id


def test_invalid_fiscal_code_is_ae_at_pid_3(bridge, unique):
    message = document_message("LAB", unique("CF"), unique("CF-"))
    pid = message.all("PID")[0]
    pid[3] = pid[3].replace("RMSLSO31M04Z404R", "RMSLSO31M04Z404X")
    seen = len(bridge.requests())
    ack = bridge.exchange(message)
    assert ack.code == "AE", ack
    assert [(e["location"], e["code"], e["severity"]) for e in ack.errors] == [("PID^1^3", "102", "E")], ack
    assert "RMSLSO31M04Z404X" not in ack.raw.decode()     # no patient data in the answer
    entry = bridge.finished(ack.control_id)
    assert entry["outcome"] == "AE" and bridge.calls(entry["id"]) == []
    assert len(bridge.requests()) == seen


def test_unknown_practitioner_is_ae_naming_obr_32(bridge, unique):
    message = document_message("RAD", unique("PR"), unique("PR-"))
    message.set("OBR", 32, "M999&Nessuno&Medico")
    ack = bridge.exchange(message)
    assert ack.code == "AE", ack
    [error] = ack.errors
    assert error["location"].startswith("OBR^1^32") and error["code"] == "103", ack
    assert "practitioner" in error["text"]
    assert bridge.calls(bridge.finished(ack.control_id)["id"]) == []


@pytest.fixture(scope="module")
def broken_templates_bridge(tmp_path_factory, rules_dir):
    """Templates that leave out realmCode: XSD-valid CDA that breaks the schematron's ERRORE-1/2."""
    state = tmp_path_factory.mktemp("broken-templates")
    templates = state / "templates"
    shutil.copytree(CHECKOUT / "templates", templates)
    macros = templates / "_macros.xml.j2"
    text = macros.read_text()
    assert '<realmCode code="IT"/>' in text
    macros.write_text(text.replace('<realmCode code="IT"/>', ""))
    bridge = Bridge(state, rules_dir=rules_dir, mapping={"templates": str(templates)}).start()
    yield bridge
    assert bridge.stop() == 0, bridge.log()[-4000:]


def test_schematron_failure_is_ae_with_the_rule_id(broken_templates_bridge, unique):
    bridge = broken_templates_bridge
    ack = bridge.exchange(document_message("LAB", unique("SCH"), unique("SCH-")))
    assert ack.code == "AE", ack
    assert ack.errors, ack
    assert all(e["code"] == "207" and e["severity"] == "E" for e in ack.errors), ack
    assert any(e["text"].startswith("ERRORE-1") for e in ack.errors), ack
    entry = bridge.finished(ack.control_id)
    assert bridge.calls(entry["id"]) == [] and bridge.requests() == []
    report = json.loads(bridge.artifacts(entry["id"])["validation.json"])
    assert {"ERRORE-1", "ERRORE-2"} <= {f["rule"] for f in report["findings"]}
    assert bridge.documents(ack.control_id) == []


def test_gateway_refusal_is_ae_with_its_type_title_and_x_cart_id(bridge, unique):
    accession = unique("GW4-")
    bridge.faults({"operation": "create", "status": 400, "problem": "invalid-format"})
    ack = bridge.exchange(document_message("LDO", unique("G"), accession))
    assert ack.code == "AE", ack
    [seen] = [r for r in bridge.requests() if r["x_cart_id"] == ack.x_cart_id]
    assert UUID.match(ack.x_cart_id) and seen["status"] == 400
    [error] = ack.errors
    assert error["code"] == "207"
    assert "/msg/invalid-format (Formato campo non valido.)" in error["text"], ack
    entry = bridge.finished(ack.control_id)
    [call] = bridge.calls(entry["id"])
    assert (call["http_status"], call["x_cart_id"]) == (400, ack.x_cart_id)
    assert json.loads(call["problem"])["type"] == "/msg/invalid-format"
    assert chains(bridge.registry(), accession) == []
    # The refusal is final: a resend of the same bytes gets the same AE, no new call.
    calls = len(bridge.requests())
    assert bridge.exchange(document_message("LDO", ack.control_id, accession)).raw == ack.raw
    assert len(bridge.requests()) == calls


@pytest.mark.parametrize("fault", [{"status": 503}, {"action": "reset"}], ids=["503", "reset"])
def test_gateway_down_is_ar_and_a_resend_publishes_once(bridge, unique, fault):
    accession = unique("DOWN-")
    # max_attempts = 2 in the test configuration: both attempts fail.
    bridge.faults(dict(fault, operation="create", times=2))
    message = document_message("RAP", unique("DN"), accession)
    ack = bridge.exchange(message)
    assert ack.code == "AR", ack
    [error] = ack.errors
    assert error["code"] == "207" and error["text"].startswith("gateway create: "), ack
    if "status" in fault:
        assert ack.x_cart_id and "HTTP 503" in error["text"], ack
    else:
        assert ack.x_cart_id is None and "no answer" in error["text"], ack
    entry = bridge.finished(ack.control_id)
    assert [c["http_status"] for c in bridge.calls(entry["id"])] == [fault.get("status")] * 2
    # The sender resends it after an AR: processed again, with the same document id.
    again = bridge.exchange(message)
    assert again.code == "AA" and again.errors[0]["text"] == f"published {doc_id('RAP', accession, 1)}", again
    [chain] = chains(bridge.registry(), accession)
    assert [d["id"] for d in chain] == [doc_id("RAP", accession, 1)]


def test_lost_gateway_answer_is_reconciled_not_published_twice(bridge, unique):
    accession = unique("LOST-")
    # The gateway publishes, then the connection drops before its answer: the retry's
    # 409 (duplicate id) proves the first attempt landed.
    bridge.faults({"operation": "create", "action": "drop-after-processing"})
    ack = bridge.exchange(document_message("LAB", unique("L"), accession))
    assert ack.code == "AA", ack
    [chain] = chains(bridge.registry(), accession)
    assert [(d["id"], d["status"]) for d in chain] == [(doc_id("LAB", accession, 1), "current")]
    calls = bridge.calls(bridge.finished(ack.control_id)["id"])
    assert [c["http_status"] for c in calls] == [None, 409]
    # The next correction replaces that version.
    ack = bridge.exchange(document_message("LAB", unique("L"), accession, status="C", variant=5))
    assert ack.code == "AA" and ack.errors[0]["text"] == f"replaced {doc_id('LAB', accession, 2)}", ack


def test_unsupported_message_type_is_ar(bridge, unique):
    message = document_message("LAB", unique("ADT"), unique("ADT-"))
    message.set("MSH", 9, "ADT^A01^ADT_A01")
    seen = len(bridge.requests())
    ack = bridge.exchange(message)
    assert ack.code == "AR", ack
    assert [(e["location"], e["code"]) for e in ack.errors] == [("MSH^1^9^1", "200")], ack
    message.set("MSH", 9, "ORU^R30")
    message.set("MSH", 10, unique("R30"))
    ack = bridge.exchange(message)
    assert ack.code == "AR" and [(e["location"], e["code"]) for e in ack.errors] == [("MSH^1^9^2", "201")], ack
    assert len(bridge.requests()) == seen


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "not-landed"])
def test_cancellation_after_a_correction_left_uncertain(bridge, unique, landed):
    """A correction ends AR with its outcome unknown (the gateway may have it); the cancellation that
    follows removes whatever is live, and a later result starts a new set."""
    accession = unique("UNC-")
    first, second = doc_id("LAB", accession, 1), doc_id("LAB", accession, 2)
    assert bridge.exchange(document_message("LAB", unique("U"), accession)).code == "AA"
    # Both attempts of the correction fail; with "landed" the first was processed before its
    # connection dropped (the correction is live at the gateway).
    first_attempt = {"operation": "replace", "action": "drop-after-processing"} if landed else \
        {"operation": "replace", "status": 503}
    bridge.faults(first_attempt, {"operation": "replace", "status": 503})
    ack = bridge.exchange(document_message("LAB", unique("U"), accession, status="C", variant=7))
    assert ack.code == "AR", ack
    [chain] = chains(bridge.registry(), accession)
    assert [d["status"] for d in chain] == (["replaced", "current"] if landed else ["current"])

    ack = bridge.exchange(document_message("LAB", unique("U"), accession, status="X"))
    assert ack.code == "AA" and ack.x_cart_id, ack
    assert ack.errors[0]["text"] == f"deleted {second if landed else first}", ack
    [chain] = chains(bridge.registry(), accession)
    assert [d["status"] for d in chain] == (["replaced", "deleted"] if landed else ["deleted"])
    assert not [d for d in bridge.registry() if d["status"] == "current" and accession in d["id"]]

    ack = bridge.exchange(document_message("LAB", unique("U"), accession, variant=8))
    third = doc_id("LAB", accession, 3)
    assert ack.code == "AA" and ack.errors[0]["text"] == f"published {third}", ack
    assert [(d["id"], d["status"], d["version"]) for d in chains(bridge.registry(), accession)[-1]] == \
        [(third, "current", 1)]


def test_a_document_over_the_gateways_ceiling_is_ae_not_sent(bridge, unique):
    """pdf.md section 1: the signed PDF must stay under 1 MB. Two attachments, each under the
    mapping's own limit (700,000 bytes), make one over it: AE naming OBX, no gateway call."""
    message = document_message("LAB", unique("BIG"), unique("BIG-"))
    rng = random.Random(7)  # random bytes: the PDF's compression cannot shrink them
    for n in (1, 2):
        data = base64.b64encode(rng.randbytes(600_000)).decode()
        message.segments.append(["OBX", str(20 + n), "ED", "PDF^Referto^L", "", f"^AP^PDF^Base64^{data}",
                                 "", "", "", "", "", "F"])
    seen = len(bridge.requests())
    ack = bridge.exchange(message)
    assert ack.code == "AE", ack
    [error] = ack.errors
    assert error["location"] == "OBX" and "over the gateway's 1,048,576" in error["text"], ack
    assert len(bridge.requests()) == seen
