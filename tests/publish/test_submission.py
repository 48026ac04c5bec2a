"""bridge.publish.submission: the stored submission a later call starts from, and what a
replacement keeps of the patient's restriction (pure functions)."""

from __future__ import annotations

import json

from bridge.gateway.bodies import Submission
from bridge.gateway.identifiers import new_submission_id
from bridge.journal import Artifact
from bridge.model import DocumentType
from bridge.publish.submission import current_submission, keep_hidden, submission_record

DOC = "2.16.840.1.113883.2.9.2.90.4.4^01386030488.LAB.999.A1_1"
OTHER = "2.16.840.1.113883.2.9.2.90.4.4^01386030488.LAB.999.A1_2"


def sub(document_id: str = DOC, **values) -> Submission:
    return Submission(document_id=document_id, repository_id="2.16.840.1.113883.2.9.2.90.4.5.999",
                      document_type=DocumentType.LAB, facility_type="Territorio", practice_setting="AD_PSC100",
                      clinical_activity="ERP", submission_id=new_submission_id(), patient_id="RMSLSO31M04Z404R",
                      **values)


def artifact(name: str, value) -> Artifact:
    content = json.dumps(submission_record(value)).encode() if isinstance(value, Submission) else value
    return Artifact(message_id=1, stage="submit", name=name, content=content, at="")


def test_the_latest_submission_of_the_document_is_current():
    published, updated = sub(), sub(event_codes=("P99",))
    artifacts = [artifact("submission.json", published), artifact("submission.json", sub(OTHER)),
                 artifact("metadata-request.json", sub(event_codes=("P00",))),
                 artifact("submission.json", updated), artifact("submission.json", sub(OTHER))]
    assert current_submission(artifacts, DOC) == updated
    assert current_submission(artifacts[:1], OTHER) is None
    assert current_submission([artifact("submission.json", b"")], DOC) is None   # purged


def test_a_replacement_keeps_the_hiding_codes_only():
    kept = keep_hidden(sub(OTHER), sub(event_codes=("P99", "P97")))
    assert kept.event_codes == ("P99", "P97")
    assert keep_hidden(sub(OTHER, event_codes=("P99",)), sub(event_codes=("P99",))).event_codes == ("P99",)
    assert keep_hidden(sub(OTHER), sub(event_codes=("P00",))).event_codes == ()
