"""Request bodies of the gateway operations (gateway.md section 4).

The pipeline fills a :class:`Submission` from the report and the journal;
:func:`create_body`, :func:`replace_body` and :func:`metadata_body` turn it
into the JSON objects the gateway parses strictly. Every value is checked
against the value sets first, so nothing outside them (and no placeholder)
ever leaves: a bad value raises :class:`~bridge.errors.InvalidValue` naming
the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.errors import InvalidValue
from bridge.gateway import valuesets
from bridge.gateway.tokens import person_id
from bridge.model import DocumentType


@dataclass(frozen=True, slots=True, kw_only=True)
class Submission:
    """Everything one gateway call says about a document (filled by the pipeline)."""

    document_id: str
    """identificativoDoc: ``2.16.840.1.113883.2.9.2.90.4.4^<code>.<TYPE>.<CODREP>.<local>`` (section 5)."""
    repository_id: str
    """identificativoRep: ``2.16.840.1.113883.2.9.2.90.4.5.<CODREP>``."""
    document_type: DocumentType
    facility_type: str
    """tipologiaStruttura (set A): Ospedale for inpatient stays, else Territorio."""
    practice_setting: str
    """assettoOrganizzativo (set F), e.g. AD_PSC100."""
    clinical_activity: str
    """tipoAttivitaClinica (set C), e.g. ERP, DIS."""
    submission_id: str
    """identificativoSottomissione: ``2.16.840.1.113883.2.9.2.90.4.3.<n>``, new for every call."""
    patient_id: str
    """The patient's fiscal code (or STP/ENI/TEAM code) for the person_id claim."""
    patient_root: str = valuesets.FISCAL_CODE_ROOT
    class_code: str | None = None
    """tipoDocumentoLivAlto (set B); default: the document type's declared class_code."""
    administrative_request: tuple[str, ...] = ()
    """Set D, e.g. ("SSN",)."""
    start: str | None = None
    """dataInizioPrestazione, yyyyMMddHHmmss local time."""
    end: str | None = None
    """dataFinePrestazione, yyyyMMddHHmmss."""
    event_codes: tuple[str, ...] = ()
    """attiCliniciRegoleAccesso (set E): only real ones (P99 on the patient's request)."""
    descriptions: tuple[str, ...] = ()
    """``CODE^Text^OID`` with an OID of set G."""
    conservation: str | None = None
    """conservazioneANorma."""
    workflow_instance_id: str | None = None
    """Replace only: the workflowInstanceId of the document being replaced, when known."""

    @property
    def person_id(self) -> str:
        return person_id(self.patient_id, self.patient_root)

    @property
    def effective_class_code(self) -> str:
        return self.class_code or self.document_type.class_code

    @property
    def obscuring(self) -> bool:
        """True when the event codes change the document's visibility (P99/P97/P98/P00)."""
        return any(code in valuesets.OBSCURING_CODES for code in self.event_codes)


def _bad(field: str, why: str) -> InvalidValue:
    return InvalidValue(f"gateway request field {field}: {why}")


def check_submission(sub: Submission) -> None:
    """Refuse values the gateway would refuse (value sets, formats, lengths: section 4, 5)."""
    if not isinstance(sub.document_type, DocumentType):
        raise _bad("document_type", "must be a DocumentType")
    if sub.document_type.name not in valuesets.TOSCANA_DOCUMENT_TYPES:
        raise _bad("identificativoDoc", f"the Region's identifiers know the document types "
                   f"{', '.join(valuesets.TOSCANA_DOCUMENT_TYPES)}: a {sub.document_type.name} cannot be published")
    doc_id = sub.document_id or ""
    if not 0 < len(doc_id) <= 256 or "^" not in doc_id or not doc_id.rsplit("^", 1)[1]:
        raise _bad("identificativoDoc", "must hold '^' followed by the document's own id (max 256)")
    if "/" in doc_id:
        raise _bad("identificativoDoc", "must not contain '/'")
    if not valuesets.REPOSITORY_ID.match(sub.repository_id or "") or len(sub.repository_id) > 100:
        raise _bad("identificativoRep", "must be 2.16.840.1.113883.2.9.2.<region>.4.5.<repository>")
    checks = (("tipologiaStruttura", sub.facility_type, valuesets.FACILITY_TYPES),
              ("tipoDocumentoLivAlto", sub.effective_class_code, valuesets.CLASS_CODES),
              ("tipoAttivitaClinica", sub.clinical_activity, valuesets.CLINICAL_ACTIVITIES))
    for field, value, allowed in checks:
        if value not in allowed:
            raise _bad(field, f"{value!r} is not one of {', '.join(sorted(allowed))}")
    if not valuesets.PRACTICE_SETTING.match(sub.practice_setting or ""):
        raise _bad("assettoOrganizzativo", f"{sub.practice_setting!r} is not AD_PSCnnn")
    if not valuesets.TOSCANA_SUBMISSION_ID.match(sub.submission_id or ""):
        raise _bad("identificativoSottomissione", "must be 2.16.840.1.113883.2.9.2.90.4.3.<n>")
    for value in sub.administrative_request:
        if value not in valuesets.ADMINISTRATIVE_REQUESTS:
            raise _bad("administrativeRequest", f"{value!r} is not one of "
                       f"{', '.join(sorted(valuesets.ADMINISTRATIVE_REQUESTS))}")
    for field, value in (("dataInizioPrestazione", sub.start), ("dataFinePrestazione", sub.end)):
        if value is not None and not valuesets.DATE.match(value):
            raise _bad(field, "must be yyyyMMddHHmmss")
    if len(sub.event_codes) > 100 or len(sub.descriptions) > 100:
        raise _bad("attiCliniciRegoleAccesso/descriptions", "at most 100 items")
    for code in sub.event_codes:
        if code not in valuesets.EVENT_CODES and not valuesets.EVENT_CODE_OPEN.match(code):
            raise _bad("attiCliniciRegoleAccesso", f"{code!r} is not an event code")
    for text in sub.descriptions:
        if not description_ok(text):
            raise _bad("descriptions", "each must be CODE^Text^OID with a catalogue OID")
    if sub.workflow_instance_id is not None and len(sub.workflow_instance_id) > 256:
        raise _bad("workflowInstanceId", "at most 256 characters")
    if not sub.patient_id:
        raise _bad("person_id", "the patient identifier is empty")


def description_ok(text: str) -> bool:
    """``CODE^Text^OID`` with an OID of set G (section 4)."""
    parts = text.split("^") if isinstance(text, str) else []
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return False
    return parts[2] in valuesets.DESCRIPTION_OIDS or bool(valuesets.REGIONAL_DESCRIPTION_OID.match(parts[2]))


def _common(sub: Submission) -> dict:
    body = {"tipologiaStruttura": sub.facility_type}
    if sub.event_codes:
        body["attiCliniciRegoleAccesso"] = list(sub.event_codes)
    body["tipoDocumentoLivAlto"] = sub.effective_class_code
    body["assettoOrganizzativo"] = sub.practice_setting
    if sub.start:
        body["dataInizioPrestazione"] = sub.start
    if sub.end:
        body["dataFinePrestazione"] = sub.end
    if sub.conservation:
        body["conservazioneANorma"] = sub.conservation
    body["tipoAttivitaClinica"] = sub.clinical_activity
    body["identificativoSottomissione"] = sub.submission_id
    if sub.descriptions:
        body["descriptions"] = list(sub.descriptions)
    if sub.administrative_request:
        body["administrativeRequest"] = list(sub.administrative_request)
    return body


def create_body(sub: Submission) -> dict:
    """ValidateAndCreateDTO: always ``CDA`` and ``ATTACHMENT`` (pdf.md section 1)."""
    check_submission(sub)
    return {"healthDataFormat": "CDA", "mode": "ATTACHMENT", **_common(sub),
            "identificativoDoc": sub.document_id, "identificativoRep": sub.repository_id}


def replace_body(sub: Submission) -> dict:
    """PublicationUpdateReqDTO: the create fields (new identificativoDoc) + workflowInstanceId."""
    body = create_body(sub)
    if sub.workflow_instance_id:
        body["workflowInstanceId"] = sub.workflow_instance_id
    return body


def metadata_body(sub: Submission) -> dict:
    """PublicationMetadataReqDTO: no identificativoDoc/Rep, mode or healthDataFormat."""
    check_submission(sub)
    return _common(sub)
