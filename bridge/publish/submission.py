"""The gateway request's metadata (a :class:`~bridge.gateway.bodies.Submission`) for a report,
and its journal form (``submission.json``): built here once for the pipeline, the operator's
metadata update and the accreditation run (gateway.md section 4, bridge filling rules)."""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

from bridge.gateway.bodies import Submission
from bridge.gateway.identifiers import repository_id
from bridge.gateway.valuesets import FISCAL_CODE_ROOT, HIDING_CODES
from bridge.journal import ArtifactName
from bridge.model import DocumentType, Report


def build_submission(report: Report, document_id: str, config, submission_id: str) -> Submission:
    """The gateway request's metadata for *report*.

    attiCliniciRegoleAccesso: the patient's own restriction (P99 when the message asks
    to hide the report, Report.access_policies), so the create itself carries it: a
    report is never visible between its creation and a later metadata update.
    *submission_id*: fresh for every call (bridge.gateway.identifiers.new_submission_id).
    """
    code, root = person_code(report.patient.person_id)
    structure = config.structure
    return Submission(
        document_id=document_id,
        repository_id=repository_id(structure.fiscal_code, structure.repository, structure.repository_index),
        document_type=report.doc_type, facility_type=report.tipologia_struttura,
        practice_setting=report.practice_setting, clinical_activity=report.clinical_activity,
        submission_id=submission_id, patient_id=code, patient_root=root,
        class_code=report.document_class, administrative_request=(report.billing,),
        start=report.service_start_local or None, end=report.service_end_local or None,
        event_codes=tuple(report.access_policies))


def keep_hidden(sub: Submission, previous: Submission) -> Submission:
    """*sub* (a replacement, the same patient's) with the hiding codes (P99, P97, P98) the
    replaced version carries now: a report the patient asked to hide stays hidden when it
    is corrected. Never across patients: the wrong-patient plan creates, and the new
    document carries only its own patient's restriction."""
    hidden = [code for code in previous.event_codes if code in HIDING_CODES]
    if not hidden:
        return sub
    return dataclasses.replace(sub, event_codes=tuple(dict.fromkeys((*sub.event_codes, *hidden))))


def current_submission(artifacts: Sequence, document_id: str) -> Submission | None:
    """A document's current submission among the artifacts of the message that published it:
    the publication's, or its latest metadata update the gateway took (both recorded as
    ``submission.json`` there, and nothing else is named so there)."""
    for artifact in reversed(artifacts):
        if artifact.name == ArtifactName.SUBMISSION and artifact.content:
            record = json.loads(artifact.content)
            if record.get("document_id") == document_id:
                return submission_from_record(record)
    return None


def submission_record(sub: Submission) -> dict:
    record = dataclasses.asdict(sub)
    record["document_type"] = sub.document_type.name
    return record


def submission_from_record(record: dict) -> Submission:
    values = dict(record)
    values["document_type"] = DocumentType[values["document_type"]]
    for name in ("administrative_request", "event_codes", "descriptions"):
        values[name] = tuple(values.get(name) or ())
    return Submission(**values)


def person_code(person_id: str) -> tuple[str, str]:
    """(code, root) of a report's person_id: a bare CF, or ``code^^^&root&ISO``."""
    if "^" not in person_id:
        return person_id, FISCAL_CODE_ROOT
    code, _, rest = person_id.partition("^")
    parts = rest.split("&")
    return code, parts[1] if len(parts) > 1 and parts[1] else FISCAL_CODE_ROOT
