"""The two JWTs decode to exactly the claims of gateway.md section 3, per operation."""

import base64
import hashlib

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from bridge.gateway import tokens
from bridge.model import DocumentType

from gateway_kit import OPERATOR, PATIENT

AUDIENCE = "https://modipa-val.fse.salute.gov.it/govway/rest/in/FSE/gateway/v1"
LOCALITY = "LAB ROSSI^^^^^&2.16.840.1.113883.2.9.4.1.3&ISO^^^^090201123456"
PERSON = f"{PATIENT}^^^&2.16.840.1.113883.2.9.4.3.2&ISO"
SUB = f"{OPERATOR}^^^&2.16.840.1.113883.2.9.4.3.2&ISO"
LAB_TYPE = "('11502-2^^2.16.840.1.113883.6.1')"


@pytest.fixture
def identity(sign_credential):
    return tokens.TokenIdentity(credential=sign_credential, audience=AUDIENCE, lifetime_s=300,
                                operator_fiscal_code=OPERATOR, role="AAS", locality=LOCALITY,
                                application_id="fse-bridge", application_vendor="Pipo House",
                                application_version="1.0")


def decode(token, credential):
    return jwt.decode(token, credential.certificate.public_key(), algorithms=["RS256"],
                      audience=AUDIENCE, options={"verify_exp": False, "verify_iat": False})


def expected_custom(action, purpose):
    return {"subject_organization_id": "090", "subject_organization": "Regione Toscana",
            "locality": LOCALITY, "subject_role": "AAS", "person_id": PERSON, "patient_consent": True,
            "purpose_of_use": purpose, "action_id": action, "subject_application_id": "fse-bridge",
            "subject_application_vendor": "Pipo House", "subject_application_version": "1.0"}


@pytest.mark.parametrize("operation, action, purpose, with_file", [
    ("create", "CREATE", "TREATMENT", True),
    ("replace", "UPDATE", "UPDATE", True),
    ("metadata", "UPDATE", "UPDATE", False),
    ("delete", "DELETE", "UPDATE", False),
])
def test_claims_per_operation(identity, sign_credential, operation, action, purpose, with_file):
    pdf = b"%PDF-1.7 exact bytes"
    request = tokens.TokenRequest(operation=operation, person_id=PERSON, resource_hl7_type=LAB_TYPE,
                                  attachment=pdf if with_file else None)
    made = tokens.build_tokens(identity, request, now=1_780_000_000.75)
    cn = sign_credential.cn
    assert cn.startswith("S1#090#01386030488")

    for token in (made.authorization, made.signature):
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "RS256" and header["typ"] == "JWT"
        # standard base64 (not base64url) of the signature certificate's DER
        assert base64.b64decode(header["x5c"][0], validate=True) == sign_credential.certificate.public_bytes(
            serialization.Encoding.DER)

    auth = decode(made.authorization, sign_credential)
    assert auth == {"iss": f"auth:{cn}", "iat": 1_780_000_000, "exp": 1_780_000_300, "jti": made.jti[0],
                    "aud": AUDIENCE, "sub": SUB}
    sig = decode(made.signature, sign_credential)
    expected = {"iss": f"integrity:{cn}", "iat": 1_780_000_000, "exp": 1_780_000_300, "jti": made.jti[1],
                "aud": AUDIENCE, "sub": SUB, **expected_custom(action, purpose),
                "resource_hl7_type": LAB_TYPE}
    if with_file:
        expected["attachment_hash"] = hashlib.sha256(pdf).hexdigest()
    assert sig == expected
    assert isinstance(sig["jti"], str) and isinstance(sig["iat"], int) and isinstance(sig["exp"], int)
    assert made.jti[0] != made.jti[1]


def test_every_call_gets_new_jti(identity):
    request = tokens.TokenRequest(operation="create", person_id=PERSON, resource_hl7_type=LAB_TYPE,
                                  attachment=b"%PDF")
    first = tokens.build_tokens(identity, request, now=1000)
    second = tokens.build_tokens(identity, request, now=1000)
    assert not set(first.jti) & set(second.jti)


def test_tokens_signed_with_signature_key_only(identity, pki):
    from bridge import certs

    auth_credential = certs.load_credential(pki.auth_cert, pki.auth_key)
    made = tokens.build_tokens(identity, tokens.TokenRequest(operation="delete", person_id=PERSON),
                               now=1000)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(made.signature, auth_credential.certificate.public_key(), algorithms=["RS256"],
                   options={"verify_aud": False, "verify_exp": False})


def test_access_update_purpose_and_person_id_helper(identity):
    assert tokens.person_id("STPXXX", "2.16.840.1.113883.2.9.2.90.4.1") == "STPXXX^^^&2.16.840.1.113883.2.9.2.90.4.1&ISO"
    request = tokens.TokenRequest(operation="metadata", person_id=PERSON, resource_hl7_type=LAB_TYPE,
                                  purpose_of_use="ACCESS UPDATE")
    assert tokens.build_tokens(identity, request, now=1000).claims["purpose_of_use"] == "ACCESS UPDATE"
    assert DocumentType.RAD.resource_hl7_type == "('68604-8^^2.16.840.1.113883.6.1')"


def test_identity_from_config(config, sign_credential):
    identity = tokens.TokenIdentity.from_config(config, sign_credential)
    assert identity.audience == config.gateway.audience
    assert identity.lifetime_s == config.gateway.token_lifetime_s == 300
    assert identity.locality == config.structure.locality
    assert identity.operator_fiscal_code == OPERATOR
