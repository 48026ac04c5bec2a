"""The two JWTs of every gateway call (gateway.md section 3).

Both tokens are RS256, carry the signature certificate in ``x5c`` (standard
base64 of its DER) and are signed with its key, never with the
authentication one. The ``Authorization`` token holds the reserved claims;
``FSE-JWT-Signature`` adds the custom claims with the per-operation values.
A new pair, with new ``jti``, is made for every call and every retry.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from typing import Callable

import jwt

from bridge.gateway import valuesets

OPERATIONS = ("create", "replace", "metadata", "delete")


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenIdentity:
    """Who signs and who asks: fixed for an installation (configuration + signature credential)."""

    credential: object
    """A :class:`bridge.certs.Credential` (certificate, private key, cn) of the S<n># certificate."""
    audience: str
    lifetime_s: int
    operator_fiscal_code: str
    role: str
    locality: str
    organization_id: str = "090"
    organization: str = "Regione Toscana"
    application_id: str
    application_vendor: str
    application_version: str

    @classmethod
    def from_config(cls, config, credential) -> "TokenIdentity":
        return cls(credential=credential, audience=config.gateway.audience,
                   lifetime_s=config.gateway.token_lifetime_s,
                   operator_fiscal_code=config.operator.fiscal_code, role=config.operator.role,
                   locality=config.structure.locality, application_id=config.application.id,
                   application_vendor=config.application.vendor,
                   application_version=config.application.version)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRequest:
    """The per-call values of the FSE-JWT-Signature claims."""

    operation: str
    person_id: str
    """CX string ``CF^^^&root&ISO`` (see :func:`person_id`)."""
    resource_hl7_type: str | None = None
    attachment: bytes | None = None
    """The exact bytes sent as ``file`` (create, replace): hashed into attachment_hash."""
    purpose_of_use: str | None = None
    """Default: the operation's (section 3 table); "ACCESS UPDATE" for a P99 change on metadata."""
    patient_consent: bool = True


@dataclass(frozen=True, slots=True)
class Tokens:
    authorization: str
    signature: str
    jti: tuple[str, str]
    """(Authorization jti, FSE-JWT-Signature jti)."""
    claims: dict
    """The FSE-JWT-Signature payload (no secrets), for the record."""


def person_id(code: str, root: str = valuesets.FISCAL_CODE_ROOT) -> str:
    """The CX form of a patient or operator identifier: ``CF^^^&root&ISO``."""
    return f"{code}^^^&{root}&ISO"


def attachment_hash(data: bytes) -> str:
    """Lowercase hex SHA-256 of the exact bytes sent (gateway.md section 3)."""
    return hashlib.sha256(data).hexdigest()


def x5c_value(credential) -> str:
    """Standard base64 (not base64url) of the certificate's DER."""
    return base64.b64encode(credential.der).decode("ascii")


_DEFAULT_PURPOSE = {"create": "TREATMENT", "replace": "UPDATE", "metadata": "UPDATE", "delete": "UPDATE"}


def build_tokens(identity: TokenIdentity, request: TokenRequest, *, now: float,
                 new_jti: Callable[[], str] = lambda: str(uuid.uuid4())) -> Tokens:
    """Make the Authorization and FSE-JWT-Signature tokens for one attempt.

    *now* is the current time in seconds (the caller's clock); iat is its
    integer part and exp = iat + lifetime.
    """
    if request.operation not in OPERATIONS:
        raise ValueError(f"unknown gateway operation {request.operation!r}")
    action, _ = valuesets.OPERATION_CLAIMS[request.operation]
    cn = identity.credential.cn
    iat = int(now)
    reserved = {"iat": iat, "exp": iat + int(identity.lifetime_s), "aud": identity.audience,
                "sub": person_id(identity.operator_fiscal_code)}
    auth_claims = {"iss": f"auth:{cn}", "jti": new_jti(), **reserved}
    sig_claims = {
        "iss": f"integrity:{cn}", "jti": new_jti(), **reserved,
        "subject_organization_id": identity.organization_id,
        "subject_organization": identity.organization,
        "locality": identity.locality,
        "subject_role": identity.role,
        "person_id": request.person_id,
        "patient_consent": request.patient_consent,
        "purpose_of_use": request.purpose_of_use or _DEFAULT_PURPOSE[request.operation],
        "action_id": action,
        "subject_application_id": identity.application_id,
        "subject_application_vendor": identity.application_vendor,
        "subject_application_version": identity.application_version,
    }
    if request.resource_hl7_type:
        sig_claims["resource_hl7_type"] = request.resource_hl7_type
    if request.attachment is not None:
        sig_claims["attachment_hash"] = attachment_hash(request.attachment)
    headers = {"typ": "JWT", "x5c": [x5c_value(identity.credential)]}
    key = identity.credential.private_key
    return Tokens(authorization=jwt.encode(auth_claims, key, algorithm="RS256", headers=headers),
                  signature=jwt.encode(sig_claims, key, algorithm="RS256", headers=headers),
                  jti=(auth_claims["jti"], sig_claims["jti"]), claims=dict(sig_claims))
