"""The gateway's view of the PDF: cda.xml extraction and the PAdES check, with their reasons."""

import pikepdf
import pytest

from bridge.simulator import cdaread, pdfcheck

from gateway_kit import PATIENT, build_pdf, make_cda


def test_extraction_returns_the_exact_bytes_flat_and_in_kids():
    cda = make_cda()
    assert pdfcheck.extract_cda(build_pdf(cda)) == cda
    assert pdfcheck.extract_cda(build_pdf(cda, in_kids=True)) == cda


@pytest.mark.parametrize("name", ["CDA.xml", "cda.XML", "cda.xml.txt"])
def test_extraction_is_case_sensitive(name):
    with pytest.raises(pdfcheck.PdfProblem, match="exactly cda.xml"):
        pdfcheck.extract_cda(build_pdf(make_cda(), name=name))


def test_extraction_needs_ef_f_and_a_pdf():
    import io

    pdf = pikepdf.open(io.BytesIO(build_pdf(make_cda())))
    spec = pdf.Root.Names.EmbeddedFiles.Names[1]
    del spec.EF["/F"]
    out = io.BytesIO()
    pdf.save(out)
    with pytest.raises(pdfcheck.PdfProblem, match="/EF /F"):
        pdfcheck.extract_cda(out.getvalue())
    with pytest.raises(pdfcheck.PdfProblem, match="unreadable"):
        pdfcheck.extract_cda(b"%PDF-1.7 garbage")
    with pytest.raises(pdfcheck.PdfProblem, match="EmbeddedFiles"):
        pdfcheck.extract_cda(build_pdf(None))


def test_pades_reasons(package):
    pdfcheck.check_pades(package)
    with pytest.raises(pdfcheck.PdfProblem, match="non risulta firmato"):
        pdfcheck.check_pades(build_pdf(make_cda()))
    with pytest.raises(pdfcheck.PdfProblem, match="no /M"):
        pdfcheck.check_pades(package.replace(b"\n/M (D", b"\n/X (D", 1))
    changed = bytearray(package)
    changed[10] ^= 1
    with pytest.raises(pdfcheck.PdfProblem, match="signed bytes were changed"):
        pdfcheck.check_pades(bytes(changed))


def test_empty_signature_field_fails(package, pki):
    import io

    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields

    writer = IncrementalPdfFileWriter(io.BytesIO(package))
    fields.append_signature_field(writer, fields.SigFieldSpec("Empty"))
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(pdfcheck.PdfProblem, match="empty signature field"):
        pdfcheck.check_pades(out.getvalue())


def test_cda_read_like_jsoup():
    facts = cdaread.read_cda(make_cda())
    assert facts.id_root == "2.16.840.1.113883.2.9.2.90.4.4"
    assert facts.id_extension == "01386030488.LAB.999.A26-00412_1"
    assert facts.resource_hl7_type == "('11502-2^^2.16.840.1.113883.6.1')"
    assert ("2.16.840.1.113883.2.9.4.3.2", PATIENT) in facts.patient_ids
    prefixed = make_cda().replace(b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"",
                                  b"<hl7:ClinicalDocument xmlns:hl7=\"urn:hl7-org:v3\" xmlns=\"urn:hl7-org:v3\"")
    prefixed = prefixed.replace(b"</ClinicalDocument>", b"</hl7:ClinicalDocument>")
    prefixed = prefixed.replace(b"<id root=\"2.16.840.1.113883.2.9.2.90.4.4\"", b"<hl7:id root=\"2.16.840.1.113883.2.9.2.90.4.4\"", 1)
    # a prefixed id is another tag to jsoup: the first plain <id> is taken instead
    assert cdaread.read_cda(prefixed).id_root != "2.16.840.1.113883.2.9.2.90.4.4"
    with pytest.raises(cdaread.CdaProblem):
        cdaread.read_cda(b"<ClinicalDocument>")
