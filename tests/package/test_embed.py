"""cda.xml inside the PDF, read the way the gateway reads it (pdf.md section 2.1)."""

import io

import pikepdf
import pytest
from pypdf import PdfReader

from bridge.pdf import package
from bridge.errors import ParseError

from .package_samples import SAMPLE_NAMES, sample


def gateway_extract(pdf: bytes) -> bytes:
    """Independent replay of PDFUtility.extractContentFromAttachments with pypdf:
    catalog /Names /EmbeddedFiles, root /Names (else one level of /Kids), exact
    "cda.xml" as key or file name (/UF first, then /F), content of /EF /F."""
    root = PdfReader(io.BytesIO(pdf)).trailer["/Root"]
    tree = root["/Names"]["/EmbeddedFiles"]
    arrays = [tree["/Names"]] if "/Names" in tree else [k.get_object()["/Names"] for k in tree["/Kids"]]
    for names in arrays:
        for key, spec in zip(names[::2], names[1::2]):
            spec = spec.get_object()
            filename = spec.get("/UF", spec.get("/F"))
            if key == "cda.xml" or filename == "cda.xml":
                return spec["/EF"]["/F"].get_object().get_data()
    raise AssertionError("cda.xml not found")


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_signed_pdf_carries_the_cda_byte_for_byte(packaged, name):
    unsigned, signed = packaged(name)
    assert signed.startswith(b"%PDF")
    assert gateway_extract(signed) == sample(name)
    assert package.extract_cda(signed) == sample(name)
    assert signed.startswith(unsigned)  # signing is an incremental update


def test_embedded_file_entry_is_as_specified(packaged):
    unsigned, _ = packaged("LAB")
    cda = sample("LAB")
    with pikepdf.open(io.BytesIO(unsigned)) as pdf:
        names = pdf.Root.Names.EmbeddedFiles.Names  # flat tree: root /Names
        assert len(names) == 2 and str(names[0]) == "cda.xml"
        spec = names[1]
        assert str(spec.F) == "cda.xml" and str(spec.UF) == "cda.xml"
        assert spec.AFRelationship == pikepdf.Name.Data
        assert spec.objgen == pdf.Root.AF[0].objgen
        stream = spec.EF.F
        assert stream.objgen == spec.EF.UF.objgen
        assert stream.Type == pikepdf.Name.EmbeddedFile
        assert stream.Subtype == pikepdf.Name("/application/xml")
        assert stream.Filter == pikepdf.Name.FlateDecode
        assert int(stream.Params.Size) == len(cda)
        import hashlib
        assert bytes(stream.Params.CheckSum) == hashlib.md5(cda).digest()
        assert stream.read_bytes() == cda


def test_cda_bytes_are_not_reencoded(signer):
    # ISO-8859-1 declared, CRLF, BOM-less: whatever comes in goes in unchanged
    cda = sample("LAB").replace(b"\n", b"\r\n")
    cda = b'<?xml version="1.0" encoding="ISO-8859-1"?>\r\n' + cda.replace(b"Urine</td>", "Urine è</td>".encode("latin-1"))
    signed = package.package_pdf(cda, signer)
    assert gateway_extract(signed) == cda


def test_extract_refuses_a_pdf_without_cda(packaged):
    unsigned, _ = packaged("LAB")
    with pikepdf.open(io.BytesIO(unsigned)) as pdf:
        names = pdf.Root.Names.EmbeddedFiles.Names
        names[0] = pikepdf.String("CDA.xml")  # the gateway's compare is case-sensitive
        names[1].F = pikepdf.String("CDA.xml")
        names[1].UF = pikepdf.String("CDA.xml")
        out = io.BytesIO()
        pdf.save(out)
    with pytest.raises(ParseError, match="no embedded file named cda.xml"):
        package.extract_cda(out.getvalue())
    with pytest.raises(ParseError, match="not a readable PDF"):
        package.extract_cda(b"%PDF-1.7 broken")
