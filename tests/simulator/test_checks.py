"""Every simulator check fires on a request broken in exactly that way (gateway.md sections 7, 8),
and the client's classification turns each answer into the right outcome class.

Requests go over loopback HTTPS with mutual TLS to the simulator running in the test's reactor.
"""

import base64

import pytest
import pytest_twisted
from stdnum.it import codicefiscale

from bridge import certs
from bridge.gateway import OutcomeClass, classify
from bridge.simulator import Fault

from gateway_kit import (OTHER_PATIENT, PATIENT, aio, build_pdf, doc_id, make_cda, registry_rows,
                         sign_pdf, start)
from oracles import openapi
from sim_requests import RawSender, under_base

PUBLISHED, REFUSED, NOT_NOW = OutcomeClass.PUBLISHED, OutcomeClass.REFUSED, OutcomeClass.NOT_NOW


def _bad_cf() -> str:
    good = PATIENT
    wrong = next(c for c in "ABCDEFGHIJ" if c != codicefiscale.calc_check_digit(good[:15]))
    return good[:15] + wrong


BAD_CF = _bad_cf()


@pytest.fixture(scope="session")
def pdfs(pki, package):
    no_m = package.replace(b"\n/M (D", b"\n/X (D", 1)  # the signature dictionary's /M
    assert no_m != package
    tampered = bytearray(package)
    tampered[10] ^= 0x01  # the binary comment of the header: inside the signed bytes
    cda = make_cda()
    first_id = b'extension="01386030488.LAB.999.A26-00412_1"'
    return {
        "good": package,
        "unsigned": build_pdf(cda),
        "tampered": bytes(tampered),
        "no_m": no_m,
        "wrong_name": sign_pdf(build_pdf(cda, name="CDA.xml"), pki),
        "no_cda": sign_pdf(build_pdf(None), pki),
        "kids": sign_pdf(build_pdf(cda, in_kids=True), pki),
        "no_id_extension": sign_pdf(build_pdf(cda.replace(first_id, b"", 1)), pki),
        "other_patient": sign_pdf(build_pdf(make_cda(patient=OTHER_PATIENT)), pki),
        "bad_cf": sign_pdf(build_pdf(make_cda(patient=BAD_CF)), pki),
        "rad_code": sign_pdf(build_pdf(make_cda(code="68604-8")), pki),
        "xsd": sign_pdf(build_pdf(cda.replace(b"<title>", b"<titolo>").replace(b"</title>", b"</titolo>")), pki),
        "schematron": sign_pdf(build_pdf(cda.replace(b'<realmCode code="IT"/>', b"")), pki),
    }


@pytest.fixture
def sender(simulator, config, sign_credential, pki):
    return RawSender(simulator, config, sign_credential, pki)


@pytest.fixture(scope="session")
def auth_credential(pki):
    return certs.load_credential(pki.auth_cert, pki.auth_key)


# --------------------------------------------------------------------------- mutations

def claim(which, name, value=None, *, drop=False):
    def mutate(spec, ctx):
        claims = spec.auth_claims if which == "auth" else spec.sig_claims
        if drop:
            claims.pop(name, None)
        else:
            claims[name] = value(claims) if callable(value) else value
    return mutate


def body(name, value=None, *, drop=False):
    def mutate(spec, ctx):
        if drop:
            spec.body.pop(name, None)
        else:
            spec.body[name] = value
    return mutate


def attr(name, value):
    def mutate(spec, ctx):
        setattr(spec, name, value(ctx) if callable(value) else value)
    return mutate


def pdf(name):
    """Send another PDF, with an attachment_hash that matches it."""
    def mutate(spec, ctx):
        import hashlib

        spec.pdf = ctx["pdfs"][name]
        spec.sig_claims["attachment_hash"] = hashlib.sha256(spec.pdf).hexdigest()
    return mutate


def both(*mutations):
    def mutate(spec, ctx):
        for m in mutations:
            m(spec, ctx)
    return mutate


def wrong_key(spec, ctx):
    spec.auth_key = ctx["auth_credential"].private_key  # x5c still names the signature certificate


def no_x5c(spec, ctx):
    spec.auth_headers["x5c"] = None


def x5c_string(spec, ctx):
    spec.auth_headers["x5c"] = base64.b64encode(ctx["sign_credential"].der).decode()  # DSP's old sample


GW = "https://govway.org/handling-errors/401/{}.html"
OTHER_ID = doc_id("A26-00412_9")

# (id, operation, mutation, HTTP status, problem type, outcome class)
CASES = [
    ("auth-header-missing", "create", attr("auth_token", ""), 401, GW.format("TokenAuthenticationRequired"), NOT_NOW),
    ("auth-not-jws", "create", attr("auth_token", "not-a-token"), 401, GW.format("TokenAuthenticationFailed"), NOT_NOW),
    ("auth-signature-wrong-key", "create", wrong_key, 401, GW.format("TokenAuthenticationFailed"), NOT_NOW),
    ("auth-x5c-missing", "create", no_x5c, 401, GW.format("TokenAuthenticationFailed"), NOT_NOW),
    ("auth-x5c-not-array", "create", x5c_string, 401, GW.format("TokenAuthenticationFailed"), NOT_NOW),
    ("auth-iss-wrong-cn", "create", claim("auth", "iss", "auth:S1#090#99999999999OTHER"), 401,
     GW.format("TokenAuthenticationFailed"), NOT_NOW),
    ("auth-iss-prefix", "create", claim("auth", "iss", lambda c: "integrity:" + c["iss"][5:]), 401,
     GW.format("TokenAuthenticationFailed"), NOT_NOW),
    ("auth-aud", "create", claim("auth", "aud", "fse-gateway"), 401, GW.format("TokenAuthenticationFailed"), NOT_NOW),
    ("auth-iat-milliseconds", "create", claim("auth", "iat", lambda c: c["iat"] * 1000.0), 401,
     GW.format("TokenAuthenticationFailed"), NOT_NOW),
    ("auth-jti-integer", "create", claim("auth", "jti", 201123456), 401, GW.format("TokenAuthenticationFailed"), NOT_NOW),
    ("auth-iat-future", "create", claim("auth", "iat", lambda c: c["iat"] + 3600), 401, GW.format("TokenInTheFuture"), NOT_NOW),
    ("auth-expired", "create", claim("auth", "exp", lambda c: c["iat"] - 10), 401, GW.format("TokenExpired"), NOT_NOW),
    ("sig-missing-create", "create", attr("sig_token", ""), 403, "/msg/missing-token", NOT_NOW),
    ("sig-missing-replace", "replace", attr("sig_token", ""), 400, "/msg/missing-token", NOT_NOW),
    ("sig-missing-delete", "delete", attr("sig_token", ""), 400, "/msg/missing-token", NOT_NOW),
    ("sig-undecodable", "create", attr("sig_token", "abc.def"), 403, "/msg/mandatory-element-token", NOT_NOW),
    ("sig-undecodable-delete", "delete", attr("sig_token", "abc.def"), 401, "/msg/mandatory-element-token", NOT_NOW),
    ("sig-iss-prefix", "create", claim("sig", "iss", lambda c: "auth:" + c["iss"][10:]), 401,
     GW.format("TokenAuthenticationFailed"), NOT_NOW),
    ("claim-locality-missing", "create", claim("sig", "locality", drop=True), 403, "/msg/jwt-validation", REFUSED),
    ("claim-consent-missing", "delete", claim("sig", "patient_consent", drop=True), 403, "/msg/jwt-validation", REFUSED),
    ("claim-app-version-missing", "create", claim("sig", "subject_application_version", drop=True), 403,
     "/msg/jwt-validation", REFUSED),
    ("claim-sub-not-cf", "create", claim("sig", "sub", "01386030488^^^&2.16.840.1.113883.2.9.4.3.2&ISO"), 403,
     "/msg/jwt-validation", REFUSED),
    ("claim-role", "create", claim("sig", "subject_role", "XXX"), 403, "/msg/jwt-validation", REFUSED),
    ("claim-org-id", "create", claim("sig", "subject_organization_id", "999999"), 403, "/msg/jwt-validation", REFUSED),
    ("claim-org-incoherent", "create", claim("sig", "subject_organization", "Regione Lazio"), 403,
     "/msg/jwt-validation", REFUSED),
    ("claim-action-incoherent", "create", claim("sig", "action_id", "UPDATE"), 403, "/msg/jwt-validation", REFUSED),
    ("claim-purpose-incoherent", "create", claim("sig", "purpose_of_use", "UPDATE"), 403, "/msg/jwt-validation", REFUSED),
    ("claim-purpose-unknown", "delete", claim("sig", "purpose_of_use", "CREATE"), 403, "/msg/jwt-validation", REFUSED),
    ("claim-locality-not-xon", "create", claim("sig", "locality", "202-090097"), 403, "/msg/jwt-validation", REFUSED),
    ("claim-resource-type-missing", "metadata", claim("sig", "resource_hl7_type", drop=True), 403,
     "/msg/jwt-validation", REFUSED),
    ("claim-attachment-hash-missing", "create", claim("sig", "attachment_hash", drop=True), 403,
     "/msg/jwt-validation", REFUSED),
    ("path-id-without-caret", "delete", attr("path_id", "2.16.840.1.113883.2.9.2.90.4.4"), 400, "/msg/id-doc", REFUSED),
    ("path-id-not-toscana", "metadata", attr("path_id", "1.2.3^abc"), 400, "/msg/id-doc", REFUSED),
    ("body-unknown-property", "create", body("priorita", True), 400, "/msg/mandatory-element", REFUSED),
    ("body-bad-enum", "create", body("tipologiaStruttura", "Clinica"), 400, "/msg/mandatory-element", REFUSED),
    ("body-admin-request-not-array", "create", body("administrativeRequest", "SSN"), 400,
     "/msg/mandatory-element", REFUSED),
    ("body-admin-request-placeholder", "create", body("administrativeRequest", ["aaa"]), 400,
     "/msg/mandatory-element", REFUSED),
    ("body-mandatory-missing", "create", body("tipoAttivitaClinica", drop=True), 400, "/msg/mandatory-element", REFUSED),
    ("body-metadata-mandatory-missing", "metadata", body("tipoDocumentoLivAlto", drop=True), 400,
     "/msg/mandatory-element", REFUSED),
    ("body-not-json", "create", attr("body_text", "{not json"), 400, "/msg/mandatory-element", REFUSED),
    ("body-as-file-part", "create", attr("body_as_file", True), 400, "/msg/mandatory-element", REFUSED),
    ("body-event-code", "create", body("attiCliniciRegoleAccesso", ["XYZ"]), 400, "/msg/mandatory-element", REFUSED),
    ("body-description", "create", body("descriptions", ["A^b^1.2.3"]), 400, "/msg/mandatory-element", REFUSED),
    ("body-date", "create", body("dataInizioPrestazione", "2026-03-01"), 400, "/msg/invalid-format", REFUSED),
    ("body-date-impossible", "create", body("dataFinePrestazione", "20261345000000"), 400, "/msg/invalid-format", REFUSED),
    ("body-id-without-caret", "create", body("identificativoDoc", "2.16.840.1.113883.2.9.2.90.4.4"), 400,
     "/msg/id-doc", REFUSED),
    ("body-id-not-toscana", "create", body("identificativoDoc", "2.16.840.1.113883.2.9.2.120.4.4^X.1"), 400,
     "/msg/id-doc", REFUSED),
    ("body-submission-id", "create", body("identificativoSottomissione", "2.16.840.1.113883.2.9.2.90.999"), 400,
     "/msg/invalid-format", REFUSED),
    ("body-too-long", "create", body("conservazioneANorma", "C" * 101), 400, "/msg/invalid-format", REFUSED),
    # The OpenAPI's assettoOrganizzativo enum has gaps: AD_PSCnnn is not enough.
    ("body-practice-setting-gap-150", "create", body("assettoOrganizzativo", "AD_PSC150"), 400,
     "/msg/mandatory-element", REFUSED),
    ("body-practice-setting-gap-016", "metadata", body("assettoOrganizzativo", "AD_PSC016"), 400,
     "/msg/mandatory-element", REFUSED),
    ("body-class-code-not-in-dsp", "create", body("tipoDocumentoLivAlto", "LET"), 400, "/msg/mandatory-element",
     REFUSED),
    ("body-enum-not-string", "create", body("tipologiaStruttura", ["Territorio"]), 400, "/msg/mandatory-element",
     REFUSED),
    ("body-description-item-too-long", "create",
     body("descriptions", ["A^" + "b" * 1000 + "^2.16.840.1.113883.6.73"]), 400, "/msg/invalid-format", REFUSED),
    ("path-id-too-long", "delete", attr("path_id", doc_id("A" * 240)), 400, "/msg/id-doc", REFUSED),
    ("metadata-not-json-content", "metadata", attr("content_type", "text/plain"), 400, "/msg/mandatory-element", REFUSED),
    ("file-missing", "create", attr("send_file", False), 400, "/msg/generic-error", REFUSED),
    ("file-empty", "create", both(attr("pdf", b""), claim("sig", "attachment_hash", "e3b0c442")), 400,
     "/msg/empty-file", REFUSED),
    # pdf.md section 1: Spring Boot's 1 MB multipart default; the client never sends one (DocumentTooLarge)
    ("file-over-1-mb", "create", attr("pdf", b"%PDF-1.7\n" + b"0" * (1024 * 1024)), 413, "/msg/generic-error",
     REFUSED),
    ("file-not-pdf-create", "create", attr("pdf", b"<ClinicalDocument/>"), 415, "/msg/document-type", REFUSED),
    ("file-not-pdf-replace", "replace", attr("pdf", b"<ClinicalDocument/>"), 400, "/msg/document-type", REFUSED),
    ("attachment-hash", "create", claim("sig", "attachment_hash", "0" * 64), 400, "/msg/document-hash", REFUSED),
    ("pdf-unsigned", "create", pdf("unsigned"), 400, "/msg/sign-error", REFUSED),
    ("pdf-signature-broken", "create", pdf("tampered"), 400, "/msg/sign-error", REFUSED),
    ("pdf-signature-without-M", "create", pdf("no_m"), 400, "/msg/sign-error", REFUSED),
    ("cda-name-case", "create", pdf("wrong_name"), 400, "/msg/cda-element", REFUSED),
    ("cda-absent", "create", pdf("no_cda"), 400, "/msg/cda-element", REFUSED),
    ("cda-resource-mode", "create", body("mode", "RESOURCE"), 400, "/msg/cda-element", REFUSED),
    ("cda-no-document-id", "create", pdf("no_id_extension"), 400, "/msg/workflow-id-error-extraction", REFUSED),
    ("cda-type-vs-claim", "create", pdf("rad_code"), 403, "/msg/jwt-validation", REFUSED),
    ("cda-patient-vs-person-id", "create", pdf("other_patient"), 403, "/msg/jwt-validation", REFUSED),
    ("cda-person-id-not-cf", "create", both(pdf("bad_cf"), claim("sig", "person_id",
                                                                 f"{BAD_CF}^^^&2.16.840.1.113883.2.9.4.3.2&ISO")),
     403, "/msg/jwt-validation", REFUSED),
    ("class-code-vs-type", "create", body("tipoDocumentoLivAlto", "LDO"), 400, "/msg/invalid-format", REFUSED),
    ("id-type-vs-cda", "create", body("identificativoDoc", doc_id(kind="RAD")), 400, "/msg/id-doc", REFUSED),
    ("repository-id", "create", body("identificativoRep", "2.16.840.1.113883.2.9.2.90.4.5.777"), 400,
     "/msg/generic-error", REFUSED),
    ("replace-unknown-id", "replace", attr("path_id", OTHER_ID), 404, "/msg/record-not-found", NOT_NOW),
    ("metadata-unknown-id", "metadata", attr("path_id", OTHER_ID), 404, "/msg/record-not-found", NOT_NOW),
    ("delete-unknown-id", "delete", attr("path_id", OTHER_ID), 404, "/msg/record-not-found", NOT_NOW),
]


@pytest.mark.parametrize("name, op, mutate, status, kind, outcome", CASES, ids=[c[0] for c in CASES])
@pytest_twisted.ensureDeferred
async def test_check_fires(name, op, mutate, status, kind, outcome, sender, simulator, pdfs, sign_credential,
                           auth_credential):
    spec = sender.spec(op, pdfs["good"] if op in ("create", "replace") else None,
                       document_id=doc_id("A26-00412_2") if op == "replace" else None)
    mutate(spec, {"pdfs": pdfs, "sign_credential": sign_credential, "auth_credential": auth_credential})
    response = await aio(sender.send(spec))
    problem = response.json()
    assert (response.status_code, problem.get("type")) == (status, kind), problem
    assert response.headers["X-Cart-id"]
    assert response.headers["Content-Type"] == "application/problem+json"
    assert problem["status"] == status
    if kind.startswith("/msg/"):
        assert problem["traceID"] and problem["spanID"] and problem["title"]
    assert classify(response.status_code, problem)[0] is outcome
    assert registry_rows(simulator) == []
    assert openapi.check_response(response.request.method, under_base(response), status, response.content) == []


def test_at_least_25_distinct_checks():
    assert len({(c[4], c[0].split("-")[0]) for c in CASES}) >= 25
    assert len(CASES) >= 60


@pytest_twisted.ensureDeferred
async def test_jti_replay_is_refused(sender, pdfs):
    spec = sender.spec("create", pdfs["good"])
    first = await aio(sender.send(spec))
    assert first.status_code == 202
    spec.auth_token = sender.encode(spec.auth_claims)  # same claims, same jti
    again = await aio(sender.send(spec))
    assert again.status_code == 401 and again.json()["title"] == "TokenAuthenticationFailed"
    assert "replay" in again.json()["detail"]


@pytest_twisted.ensureDeferred
async def test_create_on_existing_id_is_409_ini_error(sender, pdfs):
    assert (await aio(sender.send(sender.spec("create", pdfs["good"])))).status_code == 202
    again = await aio(sender.send(sender.spec("create", pdfs["good"])))
    assert again.status_code == 409 and again.json()["type"] == "/msg/ini-error"
    assert again.json()["workflowInstanceId"].endswith("^^^^urn:ihe:iti:xdw:2013:workflowInstanceId")


@pytest_twisted.ensureDeferred
async def test_replace_and_delete_of_a_deleted_id_are_404(sender, pdfs):
    assert (await aio(sender.send(sender.spec("create", pdfs["good"])))).status_code == 202
    assert (await aio(sender.send(sender.spec("delete")))).status_code == 200
    for op in ("delete", "metadata"):
        response = await aio(sender.send(sender.spec(op)))
        assert response.status_code == 404 and response.json()["type"] == "/msg/record-not-found"
    spec = sender.spec("replace", pdfs["good"], document_id=doc_id("A26-00412_2"))
    assert (await aio(sender.send(spec))).status_code == 404


@pytest_twisted.ensureDeferred
async def test_cda_in_first_level_kids_is_found(sender, pdfs):
    spec = sender.spec("create", pdfs["kids"])
    import hashlib

    spec.sig_claims["attachment_hash"] = hashlib.sha256(pdfs["kids"]).hexdigest()
    response = await aio(sender.send(spec))
    assert response.status_code == 202, response.json()


@pytest_twisted.ensureDeferred
async def test_mode_omitted_gives_the_gateway_warning(sender, pdfs):
    spec = sender.spec("create", pdfs["good"])
    del spec.body["mode"]
    response = await aio(sender.send(spec))
    assert response.status_code == 202
    assert response.json()["warning"] == "Attenzione, non è stata selezionata la modalità di estrazione del CDA"


@pytest_twisted.ensureDeferred
async def test_metadata_access_update_purpose_accepted(sender, pdfs):
    assert (await aio(sender.send(sender.spec("create", pdfs["good"])))).status_code == 202
    spec = sender.spec("metadata", event_codes=("P99",))
    spec.sig_claims["purpose_of_use"] = "ACCESS UPDATE"
    response = await aio(sender.send(spec))
    assert response.status_code == 200 and response.json()["workflowInstanceId"]


@pytest.mark.parametrize("variant, status, kind", [
    ("good", 202, None),
    ("xsd", 400, "/msg/syntax"),
    ("schematron", 422, "/msg/semantic"),
])
@pytest_twisted.ensureDeferred
async def test_xsd_and_schematron(variant, status, kind, config, sign_credential, pki, pdfs, rules):
    import hashlib

    handle = start(config, rules=rules)
    try:
        sender = RawSender(handle, config, sign_credential, pki)
        spec = sender.spec("create", pdfs[variant])
        spec.sig_claims["attachment_hash"] = hashlib.sha256(pdfs[variant]).hexdigest()
        response = await aio(sender.send(spec))
        assert response.status_code == status, response.json()
        assert response.json().get("type") == kind
        if kind:
            assert classify(status, response.json())[0] is REFUSED
    finally:
        handle.simulator.stop()
        await handle.listening.stopListening()
        handle.registry.close()


@pytest_twisted.ensureDeferred
async def test_scripted_fault_statuses_carry_x_cart_id_and_retry_after(sender, simulator):
    simulator.simulator.add_faults([Fault(status=503, retry_after="3")])
    response = await aio(sender.send(sender.spec("delete")))
    assert response.status_code == 503 and response.headers["Retry-After"] == "3"
    assert response.headers["X-Cart-id"]
