"""PAdES B-B with pyHanko: validates, covers the whole file, the gateway's profile (pdf.md section 5)."""

import asyncio
import io
import threading

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.validation.status import SignatureCoverageLevel

from bridge import certs
from bridge.pdf import package
from bridge.pdf import sign
from bridge.errors import BridgeError

from .package_samples import sample
from .signature_checks import off_loop, validate


def test_signature_is_valid_and_covers_the_whole_file(packaged, trust):
    _, signed = packaged("LAB")
    embedded, status = validate(signed, trust)
    assert status.intact and status.valid and status.trusted
    assert status.coverage == SignatureCoverageLevel.ENTIRE_FILE
    assert status.modification_level == ModificationLevel.NONE
    assert status.md_algorithm == "sha256"
    assert status.signing_cert.subject.native["common_name"] == "S1#090#01386030488PIPOHOUSE"


def test_signature_has_the_baseline_b_profile(packaged):
    _, signed = packaged("LAB")
    embedded = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0]
    sig = embedded.sig_object
    assert sig["/Filter"] == "/Adobe.PPKLite" and sig["/SubFilter"] == "/ETSI.CAdES.detached"
    assert str(sig["/M"]).startswith("D:")  # the gateway calls getSignDate()
    signer_info = embedded.signer_info
    attrs = {a["type"].native for a in signer_info["signed_attrs"]}
    assert attrs == {"content_type", "message_digest", "signing_certificate_v2"}  # B-B, no signing-time
    assert not signer_info["unsigned_attrs"]  # no timestamp: not B-T
    assert "/DSS" not in embedded.reader.root  # no validation data: not LT
    assert embedded.signed_data["certificates"][0].chosen.subject == embedded.signer_cert.subject
    field = embedded.sig_field
    assert embedded.field_name == "Signature1"
    assert int(field["/F"]) == 132 and [float(x) for x in field["/Rect"]] == [0, 0, 0, 0]


def test_changed_byte_breaks_the_signature(packaged, trust):
    _, signed = packaged("LAB")
    tampered = bytearray(signed)
    tampered[10] ^= 0x01  # in the binary-marker comment: harmless to parsers, covered by ByteRange
    _, status = validate(bytes(tampered), trust)
    assert not status.intact


def test_key_is_parsed_once(pki, monkeypatch):
    cred = certs.load_credential(pki.sign_cert, pki.sign_key)
    signer = sign.PdfSigner.from_credential(cred)

    def boom(*a, **kw):
        raise AssertionError("the private key was parsed again")

    # pyHanko's stock SimpleSigner calls this for every raw signature
    monkeypatch.setattr("pyhanko.sign.signers.pdf_cms.serialization.load_der_private_key", boom)
    signed = signer.sign(package.build_unsigned_pdf(sample("LAB")))
    assert package.extract_cda(signed) == sample("LAB")


def test_signs_from_a_worker_thread_without_event_loop(packaged, signer, trust):
    unsigned, _ = packaged("RAD")
    results = []
    threads = [threading.Thread(target=lambda: results.append(signer.sign(unsigned))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3
    for signed in results:
        assert validate(signed, trust)[1].intact


def test_signs_when_called_inside_a_running_loop(packaged, signer, trust):
    unsigned, _ = packaged("RAD")

    async def inside():
        sync_result = signer.sign(unsigned)  # asyncio.run would refuse here
        async_result = await signer.sign_async(unsigned)
        return sync_result, async_result

    for signed in off_loop(lambda: asyncio.run(inside())):
        assert validate(signed, trust)[1].valid


def test_signer_is_pluggable(pki, trust):
    """Any pyHanko CMS signer (smart card, HSM, remote service) fits PdfSigner."""
    from pyhanko.sign import signers
    cms = signers.SimpleSigner.load(str(pki.sign_key), str(pki.sign_cert))
    legal = sign.PdfSigner(cms, display_name="Dott.ssa Paola Prova", reason="Referto")
    signed = package.package_pdf(sample("LAB"), legal)
    assert validate(signed, trust)[1].valid
    from pypdf import PdfReader
    assert "Dott.ssa Paola Prova" in PdfReader(io.BytesIO(signed)).pages[0].extract_text()


def test_not_a_pdf_is_refused(signer):
    with pytest.raises(BridgeError, match="not a readable PDF"):
        signer.sign(b"<ClinicalDocument/>")


def test_packaging_on_concurrent_worker_threads(signer, trust):
    """The service packages on a thread pool: one signer shared by all threads."""
    from concurrent.futures import ThreadPoolExecutor
    from .package_samples import SAMPLE_NAMES
    with ThreadPoolExecutor(max_workers=4) as pool:
        signed = list(pool.map(lambda n: package.package_pdf(sample(n), signer), SAMPLE_NAMES * 2))
    for name, pdf in zip(SAMPLE_NAMES * 2, signed):
        assert package.extract_cda(pdf) == sample(name)
        assert validate(pdf, trust)[1].valid


def test_signing_twice_is_refused_clearly(packaged, signer):
    _, signed = packaged("LAB")
    with pytest.raises(sign.SigningError, match="cannot sign"):
        signer.sign(signed)


def test_cms_template_is_used_for_the_rsa_key_and_validates(pki, trust):
    fresh = sign.PdfSigner.from_credential(certs.load_credential(pki.sign_cert, pki.sign_key))
    unsigned = package.build_unsigned_pdf(sample("RAD"))
    assert not fresh._cms_signer.has_template("sha256")
    first = off_loop(lambda: fresh.sign(unsigned))
    assert fresh._cms_signer.has_template("sha256")   # built by the first document
    second = off_loop(lambda: fresh.sign(unsigned))
    for signed in (first, second):
        _, status = validate(signed, trust)
        assert status.intact and status.valid
        assert status.coverage == SignatureCoverageLevel.ENTIRE_FILE


def test_ecdsa_key_falls_back_to_pyhanko_and_validates(tmp_path, trust, pki):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca = certs.load_credential(pki.ca_cert, pki.ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "S1#090#01386030488PIPOHOUSE")]))
            .issuer_name(ca.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(ca.private_key, hashes.SHA256()))
    ecdsa = sign.PdfSigner.from_credential(certs.Credential(certificate=cert, private_key=key))
    unsigned = package.build_unsigned_pdf(sample("LAB"))
    for _ in range(2):
        signed = off_loop(lambda: ecdsa.sign(unsigned))
        _, status = validate(signed, trust)
        assert status.intact and status.valid and status.md_algorithm == "sha256"
    assert not ecdsa._cms_signer.has_template("sha256")
