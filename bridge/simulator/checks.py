"""The gateway's checks of one request, in the real gateway's order (gateway.md sections 2-8).

:func:`check_request` runs the steps of :data:`STEPS` for the operation and
either returns an :class:`Accepted` (the registry already updated) or raises
a :class:`~bridge.simulator.problems.Problem`. The order follows the real
chain: the front end (GovWay) checks the Authorization token (presence,
signature against x5c, iss/CN, aud, iat/exp, jti replay); the dispatcher then
reads FSE-JWT-Signature (presence, decodability; its signature is checked
here like GovWay's), its claims (mandatory, CF of sub, value sets,
per-operation coherence, locality, resource type, attachment_hash), the
path id, the body (strict JSON, mandatory fields, formats, Toscana
identifiers), the file (%PDF, hash, PAdES, cda.xml), the JWT against the CDA,
the CDA's XSD and schematron, then the registry (INI): identificativoRep,
duplicates, unknown ids.

Blocking (PDF, XML, SQLite): the server calls it from a worker thread.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.parser
import email.policy
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Callable

import jwt
from cryptography import x509
from cryptography.x509.oid import NameOID
from stdnum.it import codicefiscale

from bridge.simulator import cdaread, contract, pdfcheck, valuesets
from bridge.simulator.problems import Problem
from bridge.simulator.registry import SubmissionHeld

UNKNOWN_WORKFLOW_ID = "UNKNOWN_WORKFLOW_ID"
WIF_SUFFIX = "^^^^urn:ihe:iti:xdw:2013:workflowInstanceId"
ALGORITHMS = ("RS256", "RS384", "RS512")
MODE_WARNING = "Attenzione, non è stata selezionata la modalità di estrazione del CDA"

MANDATORY_CLAIMS = ("patient_consent", "action_id", "locality", "person_id", "purpose_of_use",
                    "subject_organization", "subject_organization_id", "subject_role",
                    "subject_application_id", "subject_application_vendor", "subject_application_version")


@dataclass(frozen=True, slots=True)
class SimRequest:
    operation: str
    path_id: str | None
    """The path id, percent-decoded once."""
    headers: dict[str, str]
    """Lower-case names."""
    content_type: str
    body: bytes
    path: str
    client_cert: x509.Certificate | None = None


@dataclass(slots=True)
class Context:
    audience: str
    now: float
    registry: object
    rules: object | None = None
    validate: Callable | None = None
    """bridge.cda.validate.validate_cda, or None to skip XSD/schematron (passed in by the server:
    why the product's validator is acceptable here is said at start_simulator)."""
    skew_s: float = 5.0
    random_hex: Callable[[int], str] = secrets.token_hex


@dataclass(slots=True)
class State:
    """What the steps learn as they go."""

    request: SimRequest
    ctx: Context
    auth_claims: dict = field(default_factory=dict)
    claims: dict = field(default_factory=dict)
    sign_cert: x509.Certificate | None = None
    body: dict = field(default_factory=dict)
    file: bytes | None = None
    file_present: bool = False
    cda: bytes | None = None
    facts: cdaread.CdaFacts | None = None
    workflow_instance_id: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Accepted:
    operation: str
    document_id: str
    status: int
    workflow_instance_id: str
    warning: str | None


# ---------------------------------------------------------------------- tokens (GovWay)

def _cn(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _verify_token(token: str, prefix: str, ctx: Context, *, undecodable: Callable[[str], Problem]
                  ) -> tuple[dict, x509.Certificate]:
    """GovWay's checks of one token: x5c, signature, iss = prefix + CN, aud, iat/exp, jti."""
    failed = "TokenAuthenticationFailed"
    try:
        header = jwt.get_unverified_header(token)
        jwt.decode(token, options={"verify_signature": False})  # the payload must be JSON too
    except jwt.PyJWTError:
        raise undecodable("the token is not a compact JWS with JSON header and payload") from None
    if header.get("alg") not in ALGORITHMS:
        raise Problem(failed, f"alg {header.get('alg')!r} is not RS256/RS384/RS512")
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
        raise Problem(failed, "x5c must be an array holding the base64 DER signature certificate")
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
    except (ValueError, TypeError):
        raise Problem(failed, "x5c[0] is not a base64 DER certificate") from None
    try:
        claims = jwt.decode(token, cert.public_key(), algorithms=[header["alg"]],
                            options={"verify_aud": False, "verify_exp": False, "verify_iat": False,
                                     "verify_nbf": False, "verify_iss": False, "verify_sub": False,
                                     "verify_jti": False})
    except jwt.InvalidSignatureError:
        raise Problem(failed, "the token's signature does not verify with the x5c certificate") from None
    except jwt.PyJWTError as exc:
        raise Problem(failed, f"invalid token ({type(exc).__name__})") from None
    cn = _cn(cert)
    if claims.get("iss") != prefix + cn:
        raise Problem(failed, f"iss must be {prefix}<CN of the x5c certificate>")
    if claims.get("aud") != ctx.audience:
        raise Problem(failed, "aud is not this service's audience")
    iat, exp = claims.get("iat"), claims.get("exp")
    for name, value in (("iat", iat), ("exp", exp)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise Problem(failed, f"{name} must be an integer number of seconds")
    if iat > ctx.now + ctx.skew_s:
        raise Problem("TokenInTheFuture", "iat is in the future")
    if exp < ctx.now:
        raise Problem("TokenExpired", "the token has expired")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise Problem(failed, "jti must be a non-empty string")
    if not ctx.registry.use_jti(jti, exp, ctx.now):
        raise Problem(failed, "jti already used (replay)")
    return claims, cert


def step_authorization(state: State) -> None:
    value = state.request.headers.get("authorization", "")
    if not value.startswith("Bearer ") or not value[7:].strip():
        raise Problem("TokenAuthenticationRequired", "A token is required")

    def undecodable(why):
        return Problem("TokenAuthenticationFailed", f"Invalid token: {why}")

    state.auth_claims, sign_cert = _verify_token(value[7:].strip(), "auth:", state.ctx,
                                                 undecodable=undecodable)
    client_cert = state.request.client_cert
    if client_cert is not None and _installation(_cn(client_cert), "A") != _installation(_cn(sign_cert), "S"):
        # One CART subscription per installation binds the A<n># and S<n># certificates
        # of the same structure and vendor (gateway.md section 9).
        raise Problem("TokenAuthenticationFailed",
                      "the TLS client certificate and the token certificate belong to different subscriptions")


def _installation(cn: str, letter: str) -> str | None:
    """``090#<code><vendor>`` of an ``A<n>#``/``S<n>#`` CN, None when the CN has another form."""
    head, sep, rest = cn.partition("#")
    if not sep or not head.startswith(letter) or not head[1:].isdigit():
        return None
    return rest


def step_signature_token(state: State) -> None:
    token = state.request.headers.get("fse-jwt-signature")
    if not token:
        raise Problem("missing-token", "FSE-JWT-Signature header missing")

    def undecodable(why):
        return Problem("mandatory-element-token", why)

    state.claims, state.sign_cert = _verify_token(token.strip(), "integrity:", state.ctx,
                                                  undecodable=undecodable)


# ---------------------------------------------------------------------- claims (dispatcher JwtSRV)

def _jwt(detail: str) -> Problem:
    return Problem("jwt-validation", detail)


def _cx_code_and_root(cx: str) -> tuple[str, str | None]:
    code = cx.split("^", 1)[0]
    root = None
    if "&" in cx:
        parts = cx.split("&")
        if len(parts) >= 2:
            root = parts[1]
    return code, root


def _fiscal_code_ok(code: str) -> bool:
    return len(code) == 16 and codicefiscale.is_valid(code)


def step_claims(state: State) -> None:
    c, op = state.claims, state.request.operation
    for name in MANDATORY_CLAIMS:
        if c.get(name) in (None, ""):
            raise _jwt(f"claim {name} missing")
    if not isinstance(c["patient_consent"], bool):
        raise _jwt("patient_consent must be a boolean")
    sub = c.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _jwt("claim sub missing")
    code, root = _cx_code_and_root(sub)
    if root in (None, valuesets.FISCAL_CODE_ROOT) and not _fiscal_code_ok(code):
        raise _jwt("sub: not a valid codice fiscale")
    if c["action_id"] not in valuesets.ACTIONS:
        raise _jwt("action_id: unknown value")
    if c["purpose_of_use"] not in valuesets.PURPOSES:
        raise _jwt("purpose_of_use: unknown value")
    if c["subject_role"] not in valuesets.ROLES:
        raise _jwt("subject_role: unknown value")
    org = valuesets.ORGANIZATIONS.get(c["subject_organization_id"])
    if org is None:
        raise _jwt("subject_organization_id: unknown organisation")
    if c["subject_organization"] != org:
        raise _jwt("subject_organization does not match subject_organization_id")
    action, purposes = valuesets.OPERATION_CLAIMS[op]
    if c["action_id"] != action:
        raise _jwt(f"action_id must be {action} for this operation")
    if c["purpose_of_use"] not in purposes:
        raise _jwt("purpose_of_use not allowed for this operation")
    if not isinstance(c["locality"], str) or not valuesets.LOCALITY.match(c["locality"]):
        raise _jwt("locality is not an XON string")
    if op != "delete" and not c.get("resource_hl7_type"):
        raise _jwt("resource_hl7_type missing")
    if op in ("create", "replace") and not c.get("attachment_hash"):
        raise _jwt("attachment_hash missing")


# ---------------------------------------------------------------------- path and body

def _valid_master_id(value) -> bool:
    return isinstance(value, str) and "^" in value and bool(value.rsplit("^", 1)[1])


def _toscana_id(value: str, what: str) -> None:
    if not valuesets.TOSCANA_DOCUMENT_ID.match(value):
        raise Problem("id-doc", f"{what} is not a Toscana document id "
                      "(2.16.840.1.113883.2.9.2.90.4.4^<code>.<TYPE>.<CODREP>.<local id>)")


def step_path_id(state: State) -> None:
    if state.request.operation == "create":
        return
    path_id = state.request.path_id or ""
    if not _valid_master_id(path_id) or len(path_id) > contract.PATH_ID_MAX:
        raise Problem("id-doc", "path id: missing '^' or nothing after it")
    _toscana_id(path_id, "path id")


def _parse_multipart(request: SimRequest) -> tuple[str | None, bool, bytes | None, bool]:
    """(requestBody text or None, requestBody was a file part, file bytes or None, file present)."""
    if not request.content_type.lower().startswith("multipart/form-data"):
        raise Problem("generic-error", "the request must be multipart/form-data")
    raw = b"Content-Type: " + request.content_type.encode("latin-1") + b"\r\n\r\n" + request.body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    if not message.is_multipart():
        raise Problem("generic-error", "malformed multipart body")
    body_text, body_is_file, file_bytes, file_present = None, False, None, False
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "requestBody":
            if filename is not None:
                body_is_file = True
            else:
                charset = part.get_content_charset() or "utf-8"
                body_text = payload.decode(charset, errors="replace")
        elif name == "file":
            file_present, file_bytes = True, payload
    return body_text, body_is_file, file_bytes, file_present


def _mandatory(detail: str) -> Problem:
    return Problem("mandatory-element", detail)


def _check_date(name: str, value) -> None:
    if not isinstance(value, str) or not valuesets.DATE.match(value):
        raise Problem("invalid-format", f"{name} must be yyyyMMddHHmmss")
    try:
        dt.datetime.strptime(value, "%Y%m%d%H%M%S")
    except ValueError:
        raise Problem("invalid-format", f"{name} is not a real date") from None


def _check_array(name: str, value) -> None:
    """An array field: strings, at most MAX_ITEMS of them, each short enough and in its value set."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _mandatory(f"{name} must be an array of strings")
    if len(value) > contract.MAX_ITEMS[name]:
        raise _mandatory(f"{name}: more than {contract.MAX_ITEMS[name]} items")
    limit = contract.ITEM_MAX_LENGTHS.get(name)
    if limit is not None and any(len(v) > limit for v in value):
        raise Problem("invalid-format", f"{name}: an item is longer than {limit}")
    allowed = contract.ARRAY_ITEMS[name]
    outside = [v for v in value if allowed is not None and v not in allowed]
    if outside:
        raise _mandatory(f"{name}: {outside[0]!r} is not an accepted value")


def step_body(state: State) -> None:
    request, op = state.request, state.request.operation
    if op == "delete":
        return
    if op == "metadata":
        if not request.content_type.lower().startswith("application/json"):
            raise _mandatory("the body must be application/json")
        text = request.body.decode("utf-8", errors="replace")
    else:
        text, body_is_file, state.file, state.file_present = _parse_multipart(request)
        if state.file is not None and len(state.file) > contract.MAX_FILE_BYTES:
            raise Problem("generic-error", f"file over {contract.MAX_FILE_BYTES} bytes "
                          f"(MaxUploadSizeExceededException)", status=413)
        if body_is_file or text is None:
            raise _mandatory("requestBody missing (it must be a plain form field)")
    try:
        body = json.loads(text)
    except ValueError:
        raise _mandatory("requestBody is not valid JSON") from None
    if not isinstance(body, dict):
        raise _mandatory("requestBody must be a JSON object")
    unknown = sorted(set(body) - contract.BODY_FIELDS[op])
    if unknown:
        raise _mandatory(f"unknown property {unknown[0]}")
    for name, allowed in contract.ENUMS.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or value not in allowed):
            raise _mandatory(f"{name}: {value!r} is not an accepted value")
    for name in contract.ARRAY_ITEMS:
        if body.get(name) is not None:
            _check_array(name, body[name])
    for name in set(body) - set(contract.ENUMS) - set(contract.ARRAY_ITEMS):
        if body[name] is not None and not isinstance(body[name], str):
            raise _mandatory(f"{name} must be a string")
    for name in sorted(contract.REQUIRED_FIELDS[op]):
        if not body.get(name):
            raise _mandatory(f"{name} missing")
    for name, limit in contract.MAX_LENGTHS.items():
        if isinstance(body.get(name), str) and len(body[name]) > limit:
            raise Problem("invalid-format", f"{name}: longer than {limit}")
    if "identificativoDoc" in body and not _valid_master_id(body["identificativoDoc"]):
        raise Problem("id-doc", "identificativoDoc: missing '^' or nothing after it")
    for name in ("dataInizioPrestazione", "dataFinePrestazione"):
        if body.get(name) is not None:
            _check_date(name, body[name])
    for code in body.get("attiCliniciRegoleAccesso") or []:
        if code not in valuesets.EVENT_CODES and not valuesets.EVENT_CODE_OPEN.match(code):
            raise _mandatory(f"attiCliniciRegoleAccesso: {code!r} is not an event code")
    for text in body.get("descriptions") or []:
        if not valuesets.description_ok(text):
            raise _mandatory("descriptions: each must be CODE^Text^OID with a catalogue OID")
    # Toscana identifier formats (gateway.md section 5).
    if "identificativoDoc" in body:
        _toscana_id(body["identificativoDoc"], "identificativoDoc")
    if not valuesets.TOSCANA_SUBMISSION_ID.match(body["identificativoSottomissione"]):
        raise Problem("invalid-format",
                      "identificativoSottomissione must be 2.16.840.1.113883.2.9.2.90.4.3.<n>")
    if op in ("create", "replace") and body.get("mode") is None:
        state.warnings.append(MODE_WARNING)
    state.body = body


# ---------------------------------------------------------------------- file and CDA

def step_file(state: State) -> None:
    op = state.request.operation
    if op not in ("create", "replace"):
        return
    if not state.file_present:
        raise Problem("generic-error", "file part missing")
    data = state.file or b""
    if not data:
        raise Problem("empty-file", "the file is empty")
    if not data.startswith(b"%PDF"):
        raise Problem("document-type", "the file does not start with %PDF")
    declared = str(state.claims.get("attachment_hash", "")).lower()
    if hashlib.sha256(data).hexdigest() != declared:
        raise Problem("document-hash", "attachment_hash differs from the SHA-256 of the file")
    try:
        pdfcheck.check_pades(data)
    except pdfcheck.PdfProblem as exc:
        raise Problem("sign-error", f"La firma del pdf non risulta valida: {exc}") from None
    if state.body.get("mode") == "RESOURCE":
        raise Problem("cda-element", "RESOURCE mode (XFAResources) is not supported by this gateway")
    try:
        state.cda = pdfcheck.extract_cda(data)
    except pdfcheck.PdfProblem as exc:
        raise Problem("cda-element", str(exc)) from None
    try:
        state.facts = cdaread.read_cda(state.cda)
    except cdaread.CdaProblem as exc:
        raise Problem("syntax", str(exc)) from None
    facts = state.facts
    if not facts.id_root or not facts.id_extension:
        raise Problem("workflow-id-error-extraction", "no ClinicalDocument/id root and extension")
    state.workflow_instance_id = (f"{facts.id_root}."
                                  f"{hashlib.sha256(facts.id_extension.encode()).hexdigest()}."
                                  f"{state.ctx.random_hex(5)}{WIF_SUFFIX}")


def step_jwt_vs_cda(state: State) -> None:
    facts = state.facts
    if facts is None:
        return
    if state.claims.get("resource_hl7_type") != facts.resource_hl7_type:
        raise _jwt("resource_hl7_type differs from the CDA's type")
    code, _ = _cx_code_and_root(str(state.claims.get("person_id", "")))
    match = next((root for root, ext in facts.patient_ids if ext == code), None)
    if match is None:
        raise _jwt("person_id differs from the CDA's patient")
    if match != valuesets.TEAM_ROOT and not _fiscal_code_ok(code):
        raise _jwt("person_id: not a valid codice fiscale")
    loinc = facts.code or ""
    body = state.body
    paired = valuesets.CLASS_FOR_LOINC.get(loinc)
    if paired and body.get("tipoDocumentoLivAlto") != paired:
        raise Problem("invalid-format", f"tipoDocumentoLivAlto must be {paired} for this document type")
    doc_type = valuesets.DOC_TYPE_FOR_LOINC.get(loinc)
    match_id = valuesets.TOSCANA_DOCUMENT_ID.match(body.get("identificativoDoc", ""))
    if doc_type and match_id and match_id.group("type") != doc_type:
        raise Problem("id-doc", f"identificativoDoc names type {match_id.group('type')}, "
                      f"the CDA is {doc_type}")


def step_validate(state: State) -> None:
    ctx = state.ctx
    if state.cda is None or ctx.rules is None or ctx.validate is None:
        return
    report = ctx.validate(state.cda, ctx.rules)
    if report.xsd_errors:
        first = report.xsd_errors[0]
        raise Problem("syntax", f"{first.message} ({first.location})")
    if report.schematron_errors:
        first = report.schematron_errors[0]
        raise Problem("semantic", f"{first.rule_id}: {first.message}")
    if report.warnings:
        state.warnings.append(",".join(w.message for w in report.warnings))


# ---------------------------------------------------------------------- registry (INI)

def _path_wif(path_id: str, ctx: Context) -> str:
    return f"{hashlib.sha256(path_id.encode()).hexdigest()}.{ctx.random_hex(5)}{WIF_SUFFIX}"


def step_register(state: State) -> Accepted:
    request, body = state.request, state.body
    op = request.operation
    if op in ("create", "replace"):
        if not valuesets.TOSCANA_REPOSITORY_ID.match(body["identificativoRep"]):
            raise Problem("generic-error", "identificativoRep is not a Toscana repository id")
    warning = ",".join(state.warnings) or None
    hl7_type = state.claims.get("resource_hl7_type")
    patient = _cx_code_and_root(str(state.claims.get("person_id", "")))[0] or None
    submission_id = body.get("identificativoSottomissione")
    try:
        return _register(state, op, hl7_type, patient, submission_id, warning)
    except SubmissionHeld:
        raise Problem("ini-error", f"identificativoSottomissione {submission_id} already registered "
                                   f"(duplicate SubmissionSet uniqueId)") from None


def _register(state: State, op: str, hl7_type, patient, submission_id, warning) -> Accepted:
    """The registry's answer; problems about an id name it in their detail (gateway.md section 8)."""
    request, ctx, body = state.request, state.ctx, state.body
    if op == "create":
        doc_id = body["identificativoDoc"]
        if not ctx.registry.create(doc_id, workflow_instance_id=state.workflow_instance_id,
                                   resource_hl7_type=hl7_type, class_code=body.get("tipoDocumentoLivAlto"),
                                   now=ctx.now, patient=patient, submission_id=submission_id):
            raise Problem("ini-error", f"identificativoDoc {doc_id} already registered (duplicate uniqueId)")
        return Accepted(op, doc_id, 202, state.workflow_instance_id, warning)
    if op == "replace":
        outcome = ctx.registry.replace(request.path_id, body["identificativoDoc"],
                                       workflow_instance_id=state.workflow_instance_id,
                                       resource_hl7_type=hl7_type, class_code=body.get("tipoDocumentoLivAlto"),
                                       now=ctx.now, patient=patient, submission_id=submission_id)
        if outcome == "not-found":
            raise Problem("record-not-found", f"{request.path_id}: the document to replace is unknown "
                                              f"or not current")
        if outcome == "patient-differs":
            # RT section 4.2: a report of the wrong patient is deleted and published anew.
            raise Problem("ini-error", f"Paziente diverso: {request.path_id} belongs to another patient")
        if outcome == "duplicate":
            raise Problem("ini-error", f"the new identificativoDoc {body['identificativoDoc']} is "
                                       f"already registered")
        return Accepted(op, body["identificativoDoc"], 202, state.workflow_instance_id, warning or "")
    wif = _path_wif(request.path_id, ctx)
    if op == "metadata":
        if not ctx.registry.update_metadata(request.path_id, class_code=body.get("tipoDocumentoLivAlto"),
                                            now=ctx.now, submission_id=submission_id):
            raise Problem("record-not-found", f"{request.path_id}: unknown or deleted document")
        return Accepted(op, request.path_id, 200, wif, None)
    if not ctx.registry.delete(request.path_id, now=ctx.now):
        raise Problem("record-not-found", f"{request.path_id}: unknown or deleted document")
    return Accepted(op, request.path_id, 200, wif, None)


#: The order of the checks per operation (delete checks its path id before the token, as DSP does).
STEPS = {
    "create": (step_authorization, step_signature_token, step_claims, step_body, step_file,
               step_jwt_vs_cda, step_validate),
    "replace": (step_authorization, step_signature_token, step_claims, step_path_id, step_body,
                step_file, step_jwt_vs_cda, step_validate),
    "metadata": (step_authorization, step_signature_token, step_claims, step_path_id, step_body),
    "delete": (step_authorization, step_path_id, step_signature_token, step_claims),
}


def check_request(request: SimRequest, ctx: Context, state: State | None = None) -> Accepted:
    """Run the checks; register the document; Problem on the first failure.

    Pass a *state* to read, after a Problem, what was learned (workflowInstanceId).
    """
    state = state or State(request, ctx)
    for step in STEPS[request.operation]:
        step(state)
    return step_register(state)
