"""The signed PDF checked as it is submitted (issue 15 item 3; pdf.md sections 4 and 5).

What the gateway receives is the signed file, not the PDF/A file the other
tests check. Here: the signed file still identifies itself as PDF/A-3b (XMP
pdfaid, OutputIntent, embedded fonts, the widget and form rules of PDF/A-3);
the incremental update changes only what a PAdES signature needs (object
tables of the unsigned revision and the signed file compared with pikepdf);
pyHanko validates the signature against the trust root; and a verifier of
the test's own (asn1crypto + cryptography, no pyHanko) checks the CMS over
the signed byte ranges as the gateway's BouncyCastle code does. pikepdf's
PDF/A checker refuses any file with an AcroForm, so these checks are ours.
"""

from __future__ import annotations

import hashlib
import io

import pikepdf
import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from pikepdf import Name
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from bridge import certs
from bridge.pdf import package

from .package_samples import SAMPLE_NAMES, sample
from .signature_checks import validate

#: What pyHanko may change in an object the unsigned revision has: the catalog gains the form,
#: the ESIC extension PAdES declares and the /Version 1.7 that extension is based on (and DSS,
#: for validation data), the page its widget, the Info dictionary its dates and producer; the
#: XMP stream is rewritten (checked to stay PDF/A-3b).
ALLOWED_KEY_CHANGES = {
    "catalog": {"/AcroForm", "/Extensions", "/Version", "/DSS"},
    "page": {"/Annots"},
    "info": {"/ModDate", "/Producer"},
}


# ------------------------------------------------------------ PDF/A-3b kept

def check_still_pdfa_3b(pdf: bytes) -> None:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        meta = doc.open_metadata()
        assert meta.get("pdfaid:part") == "3" and meta.get("pdfaid:conformance") == "B"
        intents = doc.Root.get(Name.OutputIntents, [])
        assert len(intents) == 1 and intents[0].S == Name.GTS_PDFA1
        profile = intents[0].DestOutputProfile
        assert int(profile.N) == 3 and profile.read_bytes()[36:40] == b"acsp"  # an ICC profile
        for page in doc.pages:
            for font in page.Resources.Font.values():
                assert font.Subtype == Name.TrueType, font.BaseFont
                assert Name.FontFile2 in font.FontDescriptor and Name.ToUnicode in font, font.BaseFont
        form = doc.Root.AcroForm
        assert Name.NeedAppearances not in form and Name.XFA not in form  # PDF/A-3 6.4.1, 6.4.2
        for field in form.Fields:  # invisible, printed, locked: no appearance needed (6.3.3)
            assert [float(x) for x in field.Rect] == [0, 0, 0, 0] and int(field.F) == 132
        assert Name.Encrypt not in doc.trailer


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_signed_file_is_still_pdfa_3b(packaged, name):
    unsigned, signed = packaged(name)
    check_still_pdfa_3b(signed)


# ------------------------------------------------------------ the incremental update

def object_table(doc: pikepdf.Pdf) -> dict[tuple[int, int], tuple[bytes, bytes]]:
    """Each object: its serialised dictionary or value, and its raw stream data."""
    table = {}
    for obj in doc.objects:
        if isinstance(obj, pikepdf.Stream):
            table[obj.objgen] = (obj.stream_dict.unparse(), obj.read_raw_bytes())
        elif obj.objgen != (0, 0):
            table[obj.objgen] = (obj.unparse(resolved=True), b"")
    return table


def changed_keys(old: pikepdf.Dictionary, new: pikepdf.Dictionary) -> set[str]:
    """Keys added, removed or given another value (an indirect value compares as its reference)."""
    def value(d, k):
        return pikepdf.Array([d[k]]).unparse() if k in d else None
    return {k for k in set(old.keys()) | set(new.keys()) if value(old, k) != value(new, k)}


def unexplained_changes(unsigned: bytes, signed: bytes) -> list[str]:
    """Objects the signed file adds or changes beyond what PAdES signing needs (empty when none)."""
    assert signed.startswith(unsigned)  # an incremental update: the unsigned revision is intact
    with pikepdf.open(io.BytesIO(unsigned)) as before, pikepdf.open(io.BytesIO(signed)) as after:
        old, new = object_table(before), object_table(after)
        assert set(old) <= set(new), "objects removed"
        form = after.Root.AcroForm
        fields = {f.objgen for f in form.Fields}
        signatures = {f.V.objgen for f in form.Fields}
        widgets_pages = {f.P.objgen for f in form.Fields if Name.P in f}
        roles = {after.Root.objgen: "catalog", after.trailer.Info.objgen: "info",
                 after.Root.Metadata.objgen: "xmp", form.objgen: "acroform"}
        roles.update({p.objgen: "page" for p in after.pages if p.objgen in widgets_pages
                      or any(a.objgen in fields for a in p.get(Name.Annots, []))})
        if Name.DSS in after.Root:
            roles[after.Root.DSS.objgen] = "dss"
        problems = []
        for objgen in sorted(set(new)):
            if old.get(objgen) == new[objgen]:
                continue
            obj = after.get_object(objgen)
            kind = obj.get(Name.Type) if isinstance(obj, (pikepdf.Dictionary, pikepdf.Stream)) else None
            if objgen not in old:  # added
                if objgen in fields and obj.get(Name.FT) == Name.Sig and obj.get(Name.Subtype) == Name.Widget:
                    continue
                if objgen in signatures and kind == Name.Sig:
                    continue
                if kind in (Name.XRef, Name.ObjStm) or roles.get(objgen) in ("acroform", "dss"):
                    continue
                problems.append(f"added {objgen} {kind}")
                continue
            role = roles.get(objgen)
            if role == "xmp":
                continue  # rewritten by pyHanko: check_still_pdfa_3b reads it
            if role in ALLOWED_KEY_CHANGES:
                extra = changed_keys(before.get_object(objgen), obj) - ALLOWED_KEY_CHANGES[role]
                if not extra:
                    continue
                problems.append(f"{role} {objgen} changed {sorted(extra)}")
                continue
            problems.append(f"changed {objgen} {kind}")
        return problems


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_signing_changes_only_what_pades_needs(packaged, name):
    unsigned, signed = packaged(name)
    assert unexplained_changes(unsigned, signed) == []


def test_a_later_change_to_the_embedded_cda_entry_is_seen(packaged):
    """The comparison is not blind: an update after signing that touches the cda.xml file spec shows."""
    unsigned, signed = packaged("LAB")
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    spec = writer.root["/Names"]["/EmbeddedFiles"]["/Names"][1]
    spec["/Desc"] = generic.pdf_string("un altro documento")
    writer.update_container(spec)
    out = io.BytesIO()
    writer.write(out)
    problems = unexplained_changes(unsigned, out.getvalue())
    assert len(problems) == 1 and problems[0].startswith("changed"), problems


# ------------------------------------------------------------ pyHanko

@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_pyhanko_validates_the_submitted_file(packaged, trust, name):
    _, signed = packaged(name)
    _, status = validate(signed, trust)
    assert status.intact and status.valid and status.trusted


# ------------------------------------------------------------ a verifier that is not pyHanko

class CmsError(AssertionError):
    """The CMS does not verify over the signed bytes."""


def signed_bytes_and_cms(pdf: bytes) -> tuple[bytes, bytes]:
    """The bytes /ByteRange covers (the whole file but /Contents) and the CMS in /Contents."""
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        (field,) = doc.Root.AcroForm.Fields
        start1, length1, start2, length2 = (int(x) for x in field.V.ByteRange)
    if start1 != 0 or start2 + length2 != len(pdf):
        raise CmsError("the byte ranges do not cover the whole file")
    hole = pdf[start1 + length1:start2]
    if not (hole.startswith(b"<") and hole.endswith(b">")):
        raise CmsError("the gap between the byte ranges is not the /Contents string")
    return pdf[start1:start1 + length1] + pdf[start2:start2 + length2], bytes.fromhex(hole[1:-1].decode())


def verify_cms(pdf: bytes, issuer: x509.Certificate) -> x509.Certificate:
    """Check the detached CMS as the gateway does (pdf.md section 5), plus the issuer's signature
    on the signer's certificate; return that certificate."""
    data, contents = signed_bytes_and_cms(pdf)
    info = asn1_cms.ContentInfo.load(contents)  # the zero padding after the DER is ignored
    if info["content_type"].native != "signed_data":
        raise CmsError("not a CMS SignedData")
    signed_data = info["content"]
    if signed_data["encap_content_info"]["content"].native is not None:
        raise CmsError("not a detached signature")
    (signer,) = signed_data["signer_infos"]
    if signer["digest_algorithm"]["algorithm"].native != "sha256":
        raise CmsError("digest is not SHA-256")
    attrs = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
    if attrs["content_type"].native != "data":
        raise CmsError("content-type attribute is not data")
    if attrs["message_digest"].native != hashlib.sha256(data).digest():
        raise CmsError("message-digest attribute does not match the signed bytes")
    sid = signer["sid"]
    certificate = next(
        c.chosen for c in signed_data["certificates"]
        if (sid.name == "issuer_and_serial_number"
            and c.chosen.issuer == sid.chosen["issuer"] and c.chosen.serial_number == sid.chosen["serial_number"].native)
        or (sid.name == "subject_key_identifier" and c.chosen.key_identifier == sid.chosen.native))
    if attrs["signing_certificate_v2"]["certs"][0]["cert_hash"].native != hashlib.sha256(certificate.dump()).digest():
        raise CmsError("signing-certificate-v2 names another certificate")
    # RFC 5652 5.4: the signature is over the DER of the attributes as a SET OF (tag 0x31), not [0]
    signed_attrs = b"\x31" + signer["signed_attrs"].dump()[1:]
    cert = x509.load_der_x509_certificate(certificate.dump())
    key = cert.public_key()
    signature = signer["signature"].native
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed_attrs, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed_attrs, ec.ECDSA(hashes.SHA256()))
        else:
            raise CmsError(f"unexpected key type {type(key).__name__}")
    except InvalidSignature:
        raise CmsError("the signature does not verify over the signed attributes") from None
    cert.verify_directly_issued_by(issuer)
    return cert


@pytest.fixture(scope="module")
def issuer(pki) -> x509.Certificate:
    return certs.load_credential(pki.ca_cert, pki.ca_key).certificate


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_cms_verifies_over_the_byte_ranges_without_pyhanko(packaged, issuer, name):
    _, signed = packaged(name)
    cert = verify_cms(signed, issuer)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "S1#090#01386030488PIPOHOUSE"


def test_long_multipage_report_is_submitted_as_checked(signer, trust, issuer):
    cda = sample("LDO").replace(b"</paragraph>", b" " + b"testo del decorso clinico " * 400 + b"</paragraph>")
    unsigned = package.build_unsigned_pdf(cda, signer_name=signer.display_name)
    signed = signer.sign(unsigned)
    check_still_pdfa_3b(signed)
    assert unexplained_changes(unsigned, signed) == []
    assert validate(signed, trust)[1].valid
    verify_cms(signed, issuer)
    assert package.extract_cda(signed) == cda


def test_a_changed_byte_in_the_signed_ranges_fails_the_cms_check(packaged, issuer, trust):
    unsigned, signed = packaged("RAD")
    # the binary-marker comment, a compressed stream of the unsigned revision, the signature's /Reason
    for at in (10, len(unsigned) // 2, signed.rindex(b"Referto firmato") + 3):
        tampered = bytearray(signed)
        tampered[at] ^= 0x01
        with pytest.raises(CmsError, match="message-digest"):
            verify_cms(bytes(tampered), issuer)
    assert not validate(bytes(tampered), trust)[1].intact


def test_a_changed_signature_value_fails_the_cms_check(packaged, issuer):
    _, signed = packaged("RAD")
    _, contents = signed_bytes_and_cms(signed)
    signature = asn1_cms.ContentInfo.load(contents)["content"]["signer_infos"][0]["signature"].native
    at = signed.lower().index(signature.hex().encode()) + 20  # a hex digit inside the signature value
    tampered = bytearray(signed)
    tampered[at:at + 1] = b"0" if tampered[at:at + 1] != b"0" else b"1"
    with pytest.raises(CmsError, match="signature does not verify"):
        verify_cms(bytes(tampered), issuer)


def test_the_pdfa_check_is_not_blind(signer):
    """A signed report that never was PDF/A (reportlab's file, signed as is) fails check_still_pdfa_3b."""
    plain = signer.sign(package.render(sample("LAB"), signer_name=signer.display_name))
    with pytest.raises(AssertionError, match="pdfaid"):
        check_still_pdfa_3b(plain)
