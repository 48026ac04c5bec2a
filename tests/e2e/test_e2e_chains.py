"""Issue 6 acceptance: create → replace → delete for every document type, and what is not published.

Real `fse-bridge serve` subprocesses, the embedded simulator over mutual TLS, real MLLP.
Every ACK is checked against the simulator's registry and the journal.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from lxml import etree

from .e2e_kit import Ack, Bridge, chains, document_message

ROOT = "2.16.840.1.113883.2.9.2.90.4.4"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HL7 = {"h": "urn:hl7-org:v3"}
#: The example of each type; RAD's is v2.4 (no informational ERR before v2.5).
MODERN = {"LAB": True, "RAD": False, "RSA": True, "RAP": True, "LDO": True}


def doc_id(doc_type: str, accession: str, seq: int) -> str:
    return f"{ROOT}^01386030488.{doc_type}.999.{accession}_{seq}"


def assert_published(ack: Ack, verb: str, document_id: str, modern: bool) -> str:
    """AA, MSA-3 "X-Cart-id <uuid>", and (v2.5+) the informational ERR naming the document id."""
    assert ack.code == "AA", ack
    assert ack.x_cart_id and UUID.match(ack.x_cart_id), ack
    if modern:
        assert ack.errors == [{"location": "", "code": "0", "severity": "I",
                               "text": f"{verb} {document_id}"}], ack
    else:
        assert ack.errors == [], ack
    return ack.x_cart_id


def assert_journaled(bridge: Bridge, control_id: str, ack: Ack, operation: str, document_id: str,
                     *, validated: bool) -> dict[str, bytes]:
    """The journal explains the message: outcome, one gateway call with the X-Cart-id, the artifacts."""
    entry = bridge.finished(control_id)
    assert (entry["outcome"], entry["operation"], entry["document_id"], entry["x_cart_id"]) == \
        ("AA", operation, document_id, ack.x_cart_id)
    assert bytes(entry["ack"]) == ack.raw
    calls = bridge.calls(entry["id"])
    assert [(c["operation"], c["document_id"], c["state"], c["x_cart_id"]) for c in calls] == \
        [(operation, document_id, "answered", ack.x_cart_id)]
    assert 200 <= calls[0]["http_status"] < 300
    artifacts = bridge.artifacts(entry["id"])
    gateway = json.loads(artifacts["gateway.json"])
    assert gateway["outcome"] == "published" and gateway["attempts"][-1]["x_cart_id"] == ack.x_cart_id
    submission = json.loads(artifacts["submission.json"])
    assert submission["document_id"] == document_id
    if operation != "delete":
        assert artifacts["pdf.sha256"].decode() == hashlib.sha256(artifacts["document.pdf"]).hexdigest()
        assert artifacts["document.pdf"].startswith(b"%PDF")
        if validated:
            report = json.loads(artifacts["validation.json"])
            assert report["findings"] == [] or all(f["severity"] != "error" for f in report["findings"])
        else:
            assert b"validation OFF" in artifacts["note.txt"]
    return artifacts


def cda_header(cda: bytes) -> dict:
    root = etree.fromstring(cda)
    get = lambda path: root.xpath(path, namespaces=HL7)  # noqa: E731
    parent = get("h:relatedDocument/h:parentDocument/h:id")
    return {
        "id": "{}^{}".format(*[get("h:id/@" + a)[0] for a in ("root", "extension")]),
        "set": "{}^{}".format(*[get("h:setId/@" + a)[0] for a in ("root", "extension")]),
        "version": get("h:versionNumber/@value")[0],
        "rplc": [(r.get("typeCode"), f"{p.get('root')}^{p.get('extension')}")
                 for r, p in zip(get("h:relatedDocument"), parent)],
    }


@pytest.mark.parametrize("doc_type", ["LAB", "RAD", "RSA", "RAP", "LDO"])
def test_create_replace_delete_then_a_new_set(validating_bridge, unique, doc_type):
    bridge = validating_bridge
    modern = MODERN[doc_type]
    accession = unique(f"{doc_type}-")
    first, second = doc_id(doc_type, accession, 1), doc_id(doc_type, accession, 2)

    # create
    ack = bridge.exchange(document_message(doc_type, unique("C"), accession, status="F"))
    assert_published(ack, "published", first, modern)
    created = assert_journaled(bridge, ack.control_id, ack, "create", first, validated=True)
    assert cda_header(created["cda.xml"]) == {"id": first, "set": first, "version": "1", "rplc": []}
    [chain] = chains(bridge.registry(), accession)
    assert [(d["id"], d["status"], d["version"]) for d in chain] == [(first, "current", 1)]

    # replace: a corrected result with different content
    ack = bridge.exchange(document_message(doc_type, unique("R"), accession, status="C", variant=1))
    assert_published(ack, "replaced", second, modern)
    replaced = assert_journaled(bridge, ack.control_id, ack, "replace", second, validated=True)
    assert cda_header(replaced["cda.xml"]) == {"id": second, "set": first, "version": "2",
                                               "rplc": [("RPLC", first)]}
    [chain] = chains(bridge.registry(), accession)
    assert [(d["id"], d["status"], d["version"], d["set_id"], d["replaces"]) for d in chain] == [
        (first, "replaced", 1, first, None), (second, "current", 2, first, first)]

    # delete: the current version
    ack = bridge.exchange(document_message(doc_type, unique("D"), accession, status="X"))
    assert_published(ack, "deleted", second, modern)
    assert_journaled(bridge, ack.control_id, ack, "delete", second, validated=True)
    [chain] = chains(bridge.registry(), accession)
    assert [d["status"] for d in chain] == ["replaced", "deleted"]
    assert [(d["seq"], d["version"], d["state"]) for d in bridge.documents(accession)] == [
        (1, 1, "replaced"), (2, 2, "deleted")]

    # a new publication of the accession: a new set (next seq, version 1, no RPLC)
    third = doc_id(doc_type, accession, 3)
    ack = bridge.exchange(document_message(doc_type, unique("N"), accession, status="F", variant=2))
    assert_published(ack, "published", third, modern)
    again = assert_journaled(bridge, ack.control_id, ack, "create", third, validated=True)
    assert cda_header(again["cda.xml"]) == {"id": third, "set": third, "version": "1", "rplc": []}
    old, new = chains(bridge.registry(), accession)
    assert [d["status"] for d in old] == ["replaced", "deleted"]
    assert [(d["id"], d["status"], d["version"], d["replaces"]) for d in new] == [(third, "current", 1, None)]


def test_identical_final_result_resent_is_already_published(bridge, unique):
    accession = unique("SAME-")
    ack = bridge.exchange(document_message("LAB", unique("S"), accession, variant=3))
    assert ack.code == "AA" and ack.x_cart_id, ack
    seen = len(bridge.requests())
    # The same report, a new control id (and so a new entry): nothing to publish.
    again = document_message("LAB", unique("S"), accession, variant=3)
    again.set("MSH", 7, "20260310150000")
    ack = bridge.exchange(again)
    assert (ack.code, ack.text) == ("AA", "already published: identical to the published version"), ack
    assert bridge.calls(bridge.finished(ack.control_id)["id"]) == []
    assert len(bridge.requests()) == seen
    [chain] = chains(bridge.registry(), accession)
    assert [d["status"] for d in chain] == ["current"]
    # A correction identical in content is not published again either.
    ack = bridge.exchange(document_message("LAB", unique("S"), accession, status="C", variant=3))
    assert ack.code == "AA" and ack.text.startswith("already published"), ack
    assert len(bridge.requests()) == seen


def test_delete_of_a_never_published_accession(bridge, unique):
    accession = unique("NEVER-")
    seen = len(bridge.requests())
    ack = bridge.exchange(document_message("RAD", unique("X"), accession, status="X"))
    assert (ack.code, ack.text) == ("AA", "not published: nothing to delete: accession never published"), ack
    assert bridge.calls(bridge.finished(ack.control_id)["id"]) == []
    assert len(bridge.requests()) == seen
    assert chains(bridge.registry(), accession) == []
    # A second delete after a real one: nothing to delete either.
    bridge.exchange(document_message("RAD", unique("F"), accession))
    assert bridge.exchange(document_message("RAD", unique("X"), accession, status="X")).x_cart_id
    ack = bridge.exchange(document_message("RAD", unique("X"), accession, status="X"))
    assert ack.code == "AA" and "nothing to delete" in ack.text, ack


def test_preliminary_result_is_not_published(bridge, unique):
    accession = unique("PRE-")
    seen = len(bridge.requests())
    ack = bridge.exchange(document_message("LAB", unique("P"), accession, status="P"))
    assert ack.code == "AA" and ack.text.startswith("not published: report not final yet"), ack
    assert ack.errors == []
    entry = bridge.finished(ack.control_id)
    assert entry["operation"] == "ignore" and bridge.calls(entry["id"]) == []
    assert bridge.documents(accession) == [] and chains(bridge.registry(), accession) == []
    assert len(bridge.requests()) == seen
    # The final result that follows is a create (version 1).
    ack = bridge.exchange(document_message("LAB", unique("F"), accession))
    assert ack.code == "AA" and ack.errors[0]["text"] == f"published {doc_id('LAB', accession, 1)}", ack


def test_duplicate_resend_gets_the_same_ack_and_no_second_call(bridge, unique):
    accession = unique("DUP-")
    message = document_message("RSA", unique("D"), accession).encode()
    with bridge.connect() as sender:
        first = sender.exchange(message)
        assert first.code == "AA" and first.x_cart_id, first
        seen = len(bridge.requests())
        second = sender.exchange(message)
    # Another connection, later: the same stored ACK again.
    third = bridge.exchange(message)
    assert second.raw == first.raw and third.raw == first.raw
    assert len(bridge.entries(first.control_id)) == 1
    assert len(bridge.calls(bridge.finished(first.control_id)["id"])) == 1
    assert len(bridge.requests()) == seen
    [chain] = chains(bridge.registry(), accession)
    assert len(chain) == 1
