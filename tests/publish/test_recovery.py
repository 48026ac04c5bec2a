"""bridge.publish.recovery: what a message's journaled answers mean after a stop, on the rows
and records each kill leaves behind (pure: no journal, no gateway)."""

from __future__ import annotations

from bridge.journal import Document, DocumentState, GatewayCall
from bridge.publish.record import GatewayRecord
from bridge.publish.recovery import WRONG_PATIENT, settle_earlier, settled_deleted, was_sent

ROOT = "2.16.840.1.113883.2.9.2.90.4.4"


def row(seq: int, version: int, state: str, *, set_seq: int = 1, message: int = 1) -> Document:
    return Document(structure="01386030488", doc_type="LAB", accession="A1", seq=seq,
                    document_id=f"{ROOT}^01386030488.LAB.999.A1_{seq}",
                    set_id=f"{ROOT}^01386030488.LAB.999.A1_{set_seq}", version=version, state=state,
                    content_hash="h", message_id=message)


def record(operation: str, document: Document, *, outcome: str = "published", **extra) -> GatewayRecord:
    return GatewayRecord(operation=operation, document_id=document.document_id, outcome=outcome,
                         attempts=({"x_cart_id": "cart"},), **extra)


def test_nothing_taken_nothing_settled():
    rows = [row(1, 1, DocumentState.PENDING)]
    assert settle_earlier([], rows, 1).answer is None
    refused = settle_earlier([record("create", rows[0], outcome="refused")], rows, 1)
    assert refused.answer is None and refused.writes == ()


def test_a_landed_replace_is_the_outcome_and_settles_both_versions():
    rows = [row(1, 1, DocumentState.PUBLISHED), row(2, 2, DocumentState.PENDING, message=2)]
    settlement = settle_earlier([record("replace", rows[1])], rows, 2)
    assert [(d.seq, d.state) for d in settlement.writes] == [(2, DocumentState.PUBLISHED), (1, DocumentState.REPLACED)]
    assert settlement.answer.operation == "replace"


def test_a_resumed_version_with_another_messages_content_is_settled_and_processing_goes_on():
    rows = [row(1, 1, DocumentState.PENDING, message=1)]
    settlement = settle_earlier([record("create", rows[0])], rows, 2)
    assert [(d.seq, d.state) for d in settlement.writes] == [(1, DocumentState.PUBLISHED)] and settlement.answer is None


def test_the_wrong_patient_plans_answered_delete_leaves_its_create_to_do():
    rows = [row(1, 1, DocumentState.PUBLISHED, message=1)]
    settlement = settle_earlier([record("delete", rows[0], plan=WRONG_PATIENT)], rows, 2)
    assert [(d.seq, d.state, d.message_id) for d in settlement.writes] == [(1, DocumentState.DELETED, 2)]
    assert settlement.answer is None, "the create is still to be made, not answered as a delete"
    # Once recorded as deleted, deciding again writes nothing and still goes on.
    again = settle_earlier([record("delete", rows[0], plan=WRONG_PATIENT)], [row(1, 1, DocumentState.DELETED)], 2)
    assert again.writes == () and again.answer is None


def test_a_cancellation_answered_before_the_stop_is_its_outcome():
    rows = [row(1, 1, DocumentState.PUBLISHED)]
    settlement = settle_earlier([record("delete", rows[0])], rows, 3)
    assert [(d.state, d.message_id) for d in settlement.writes] == [(DocumentState.DELETED, 3)]
    assert settlement.answer.operation == "delete"


def test_settled_deleted_marks_the_uncertain_version_last():
    previous, uncertain = row(1, 1, DocumentState.PUBLISHED), row(2, 2, DocumentState.PENDING)
    writes = settled_deleted(5, uncertain, previous, previous_deleted=False)
    assert [(d.seq, d.state) for d in writes] == [(1, DocumentState.REPLACED), (2, DocumentState.DELETED)]


def call(status, state="answered", operation="create", document_id="d") -> GatewayCall:
    return GatewayCall(id=1, message_id=1, operation=operation, document_id=document_id, state=state,
                       at="", http_status=status)


def test_was_sent_counts_every_answer_that_leaves_the_outcome_open():
    assert was_sent([call(None, state="sent")], "d")
    for status in (202, 404, 409, 429, 500, 504):
        assert was_sent([call(status)], "d"), status
    for status in (400, 401, 403, 422):
        assert not was_sent([call(status)], "d"), status
    assert not was_sent([call(None, state="sent", document_id="other")], "d")
    assert not was_sent([call(None, state="sent")], "d", "delete")
