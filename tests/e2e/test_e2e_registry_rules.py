"""The registry decisions behind recovery (bridge.publish.plan), on the rows a kill can leave behind.

The crash test finds these states at random; here each one is built on purpose.
"""

from __future__ import annotations

from bridge.publish.plan import current, decide, previous_of
from bridge.journal import Document, DocumentState
from bridge.model import Action

ROOT = "2.16.840.1.113883.2.9.2.90.4.4"
KEY = dict(structure_cf="01386030488", doc_type="LAB", repository="999", accession="A1")


def row(seq: int, version: int, state: str, *, set_seq: int = 1, message: int = 1) -> Document:
    return Document(structure="01386030488", doc_type="LAB", accession="A1", seq=seq,
                    document_id=f"{ROOT}^01386030488.LAB.999.A1_{seq}",
                    set_id=f"{ROOT}^01386030488.LAB.999.A1_{set_seq}", version=version, state=state,
                    content_hash="h", message_id=message)


def test_a_pending_row_left_before_its_call_is_not_the_replaced_version():
    # v1, v2 published; a kill left seq 3 (v3) pending before its call; seq 4 (v3) was
    # published instead; seq 5 (v4) is uncertain (its call left, no answer).
    rows = [row(1, 1, DocumentState.REPLACED), row(2, 2, DocumentState.REPLACED), row(3, 3, DocumentState.PENDING), row(4, 3, DocumentState.PUBLISHED),
            row(5, 4, DocumentState.PENDING)]
    assert previous_of(rows[4], rows) == rows[3]
    plan = decide(Action.PUBLISH, rows, uncertain=rows[4], **KEY)
    assert (plan.action, plan.seq, plan.target) == (Action.REPLACE, 5, rows[3])
    assert plan.ids.previous == (ROOT, "01386030488.LAB.999.A1_4") and plan.ids.version_number == 4


def test_an_older_row_still_marked_published_is_not_live():
    # A kill between recording v2 and marking v1 replaced, then v2 deleted: nothing is live.
    rows = [row(1, 1, DocumentState.PUBLISHED), row(2, 2, DocumentState.DELETED)]
    assert current(rows) is None
    assert decide(Action.DELETE, rows, **KEY).action is Action.IGNORE
    plan = decide(Action.PUBLISH, rows, **KEY)
    assert (plan.action, plan.seq, plan.ids.version_number, plan.ids.previous) == (Action.CREATE, 3, 1, None)
    # While v2 is current, it (not v1) is what a correction replaces.
    rows = [row(1, 1, DocumentState.PUBLISHED), row(2, 2, DocumentState.PUBLISHED)]
    assert current(rows) == rows[1]
    assert decide(Action.PUBLISH, rows, **KEY).target == rows[1]


def test_pending_rows_never_count_as_live_and_seq_is_never_reused():
    rows = [row(1, 1, DocumentState.PUBLISHED), row(2, 2, DocumentState.PENDING)]
    assert current(rows) == rows[0]
    plan = decide(Action.PUBLISH, rows, **KEY)
    assert (plan.action, plan.seq, plan.target, plan.ids.version_number) == (Action.REPLACE, 3, rows[0], 2)
    assert decide(Action.DELETE, rows, **KEY).target == rows[0]
