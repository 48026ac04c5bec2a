"""The request schema and the paths of the simulated gateway (gateway.md sections 1, 4).

Written from the official OpenAPI (``swagger_gtw.yaml``: ValidateAndCreateDTO,
PublicationUpdateReqDTO, PublicationMetadataReqDTO) and gateway.md, not from
the client's configuration or builders; tests/simulator/test_contract.py
checks the fields, required fields, lengths, item limits, content types and
paths against the OpenAPI.
"""

from __future__ import annotations

from bridge.simulator import valuesets

_COMMON_FIELDS = frozenset({"tipologiaStruttura", "attiCliniciRegoleAccesso", "tipoDocumentoLivAlto",
                            "assettoOrganizzativo", "dataInizioPrestazione", "dataFinePrestazione",
                            "conservazioneANorma", "tipoAttivitaClinica", "identificativoSottomissione",
                            "descriptions", "administrativeRequest"})
_DOCUMENT_FIELDS = frozenset({"healthDataFormat", "mode", "identificativoDoc", "identificativoRep"})

#: The properties of each operation's body (additionalProperties: false).
BODY_FIELDS = {
    "create": _COMMON_FIELDS | _DOCUMENT_FIELDS,
    "replace": _COMMON_FIELDS | _DOCUMENT_FIELDS | {"workflowInstanceId"},
    "metadata": _COMMON_FIELDS,
}

_REQUIRED_COMMON = frozenset({"tipologiaStruttura", "tipoDocumentoLivAlto", "assettoOrganizzativo",
                              "tipoAttivitaClinica", "identificativoSottomissione"})
#: The OpenAPI's required fields (DSP enforces fewer on metadata; the OpenAPI rules).
REQUIRED_FIELDS = {
    "create": _REQUIRED_COMMON | {"identificativoDoc", "identificativoRep"},
    "replace": _REQUIRED_COMMON | {"identificativoDoc", "identificativoRep"},
    "metadata": _REQUIRED_COMMON,
}

#: String fields with a closed value set.
ENUMS = {
    "tipologiaStruttura": valuesets.FACILITY_TYPES,
    "tipoDocumentoLivAlto": valuesets.CLASS_CODES,
    "assettoOrganizzativo": valuesets.PRACTICE_SETTINGS,
    "tipoAttivitaClinica": valuesets.CLINICAL_ACTIVITIES,
    "healthDataFormat": valuesets.HEALTH_DATA_FORMATS,
    "mode": valuesets.MODES,
}
#: Array fields: the value set of their items (None: checked per field, sets E and G).
ARRAY_ITEMS = {"attiCliniciRegoleAccesso": None, "descriptions": None,
               "administrativeRequest": valuesets.ADMINISTRATIVE_REQUESTS}

MAX_LENGTHS = {"identificativoDoc": 256, "identificativoRep": 100, "dataInizioPrestazione": 100,
               "dataFinePrestazione": 100, "conservazioneANorma": 100, "identificativoSottomissione": 100,
               "workflowInstanceId": 256}
MAX_ITEMS = {"attiCliniciRegoleAccesso": 100, "descriptions": 100, "administrativeRequest": 1000}
#: Free-text array items (event codes, descriptions) are at most this long.
ITEM_MAX_LENGTHS = {"attiCliniciRegoleAccesso": 1000, "descriptions": 1000}

#: The largest file part the gateway takes: the dispatcher sets no multipart limit, so Spring
#: Boot's default max-file-size (1 MB = 1,048,576 bytes) applies (pdf.md section 1).
MAX_FILE_BYTES = 1024 * 1024

#: The path id (idDoc): 1..256 characters.
PATH_ID_MAX = 256

#: How each operation carries its body: multipart (requestBody + file parts) or JSON.
CONTENT_TYPES = {"create": "multipart/form-data", "replace": "multipart/form-data",
                 "metadata": "application/json"}
MULTIPART_PARTS = frozenset({"requestBody", "file"})

#: The routes served under the base path: (method, path template, operation, source).
#: source: the OpenAPI operationId, or "RT" for a path the Region documents beyond it.
ROUTES = (
    ("POST", "documents/validate-and-create", "create", "validateAndCreate"),
    ("PUT", "documents/{idDoc}", "replace", "replace_1"),
    ("PUT", "documents/{idDoc}/metadata-iti-57", "metadata", "updateMetadataIti_57"),
    ("DELETE", "documents/{idDoc}", "delete", "delete"),
    # RT, IG and DSP's /metadata (the OpenAPI lists only the transitional metadata-iti-57).
    ("PUT", "documents/{idDoc}/metadata", "metadata", "RT"),
    # RT section 4.2's production delete URL has no documents/ (gateway.md section 1: likely a typo,
    # but the Region wrote it, and the client lets an installation configure it).
    ("DELETE", "{idDoc}", "delete", "RT"),
)

#: Base paths: the Region's (gateway.md section 1; the simulator's default) and the national one.
REGION_BASE_PATH = "/gateway/v2/"
NATIONAL_BASE_PATH = "/govway/rest/in/FSE/gateway/v1/"
