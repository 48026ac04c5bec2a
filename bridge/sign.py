"""PAdES baseline B-B signature of the packaged PDF (pdf.md section 5, gateway.md section 6).

The profile is the one the ministry's own tool produces and the gateway
verifies: ``/SubFilter /ETSI.CAdES.detached``, SHA-256, signed attributes
content-type, message-digest and signing-certificate-v2, the certificate in
the CMS, ``/M`` in the signature dictionary, an incremental update, one
invisible approval field ``Signature1`` (``/Rect [0 0 0 0]``, ``/F 132``:
Print + Locked, which keeps PDF/A-3).

A signer is anything with ``display_name`` and ``sign(pdf) -> pdf`` (see
:class:`Signer`): :class:`PdfSigner` signs with a local key (the structure's
S1 certificate by default) and takes any pyHanko CMS signer, so a legal
authenticator's certificate, an HSM or a remote signing service can replace
the key without touching the packaging.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import threading
from typing import Protocol

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError, PdfReadError
from pyhanko.sign import fields, signers
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko.sign.general import SigningError as PyHankoSigningError
from pyhanko.sign.general import get_pyca_cryptography_hash
from pyhanko_certvalidator.registry import SimpleCertificateStore

from bridge.certs import Credential
from bridge.errors import BridgeError

FIELD_NAME = "Signature1"


class SigningError(BridgeError):
    """The PDF could not be signed (damaged input, signer failure)."""


class Signer(Protocol):
    """What packaging needs from a signer."""

    @property
    def display_name(self) -> str:
        """Who signs, as printed in the report's footer."""

    def sign(self, pdf: bytes) -> bytes:
        """The PAdES-signed PDF (an incremental update of *pdf*)."""


class _ParsedKeySigner(signers.SimpleSigner):
    """pyHanko's SimpleSigner re-parses the DER key for every raw signature,
    and cryptography validates RSA keys on load: ~10x slower (pdf.md section 7).
    This one keeps the parsed key."""

    def __init__(self, cred: Credential):
        cert = asn1_x509.Certificate.load(cred.der)
        key_info = asn1_keys.PrivateKeyInfo.load(cred.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        registry = SimpleCertificateStore.from_certs(
            [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in cred.chain])
        super().__init__(signing_cert=cert, signing_key=key_info, cert_registry=registry)
        self._key = cred.private_key

    def _dry_run_length(self) -> int:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return (self._key.key_size + 7) // 8
        # DER ECDSA signature: two integers of up to n+1 bytes plus headers
        return 2 * ((self._key.curve.key_size + 7) // 8 + 1) + 8

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if dry_run:  # only the size matters when pyHanko estimates the space to reserve
            return bytes(self._dry_run_length())
        return self.sign_raw(data, digest_algorithm)

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        hash_algo = get_pyca_cryptography_hash(digest_algorithm)
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, padding.PKCS1v15(), hash_algo)
        return self._key.sign(data, ec.ECDSA(hash_algo))


class PdfSigner:
    """PAdES B-B signer built on a pyHanko CMS signer; reusable and thread-safe."""

    def __init__(self, cms_signer: signers.Signer, *, display_name: str,
                 reason: str | None = None, location: str | None = None,
                 name: str | None = None):
        self._cms_signer = cms_signer
        self._display_name = display_name
        self._reserve: int | None = None
        """Bytes for /Contents, measured once (pyHanko would build a dummy CMS per document)."""
        self._meta = signers.PdfSignatureMetadata(
            field_name=FIELD_NAME,
            md_algorithm="sha256",
            subfilter=fields.SigSeedSubFilter.PADES,
            name=name or display_name,
            reason=reason,
            location=location,
        )

    @classmethod
    def from_credential(cls, cred: Credential, *, reason: str | None = "Referto firmato",
                        location: str | None = None) -> "PdfSigner":
        """A signer with *cred*'s key, parsed once and reused for every document."""
        return cls(_ParsedKeySigner(cred), display_name=cred.cn, reason=reason, location=location)

    @property
    def display_name(self) -> str:
        return self._display_name

    async def sign_async(self, pdf: bytes) -> bytes:
        """Sign *pdf*; for callers already running an asyncio loop."""
        try:
            writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
        except (PdfReadError, ValueError, KeyError, TypeError) as exc:
            raise SigningError(f"cannot sign: not a readable PDF ({exc.__class__.__name__})") from None
        if self._reserve is None:
            self._reserve = await self._measure_reserve()
        pdf_signer = signers.PdfSigner(
            self._meta, signer=self._cms_signer,
            new_field_spec=fields.SigFieldSpec(sig_field_name=FIELD_NAME))
        try:
            out = await pdf_signer.async_sign_pdf(writer, bytes_reserved=self._reserve)
        except (PyHankoSigningError, PdfError) as exc:
            raise SigningError(f"cannot sign: {exc}") from None
        return out.getvalue()

    async def _measure_reserve(self) -> int:
        """Room for the CMS: the size of a dry-run container, hex-encoded, plus 50 %
        (what pyHanko's own estimate reserves; the size does not depend on the document)."""
        digest = hashlib.sha256(b"").digest()
        attrs = PdfCMSSignedAttributes(signing_time=dt.datetime.now(dt.timezone.utc))
        cms = await self._cms_signer.async_sign(digest, "sha256", use_pades=True, dry_run=True,
                                                signed_attr_settings=attrs)
        size = len(cms.dump()) * 2
        return size + 2 * (size // 4)

    def sign(self, pdf: bytes) -> bytes:
        """Sign *pdf* synchronously.

        Works from any thread: it runs its own short event loop, as pyHanko's
        synchronous API would; when called on a thread whose loop is already
        running (asyncio.run would refuse), it signs on a helper thread.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.sign_async(pdf))
        result: list = []

        def work():
            try:
                result.append(asyncio.run(self.sign_async(pdf)))
            except BaseException as exc:  # re-raised on the caller's thread
                result.append(exc)

        thread = threading.Thread(target=work, name="pdf-sign")
        thread.start()
        thread.join()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]
