"""What the gateway does with the uploaded PDF (gateway.md section 6, pdf.md sections 1, 2, 5).

- :func:`extract_cda`: the ATTACHMENT extraction exactly as the dispatcher
  does it: the catalog's EmbeddedFiles name tree, its root ``/Names`` or else
  the ``/Names`` of its first-level ``/Kids``, an entry whose key or file name
  (``/UF``, then ``/DOS``, ``/Mac``, ``/Unix``, ``/F``) is exactly
  ``cda.xml``, content from ``/EF /F``.
- :func:`check_pades`: at least one signature; every signature field filled;
  each CMS verifies over its ByteRange (certificate taken from the CMS, no
  trust or revocation check); each signature dictionary has ``/M``.

Both raise :class:`PdfProblem` with a reason (no patient data). They are
CPU work: the server calls them from a worker thread.
"""

from __future__ import annotations

import io

import pikepdf
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.validation.generic_cms import validate_sig_integrity

CDA_NAME = "cda.xml"


class PdfProblem(Exception):
    pass


def _filename(spec) -> str | None:
    for key in ("/UF", "/DOS", "/Mac", "/Unix", "/F"):
        value = spec.get(key)
        if value is not None:
            return str(value)
    return None


def extract_cda(pdf: bytes) -> bytes:
    """The bytes of the embedded ``cda.xml`` (PdfProblem when the gateway would not find it)."""
    try:
        with pikepdf.open(io.BytesIO(pdf)) as doc:
            names = doc.Root.get("/Names")
            tree = names.get("/EmbeddedFiles") if names is not None else None
            if tree is None:
                raise PdfProblem("no /Names /EmbeddedFiles in the catalog")
            if "/Names" in tree:
                arrays = [tree.Names]
            else:
                arrays = [kid.get("/Names") for kid in tree.get("/Kids", [])]
            for array in arrays:
                if array is None:
                    continue
                for i in range(0, len(array) - 1, 2):
                    key, spec = str(array[i]), array[i + 1]
                    if key == CDA_NAME or _filename(spec) == CDA_NAME:
                        ef = spec.get("/EF")
                        if ef is None or "/F" not in ef:
                            raise PdfProblem("the cda.xml file specification has no /EF /F")
                        return ef.F.read_bytes()
            raise PdfProblem("no embedded file named exactly cda.xml")
    except PdfProblem:
        raise
    except Exception as exc:  # the dispatcher swallows every parsing failure the same way
        raise PdfProblem(f"unreadable PDF structure ({type(exc).__name__})") from None


def check_pades(pdf: bytes) -> None:
    """PdfProblem unless every signature field holds a valid CMS signature with /M."""
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        signatures = reader.embedded_signatures
    except Exception as exc:
        raise PdfProblem(f"cannot read the signatures ({type(exc).__name__})") from None
    if not signatures:
        raise PdfProblem("Il pdf non risulta firmato")
    try:
        empty = [name for name, value, _ in enumerate_sig_fields(reader, filled_status=False)]
    except Exception as exc:  # as the dispatcher: any failure reading the fields = invalid signature
        raise PdfProblem(f"cannot read the signature fields ({type(exc).__name__})") from None
    if empty:
        raise PdfProblem(f"empty signature field {empty[0]}")
    for sig in signatures:
        if "/M" not in sig.sig_object:
            raise PdfProblem(f"signature {sig.field_name}: no /M in the signature dictionary")
        try:
            # What BouncyCastle's SignerInformation.verify does for the dispatcher: the
            # message-digest attribute against the ByteRange digest, and the signature
            # with the certificate found in the CMS. No path building, trust or revocation.
            intact, valid = validate_sig_integrity(sig.signer_info, sig.signer_cert, "data",
                                                   sig.compute_digest())
        except Exception as exc:
            raise PdfProblem(f"signature {sig.field_name}: cannot be verified "
                             f"({type(exc).__name__})") from None
        if not intact:
            raise PdfProblem(f"signature {sig.field_name}: the signed bytes were changed")
        if not valid:
            raise PdfProblem(f"signature {sig.field_name}: the signature does not verify")
