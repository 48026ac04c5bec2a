"""Hand-made requests for the simulator: a correct baseline that a test breaks in exactly one way.

The baseline is written here from gateway.md sections 3-5 and the official OpenAPI, not by the
client's builders (bridge.gateway.bodies, bridge.gateway.tokens): the simulator's tests must not
take the client's word for what a valid request is. test_contract checks the baseline bodies
against the OpenAPI's schemas.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import jwt

from gateway_kit import PATIENT, doc_id

PATHS = {"create": ("POST", "documents/validate-and-create"), "replace": ("PUT", "documents/{id}"),
         "metadata": ("PUT", "documents/{id}/metadata"), "delete": ("DELETE", "documents/{id}")}

REPOSITORY = "2.16.840.1.113883.2.9.2.90.4.5.999"
LAB_TYPE = "('11502-2^^2.16.840.1.113883.6.1')"
CF_ROOT = "2.16.840.1.113883.2.9.4.3.2"
#: Section 3, per operation: action_id and purpose_of_use.
CLAIMS_OF = {"create": ("CREATE", "TREATMENT"), "replace": ("UPDATE", "UPDATE"),
             "metadata": ("UPDATE", "UPDATE"), "delete": ("DELETE", "UPDATE")}


def submission_id() -> str:
    """Section 5: a fresh identificativoSottomissione (a 96-bit random integer under the Region's arc)."""
    return f"2.16.840.1.113883.2.9.2.90.4.3.{secrets.randbits(96) | 1 << 95}"


def metadata_body(event_codes=()) -> dict:
    """PublicationMetadataReqDTO for a LAB report (section 4's filling rules)."""
    body = {"tipologiaStruttura": "Territorio", "tipoDocumentoLivAlto": "REF",
            "assettoOrganizzativo": "AD_PSC100", "dataInizioPrestazione": "20260301083000",
            "dataFinePrestazione": "20260302120000", "tipoAttivitaClinica": "ERP",
            "identificativoSottomissione": submission_id(), "administrativeRequest": ["SSN"]}
    if event_codes:
        body["attiCliniciRegoleAccesso"] = list(event_codes)
    return body


def create_body(document_id: str, event_codes=()) -> dict:
    """ValidateAndCreateDTO (PublicationUpdateReqDTO for a replace: the same fields, the new id)."""
    return {"healthDataFormat": "CDA", "mode": "ATTACHMENT", **metadata_body(event_codes),
            "identificativoDoc": document_id, "identificativoRep": REPOSITORY}


def cx(code: str) -> str:
    return f"{code}^^^&{CF_ROOT}&ISO"


def under_base(response: httpx.Response) -> str:
    """The path of the request that got *response*, under the simulator's /gateway/v2/ base."""
    return "/" + response.request.url.raw_path.decode("ascii").split("/gateway/v2/", 1)[1]


@dataclass
class Spec:
    """Everything a request is made of; tests change one field."""

    op: str
    path_id: str | None
    body: dict | None
    pdf: bytes | None
    auth_claims: dict
    sig_claims: dict
    auth_headers: dict = field(default_factory=dict)
    sig_headers: dict = field(default_factory=dict)
    auth_token: str | None = None
    """Overrides the encoded Authorization token ("" = no header)."""
    sig_token: str | None = None
    """Overrides the encoded FSE-JWT-Signature ("" = no header)."""
    auth_key: object = None
    sig_key: object = None
    body_text: str | None = None
    body_as_file: bool = False
    send_file: bool = True
    content_type: str | None = None


class RawSender:
    def __init__(self, handle, config, credential, pki):
        self.handle = handle
        self.config = config
        self.credential = credential
        self.context = ssl.create_default_context(cafile=str(pki.ca_cert))
        self.context.load_cert_chain(str(pki.auth_cert), str(pki.auth_key))

    def spec(self, op: str, pdf: bytes | None = None, *, document_id: str | None = None, event_codes=(),
             path_id: str | None = None, now: float | None = None) -> Spec:
        """A valid request of *op*: for replace, *document_id* is the new id, the path the old one."""
        document_id = document_id or doc_id()
        body = {"create": lambda: create_body(document_id, event_codes),
                "replace": lambda: create_body(document_id, event_codes),
                "metadata": lambda: metadata_body(event_codes), "delete": lambda: None}[op]()
        iat = int(now or time.time())
        cn, config = self.credential.cn, self.config
        reserved = {"iat": iat, "exp": iat + 300, "aud": config.gateway.audience,
                    "sub": cx(config.operator.fiscal_code)}
        action, purpose = CLAIMS_OF[op]
        sig_claims = {"iss": f"integrity:{cn}", "jti": str(uuid.uuid4()), **reserved,
                      "subject_organization_id": "090", "subject_organization": "Regione Toscana",
                      "locality": config.structure.locality, "subject_role": config.operator.role,
                      "person_id": cx(PATIENT), "patient_consent": True, "purpose_of_use": purpose,
                      "action_id": action, "resource_hl7_type": LAB_TYPE,
                      "subject_application_id": config.application.id,
                      "subject_application_vendor": config.application.vendor,
                      "subject_application_version": config.application.version}
        if op in ("create", "replace"):
            sig_claims["attachment_hash"] = hashlib.sha256(pdf or b"").hexdigest()
        if op != "create" and path_id is None:
            path_id = doc_id()
        return Spec(op=op, path_id=path_id, body=body, pdf=pdf if op in ("create", "replace") else None,
                    auth_claims={"iss": f"auth:{cn}", "jti": str(uuid.uuid4()), **reserved},
                    sig_claims=sig_claims)

    def encode(self, claims: dict, *, key=None, extra_headers: dict | None = None) -> str:
        headers = {"typ": "JWT", "x5c": [base64.b64encode(self.credential.der).decode("ascii")],
                   **(extra_headers or {})}
        headers = {k: v for k, v in headers.items() if v is not None}
        return jwt.encode(claims, key or self.credential.private_key, algorithm="RS256", headers=headers)

    async def send(self, spec: Spec, template: str | None = None) -> httpx.Response:
        """Send *spec* to its operation's path, or to *template* (``{id}`` for the path id)."""
        method, template = PATHS[spec.op][0], template or PATHS[spec.op][1]
        url = self.handle.url + template.replace("{id}", quote(spec.path_id or "", safe=""))
        headers = {"Accept": "application/json"}
        auth = spec.auth_token if spec.auth_token is not None else self.encode(
            spec.auth_claims, key=spec.auth_key, extra_headers=spec.auth_headers)
        sig = spec.sig_token if spec.sig_token is not None else self.encode(
            spec.sig_claims, key=spec.sig_key, extra_headers=spec.sig_headers)
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        if sig:
            headers["FSE-JWT-Signature"] = sig
        kwargs = {}
        text = spec.body_text if spec.body_text is not None else (
            json.dumps(spec.body) if spec.body is not None else None)
        if spec.op in ("create", "replace"):
            files = {}
            data = {}
            if spec.body_as_file:
                files["requestBody"] = ("body.json", text.encode(), "application/json")
            elif text is not None:
                data["requestBody"] = text
            if spec.send_file:
                files["file"] = ("x.pdf", spec.pdf or b"", "application/pdf")
            kwargs = {"data": data, "files": files or {"dummy": ("d", b"", "text/plain")}}
        elif spec.op == "metadata":
            kwargs = {"content": text.encode()}
            headers["Content-Type"] = spec.content_type or "application/json"
        async with httpx.AsyncClient(verify=self.context, timeout=10) as http:
            return await http.request(method, url, headers=headers, **kwargs)
