"""The accreditation run's test message: an ORU^R01 (v2.5, UTF-8) built from the type's template
file, templates/message/<TYPE>.hl7.j2 (never read from examples or tests)."""

from __future__ import annotations

import datetime as dt

import jinja2
from stdnum.it import codicefiscale

from bridge.model import DocumentType

#: The test physician of the document: a stage test CF too (never a real person).
PHYSICIAN = {"cf": "MNTMRA03M71C615V", "family": "Prova", "given": "Medico"}

_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("bridge.accredit", "templates/message"),
                                autoescape=False, undefined=jinja2.StrictUndefined,
                                trim_blocks=True, lstrip_blocks=True)


def test_message(*, doc_type: str, facility: str, patient: str, accession: str, control_id: str,
                 status: str, when: dt.datetime, corrected_value: bool = False) -> bytes:
    """An ORU^R01 (v2.5, UTF-8) for *patient* with one result; *status* F, C or X (OBR-25)."""
    declared = DocumentType[doc_type]
    text = _TEMPLATES.get_template(f"{doc_type}.hl7.j2").render(
        facility=facility, patient=patient, accession=accession, control_id=control_id, status=status,
        loinc=declared.loinc, title=declared.title, physician=PHYSICIAN,
        # With the offset: the mapping turns the times into the structure's local time.
        stamp=_hl7_time(when), collected=_hl7_time(when - dt.timedelta(hours=2)),
        admitted=_hl7_time(when - dt.timedelta(days=3)),
        # Birth date and sex as the test CF encodes them (a consistent fictitious patient).
        birth=codicefiscale.get_birth_date(patient).strftime("%Y%m%d"), sex=codicefiscale.get_gender(patient),
        result_status="C" if status == "C" else "F", corrected=corrected_value,
        note="versione corretta" if corrected_value else "prima versione")
    segments = [line for line in text.splitlines() if line.strip()]
    return ("\r".join(segments) + "\r").encode("utf-8")


def _hl7_time(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S%z")
