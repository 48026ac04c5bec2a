"""The wrong-patient plan (gateway.md section 9) as bridge.publish.plan decides it, on the rows
each step of the plan leaves behind: deciding again after any step completes the same plan."""

from __future__ import annotations

from bridge.journal import Document, DocumentState
from bridge.model import Action
from bridge.publish.plan import decide

ROOT = "2.16.840.1.113883.2.9.2.90.4.4"
KEY = dict(structure_cf="01386030488", doc_type="LAB", repository="999", accession="A1")
A, B = "RMSLSO31M04Z404R", "MNTMRA03M71C615V"


def row(seq: int, version: int, state: str, *, set_seq: int = 1) -> Document:
    return Document(structure="01386030488", doc_type="LAB", accession="A1", seq=seq,
                    document_id=f"{ROOT}^01386030488.LAB.999.A1_{seq}",
                    set_id=f"{ROOT}^01386030488.LAB.999.A1_{set_seq}", version=version, state=state,
                    content_hash="h", message_id=1)


def test_a_new_version_for_another_patient_deletes_the_live_one_then_creates_a_new_set():
    rows = [row(1, 1, DocumentState.REPLACED), row(2, 2, DocumentState.PUBLISHED)]
    plan = decide(Action.PUBLISH, rows, patient=B, live_patient=A, **KEY)
    assert plan.action is Action.CREATE and plan.wrong_patient and plan.deletes == rows[1]
    assert plan.target is None, "never a replace across patients"
    ids = plan.ids
    assert (plan.seq, ids.version_number, ids.previous) == (3, 1, None)
    assert ids.set_extension == ids.extension == "01386030488.LAB.999.A1_3"


def test_after_the_delete_deciding_again_is_the_same_create():
    before = decide(Action.PUBLISH, [row(1, 1, DocumentState.PUBLISHED)], patient=B, live_patient=A, **KEY)
    after = decide(Action.PUBLISH, [row(1, 1, DocumentState.DELETED)], patient=B, **KEY)
    assert after.action is Action.CREATE and not after.wrong_patient
    assert (after.seq, after.ids) == (before.seq, before.ids)


def test_after_the_create_left_the_resend_uses_the_same_ids():
    created = row(2, 1, DocumentState.PENDING, set_seq=2)
    plan = decide(Action.PUBLISH, [row(1, 1, DocumentState.DELETED), created], patient=B, uncertain=created, **KEY)
    assert plan.action is Action.CREATE and plan.resumed == created and plan.target is None
    assert plan.ids.document_id == created.document_id and plan.ids.version_number == 1


def test_the_same_patient_or_an_unknown_one_is_an_ordinary_replace():
    rows = [row(1, 1, DocumentState.PUBLISHED)]
    for patient, live_patient in ((A, A), (A, None), (None, A)):
        plan = decide(Action.PUBLISH, rows, patient=patient, live_patient=live_patient, **KEY)
        assert plan.action is Action.REPLACE and not plan.wrong_patient and plan.target == rows[0]
