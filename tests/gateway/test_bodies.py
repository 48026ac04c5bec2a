"""Request bodies: value sets of gateway.md section 4, never placeholders."""

import pytest

from bridge.errors import InvalidValue
from bridge.gateway import bodies
from bridge.model import DocumentType

from gateway_kit import doc_id, submission


def test_create_body_fields():
    body = bodies.create_body(submission(submission_id="2.16.840.1.113883.2.9.2.90.4.3.1"))
    assert body == {
        "healthDataFormat": "CDA", "mode": "ATTACHMENT", "tipologiaStruttura": "Territorio",
        "tipoDocumentoLivAlto": "REF", "assettoOrganizzativo": "AD_PSC100",
        "dataInizioPrestazione": "20260301083000", "dataFinePrestazione": "20260302120000",
        "tipoAttivitaClinica": "ERP", "identificativoSottomissione": "2.16.840.1.113883.2.9.2.90.4.3.1",
        "administrativeRequest": ["SSN"], "identificativoDoc": doc_id(),
        "identificativoRep": "2.16.840.1.113883.2.9.2.90.4.5.999"}


def test_replace_body_has_new_id_and_workflow():
    body = bodies.replace_body(submission(document_id=doc_id("A26-00412_2"), workflow_instance_id="wif-1"))
    assert body["identificativoDoc"] == doc_id("A26-00412_2")
    assert body["workflowInstanceId"] == "wif-1"


def test_metadata_body_leaves_out_ids_and_mode():
    body = bodies.metadata_body(submission(event_codes=("P99",)))
    for absent in ("identificativoDoc", "identificativoRep", "mode", "healthDataFormat"):
        assert absent not in body
    assert body["attiCliniciRegoleAccesso"] == ["P99"]


def test_ldo_pairs_with_ldo_class():
    body = bodies.create_body(submission(document_type=DocumentType.LDO, facility_type="Ospedale",
                                         clinical_activity="DIS", document_id=doc_id(kind="LDO")))
    assert body["tipoDocumentoLivAlto"] == "LDO"


@pytest.mark.parametrize("field, value, named", [
    ("facility_type", "Clinica", "tipologiaStruttura"),
    ("practice_setting", "string", "assettoOrganizzativo"),
    ("clinical_activity", "aaa", "tipoAttivitaClinica"),
    ("administrative_request", ("aaa",), "administrativeRequest"),
    ("submission_id", "2.16.840.1.113883.2.9.2.90.999", "identificativoSottomissione"),
    ("document_id", "no-caret", "identificativoDoc"),
    ("repository_id", " 2.16.840.1.113883.2.9.2.90.4.5.999", "identificativoRep"),
    ("start", "2026-03-01", "dataInizioPrestazione"),
    ("event_codes", ("XYZ",), "attiCliniciRegoleAccesso"),
    ("descriptions", ("A^b^1.2.3",), "descriptions"),
    ("class_code", "LET", "tipoDocumentoLivAlto"),
])
def test_bad_values_are_refused_naming_the_field(field, value, named):
    with pytest.raises(InvalidValue) as info:
        bodies.create_body(submission(**{field: value}))
    assert named in str(info.value)
