"""The PDF the gateway receives: report → PDF/A-3b → embedded ``cda.xml`` → PAdES.

pdf.md sections 2.1 and 4; gateway.md section 6. The CDA travels as an
embedded file of the document-level EmbeddedFiles name tree, key, /F and /UF
all ``cda.xml`` (the gateway's compare is case-sensitive), its bytes
unchanged in the stream at /EF /F, associated to the document for PDF/A-3
(/AFRelationship /Data, catalog /AF). Signing is an incremental update, so
the PDF/A part and the embedded file are untouched by it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import pikepdf
from pikepdf import Array, Dictionary, Name, String
from pikepdf.pdfa import prepare, resolve_save_kwargs

from bridge.errors import DocumentTooLarge, ParseError
from bridge.pdf.view import parse_cda, read_view
from bridge.pdf.layout import Layout
from bridge.pdf.glyphs import Glyphs
from bridge.pdf.render import render_report
from bridge.pdf.sign import Signer

ATTACHMENT_NAME = "cda.xml"
#: pdf.md section 1: 1 MB (the gateway's upload limit, Spring Boot's default) is the hard ceiling.
MAX_PDF_BYTES = 1024 * 1024
PDFA_FLAVOUR = "3b"


def _pdf_date(when: dt.datetime) -> str:
    when = when.astimezone(dt.timezone.utc)
    return when.strftime("D:%Y%m%d%H%M%S+00'00'")


def render(cda: bytes, *, signer_name: str | None = None, layout: Layout | None = None) -> bytes:
    """The report rendered from *cda* (ParseError when it is not a CDA)."""
    layout = layout or Layout()
    root = Glyphs(layout).tree(parse_cda(cda))
    return render_report(read_view(root), signer_name=signer_name, layout=layout)


def make_pdfa(pdf: pikepdf.Pdf, *, when: dt.datetime | None = None) -> None:
    """Turn the rendered report into PDF/A-3b in memory: sRGB output intent, XMP, Info."""
    # reportlab's invariant mode writes 2000-01-01; prepare() copies Info into the XMP
    date = String(_pdf_date(when or dt.datetime.now(dt.timezone.utc)))
    pdf.docinfo[Name.CreationDate] = date
    pdf.docinfo[Name.ModDate] = date
    for page in pdf.pages:
        # reportlab writes an empty /Trans on every page; the validator refuses it
        if Name.Trans in page.obj:
            del page.obj[Name.Trans]
    prepare(pdf, PDFA_FLAVOUR, output_intent="sRGB")


def embed_cda(pdf: pikepdf.Pdf, cda: bytes, *, when: dt.datetime | None = None) -> None:
    """Attach *cda* as ``cda.xml`` exactly as pdf.md section 2.1 says (flat name tree)."""
    date = String(_pdf_date(when or dt.datetime.now(dt.timezone.utc)))
    stream = pikepdf.Stream(pdf, cda)  # bytes as given; Flate-compressed on save
    stream.Type = Name.EmbeddedFile
    stream.Subtype = Name("/application/xml")
    stream.Params = Dictionary(Size=len(cda), CreationDate=date, ModDate=date,
                               CheckSum=String(hashlib.md5(cda).digest()))
    filespec = pdf.make_indirect(Dictionary(
        Type=Name.Filespec,
        F=String(ATTACHMENT_NAME),
        UF=String(ATTACHMENT_NAME),
        Desc=String("Documento clinico HL7 CDA R2"),
        EF=Dictionary(F=stream, UF=stream),
        AFRelationship=Name.Data,
    ))
    root = pdf.Root
    if Name.Names not in root:
        root.Names = Dictionary()
    # One flat tree: the gateway reads the root /Names (or one level of /Kids).
    root.Names.EmbeddedFiles = Dictionary(Names=Array([String(ATTACHMENT_NAME), filespec]))
    root.AF = Array([filespec])


def save_pdfa(pdf: pikepdf.Pdf) -> bytes:
    """Write with the settings PDF/A-3b needs (pikepdf.pdfa.resolve_save_kwargs)."""
    out = io.BytesIO()
    pdf.save(out, **resolve_save_kwargs(PDFA_FLAVOUR, deterministic_id=True))
    return out.getvalue()


def build_unsigned_pdf(cda: bytes, *, signer_name: str | None = None,
                       layout: Layout | None = None, when: dt.datetime | None = None) -> bytes:
    """Render *cda*, make it PDF/A-3b and embed it as ``cda.xml``: the file to validate."""
    report = render(cda, signer_name=signer_name, layout=layout)
    with pikepdf.open(io.BytesIO(report)) as pdf:
        when = when or dt.datetime.now(dt.timezone.utc)
        make_pdfa(pdf, when=when)
        embed_cda(pdf, cda, when=when)
        return save_pdfa(pdf)


def package_pdf(cda: bytes, signer: Signer, *, layout: Layout | None = None,
                max_bytes: int = MAX_PDF_BYTES) -> bytes:
    """The complete package: build_unsigned_pdf then the PAdES signature of *signer*.

    DocumentTooLarge (AE) when the signed PDF is over *max_bytes*: the gateway would refuse it.
    """
    unsigned = build_unsigned_pdf(cda, signer_name=signer.display_name, layout=layout)
    signed = signer.sign(unsigned)
    if len(signed) > max_bytes:
        raise DocumentTooLarge(f"the signed PDF would be {len(signed):,} bytes, over the gateway's "
                               f"{max_bytes:,}: send attachments (OBX-5) smaller or fewer, or the "
                               f"report in parts", location="OBX")
    return signed


def extract_cda(pdf: bytes) -> bytes:
    """The embedded CDA read the way the gateway reads it (pdf.md section 2.1, steps 1-4).

    The catalog's EmbeddedFiles name tree: the root node's /Names, or else the
    /Names of its direct /Kids; an entry whose key, or whose file name (/UF
    first, then /F), is exactly ``cda.xml``; the decoded stream at /EF /F.
    """
    try:
        with pikepdf.open(io.BytesIO(pdf)) as doc:
            tree = doc.Root.get(Name.Names, Dictionary()).get(Name.EmbeddedFiles)
            if tree is None:
                raise ParseError("the PDF has no EmbeddedFiles name tree")
            if Name.Names in tree:
                arrays = [tree.Names]
            else:
                arrays = [kid.Names for kid in tree.get(Name.Kids, Array()) if Name.Names in kid]
            for names in arrays:
                for i in range(0, len(names) - 1, 2):
                    key, spec = str(names[i]), names[i + 1]
                    filename = spec.get(Name.UF, spec.get(Name.DOS, spec.get(Name.Mac, spec.get(
                        Name.Unix, spec.get(Name.F)))))
                    if key == ATTACHMENT_NAME or (filename is not None and str(filename) == ATTACHMENT_NAME):
                        return spec.EF.F.read_bytes()
    except pikepdf.PdfError:
        raise ParseError("not a readable PDF") from None
    raise ParseError(f"no embedded file named {ATTACHMENT_NAME}")
