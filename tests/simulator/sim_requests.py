"""Hand-made requests for the simulator: a correct baseline that a test breaks in exactly one way."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import jwt

from bridge.gateway import bodies, tokens
from bridge.model import DocumentType

from gateway_kit import doc_id, submission

PATHS = {"create": ("POST", "documents/validate-and-create"), "replace": ("PUT", "documents/{id}"),
         "metadata": ("PUT", "documents/{id}/metadata"), "delete": ("DELETE", "documents/{id}")}


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
        self.identity = tokens.TokenIdentity.from_config(config, credential)
        self.context = ssl.create_default_context(cafile=str(pki.ca_cert))
        self.context.load_cert_chain(str(pki.auth_cert), str(pki.auth_key))

    def spec(self, op: str, pdf: bytes | None = None, *, sub=None, path_id: str | None = None,
             now: float | None = None) -> Spec:
        import time

        sub = sub or submission()
        body = {"create": bodies.create_body, "replace": bodies.replace_body,
                "metadata": bodies.metadata_body, "delete": lambda s: None}[op](sub)
        made = tokens.build_tokens(self.identity, tokens.TokenRequest(
            operation=op, person_id=sub.person_id, resource_hl7_type=DocumentType.LAB.resource_hl7_type,
            attachment=pdf if op in ("create", "replace") else None), now=now or time.time())
        decode = lambda t: jwt.decode(t, options={"verify_signature": False})  # noqa: E731
        if op != "create" and path_id is None:
            path_id = doc_id()
        return Spec(op=op, path_id=path_id, body=body, pdf=pdf if op in ("create", "replace") else None,
                    auth_claims=decode(made.authorization), sig_claims=decode(made.signature))

    def encode(self, claims: dict, *, key=None, extra_headers: dict | None = None) -> str:
        headers = {"typ": "JWT", "x5c": [tokens.x5c_value(self.credential)], **(extra_headers or {})}
        headers = {k: v for k, v in headers.items() if v is not None}
        return jwt.encode(claims, key or self.credential.private_key, algorithm="RS256", headers=headers)

    async def send(self, spec: Spec) -> httpx.Response:
        method, template = PATHS[spec.op]
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
