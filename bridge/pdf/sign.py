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
import dataclasses
import datetime as dt
import hashlib
import io
import threading
from typing import Protocol

from asn1crypto import cms as asn1_cms
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
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


class _CmsTemplate:
    """pyHanko's CMS for one signer, with the two parts that change per document cut out.

    For a PAdES B-B signature with a fixed key, the CMS differs from one
    document to the next only in the message-digest attribute and the
    signature value (pdf.md section 5: no signing-time attribute, /M carries
    the time). asn1crypto spends about 7 ms re-encoding the certificate and
    the signing-certificate-v2 attribute for every signature; splicing the two
    values into the DER pyHanko produced once gives the same bytes for a few
    microseconds. :meth:`build` checks that on a second document before the
    template is used, so a signer whose output is not of this shape (ECDSA,
    whose signatures change length; attributes that depend on the time)
    keeps pyHanko's own path.
    """

    def __init__(self, attrs: tuple[bytes, bytes], cms: tuple[bytes, bytes, bytes], digest_size: int):
        self._attrs = attrs
        self._cms = cms
        self.digest_size = digest_size

    def signed_attrs(self, digest: bytes) -> bytes:
        """The DER of the signed attributes (SET OF, as signed) for *digest*."""
        return self._attrs[0] + digest + self._attrs[1]

    def content_info(self, digest: bytes, signature: bytes) -> bytes:
        head, middle, tail = self._cms
        return head + digest + middle + signature + tail

    @classmethod
    async def build(cls, signer: "_ParsedKeySigner", digest_algorithm: str) -> "_CmsTemplate | None":
        """The template for *signer*, or None when its CMS is not of the expected shape."""
        algo = get_pyca_cryptography_hash(digest_algorithm)
        probes = []
        for n, when in enumerate((dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
                                  dt.datetime(2021, 6, 15, 12, 30, tzinfo=dt.timezone.utc))):
            hasher = hashes.Hash(algo)
            hasher.update(f"fse-bridge CMS template probe {n}".encode())
            digest = hasher.finalize()
            info = await signers.SimpleSigner.async_sign(
                signer, digest, digest_algorithm, use_pades=True,
                signed_attr_settings=PdfCMSSignedAttributes(signing_time=when))
            signer_info = info["content"]["signer_infos"][0]
            # in the CMS the attributes are [0] IMPLICIT; what is signed is the SET OF
            attrs = b"\x31" + signer_info["signed_attrs"].dump()[1:]
            probes.append((digest, attrs, signer_info["signature"].native, info.dump()))
        digest, attrs, signature, der = probes[0]
        if attrs.count(digest) != 1 or der.count(digest) != 1 or der.count(signature) != 1:
            return None
        a_head, a_tail = attrs.split(digest)
        head, rest = der.split(digest)
        if rest.count(signature) != 1:
            return None
        middle, tail = rest.split(signature)
        template = cls((a_head, a_tail), (head, middle, tail), len(digest))
        digest2, attrs2, _, der2 = probes[1]
        if template.signed_attrs(digest2) != attrs2:
            return None
        signature2 = signer.sign_raw(attrs2, digest_algorithm)
        if template.content_info(digest2, signature2) != der2:
            return None
        return template


class _ParsedKeySigner(signers.SimpleSigner):
    """pyHanko's SimpleSigner re-parses the DER key for every raw signature,
    and cryptography validates RSA keys on load: ~10x slower (pdf.md section 7).
    This one keeps the parsed key, and the CMS around the signature as a
    template (:class:`_CmsTemplate`)."""

    def __init__(self, cred: Credential):
        cert = asn1_x509.Certificate.load(cred.der)
        key_info = asn1_keys.PrivateKeyInfo.load(cred.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        registry = SimpleCertificateStore.from_certs(
            [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in cred.chain])
        super().__init__(signing_cert=cert, signing_key=key_info, cert_registry=registry)
        self._key = cred.private_key
        self._templates: dict[str, _CmsTemplate | None] = {}
        """Per digest algorithm; None: this signer's CMS does not fit a template."""

    def has_template(self, digest_algorithm: str) -> bool:
        """Whether signatures with *digest_algorithm* come from a template (see async_sign)."""
        return self._templates.get(digest_algorithm.lower()) is not None

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

    async def async_sign(self, data_digest: bytes, digest_algorithm: str, dry_run=False,
                         use_pades=False, timestamper=None,
                         signed_attr_settings: PdfCMSSignedAttributes | None = None,
                         is_pdf_sig=True, encap_content_info=None, **extra) -> asn1_cms.ContentInfo:
        """pyHanko's CMS, from the template when the call is the PAdES B-B one packaging makes."""
        settings = signed_attr_settings or PdfCMSSignedAttributes()
        plain = (not dry_run and use_pades and timestamper is None and is_pdf_sig
                 and encap_content_info is None and not extra  # (options of a later pyHanko)
                 # the signing time is not in a PAdES CMS; any other attribute setting is
                 and dataclasses.replace(settings, signing_time=None) == PdfCMSSignedAttributes())
        template = None
        if plain:
            algorithm = digest_algorithm.lower()
            if algorithm not in self._templates:
                self._templates[algorithm] = await _CmsTemplate.build(self, algorithm)
            template = self._templates[algorithm]
        if template is None or len(data_digest) != template.digest_size:
            return await super().async_sign(
                data_digest, digest_algorithm, dry_run=dry_run, use_pades=use_pades,
                timestamper=timestamper, signed_attr_settings=signed_attr_settings,
                is_pdf_sig=is_pdf_sig, encap_content_info=encap_content_info, **extra)
        signature = self.sign_raw(template.signed_attrs(data_digest), algorithm)
        return asn1_cms.ContentInfo.load(template.content_info(data_digest, signature))


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

        Works from any thread. With a local key (from_credential) whose CMS
        template is built (by the first document, on a loop: pyHanko's own CMS
        path needs one) nothing is awaited for real, so the coroutine is run to
        its end directly, without an event loop (asyncio.run costs about 0.5 ms
        per document); should it
        ever suspend, it is dropped and run again from the start on a loop
        (a local signature has no side effect to undo). Other CMS signers (a
        remote service, an HSM) go straight to a loop of their own, as
        pyHanko's synchronous API would; when called on a thread whose loop is
        already running (asyncio.run would refuse), on a helper thread.
        """
        if self._reserve is not None and isinstance(self._cms_signer, _ParsedKeySigner) \
                and self._cms_signer.has_template(self._meta.md_algorithm):
            coro = self.sign_async(pdf)
            try:
                coro.send(None)
            except StopIteration as done:
                return done.value
            coro.close()
        return self._sign_on_loop(pdf)

    def _sign_on_loop(self, pdf: bytes) -> bytes:
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
