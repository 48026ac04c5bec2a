"""Certificates: load, check and (for development) generate the A1/S1 pair.

The Region's CART gateway takes two certificates issued by CA Sogei
(gateway.md section 9): an authentication certificate ``A<n>#090#<code><vendor>``
for mutual TLS and a signature certificate ``S<n>#090#<code><vendor>`` that
signs the JWTs (and, by default, the PAdES signature, pdf.md section 5).

Keys come as PEM (key and certificate in one file or two) or PKCS#12. Error
messages name the file, never a passphrase or key material.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.errors import ConfigError

Kind = Literal["auth", "sign"]

#: CN patterns of RT section 12: the letter, a progressive, the Region (090),
#: the structure's VAT number or numeric fiscal code (11 digits) or a
#: personal fiscal code (16 characters, omocodia letters allowed), then the vendor.
_CODE = r"(?:[0-9]{11}|[A-Z]{6}[0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z])"
CN_PATTERNS = {
    "auth": re.compile(rf"^A[1-9][0-9]*#090#{_CODE}\S.*$"),
    "sign": re.compile(rf"^S[1-9][0-9]*#090#{_CODE}\S.*$"),
}
#: The structure's code in such a CN.
_CN_CODE = re.compile(rf"^[AS][1-9][0-9]*#090#({_CODE})")

_PKCS12_SUFFIXES = {".p12", ".pfx"}
_PEM_KEY = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, eq=False)
class Credential:
    """A certificate with its private key (parsed once) and the rest of its chain."""

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()
    source: Path | None = None
    """The certificate file it came from (for messages)."""

    @property
    def cn(self) -> str:
        attrs = self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""

    @property
    def der(self) -> bytes:
        """The certificate, DER."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        """The certificate, PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def chain_pem(self) -> bytes:
        """The certificate then its chain, PEM (what a TLS client presents)."""
        return self.pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM, for in-memory TLS contexts. Never log it."""
        return self.private_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())

    def __repr__(self) -> str:  # never show the key
        return f"Credential(cn={self.cn!r}, source={str(self.source) if self.source else None!r})"


# --------------------------------------------------------------------------- loading

def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", file=str(path)) from None


def _load_pem_key(data: bytes, path: Path, passphrase: bytes | None) -> PrivateKey:
    match = _PEM_KEY.search(data)
    if not match:
        raise ConfigError("no PEM private key in this file", file=str(path))
    try:
        key = serialization.load_pem_private_key(match.group(0), password=passphrase)
    except TypeError:
        # cryptography: encrypted without a password, or a password for a clear key
        if passphrase is None:
            raise ConfigError("the private key is encrypted and no passphrase is configured",
                              file=str(path)) from None
        key = serialization.load_pem_private_key(match.group(0), password=None)
    except ValueError:
        if passphrase is None:
            raise ConfigError("cannot read the private key (not a supported PEM key)",
                              file=str(path)) from None
        raise ConfigError("cannot decrypt the private key: wrong passphrase or damaged key",
                          file=str(path)) from None
    except Exception:  # unsupported algorithm and the like
        raise ConfigError("cannot read the private key", file=str(path)) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ConfigError("only RSA and EC private keys are supported", file=str(path))
    return key


def _load_pem_certs(data: bytes, path: Path) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError("no PEM certificate in this file", file=str(path))
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError("cannot parse the PEM certificate", file=str(path)) from None


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_pkcs12(path: Path, passphrase: bytes | None) -> Credential:
    data = _read(path, "PKCS#12 file")
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, passphrase)
    except ValueError:
        if passphrase is None:
            raise ConfigError("cannot open the PKCS#12 file: it needs a passphrase and none is "
                              "configured (or it is not PKCS#12)", file=str(path)) from None
        raise ConfigError("cannot open the PKCS#12 file: wrong passphrase or damaged file",
                          file=str(path)) from None
    except Exception:
        raise ConfigError("cannot open the PKCS#12 file", file=str(path)) from None
    if key is None or cert is None:
        raise ConfigError("the PKCS#12 file must hold a private key and its certificate",
                          file=str(path))
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ConfigError("only RSA and EC private keys are supported", file=str(path))
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise ConfigError("the private key does not match the certificate", file=str(path))
    return Credential(cert, key, tuple(extra or ()), Path(path))


def load_credential(cert_path: Path, key_path: Path | None = None,
                    passphrase: bytes | None = None) -> Credential:
    """Load a certificate and its key: PKCS#12 (``.p12``/``.pfx``) or PEM.

    With PEM the key may be in *key_path* or in the certificate file itself;
    other certificates in the certificate file form the chain. Raises
    :class:`ConfigError` naming the file for every problem (unreadable file,
    missing or wrong passphrase, key not matching the certificate).
    """
    cert_path = Path(cert_path)
    if cert_path.suffix.lower() in _PKCS12_SUFFIXES:
        return _load_pkcs12(cert_path, passphrase)
    cert_data = _read(cert_path, "certificate")
    certs = _load_pem_certs(cert_data, cert_path)
    if key_path is not None and Path(key_path) != cert_path:
        key_file = Path(key_path)
        key = _load_pem_key(_read(key_file, "private key"), key_file, passphrase)
    else:
        key_file = cert_path
        key = _load_pem_key(cert_data, cert_path, passphrase)
    wanted = _spki(key.public_key())
    leaf = next((c for c in certs if _spki(c.public_key()) == wanted), None)
    if leaf is None:
        raise ConfigError(f"the private key in {key_file} does not match the certificate",
                          file=str(cert_path))
    return Credential(leaf, key, tuple(c for c in certs if c is not leaf), cert_path)


# --------------------------------------------------------------------------- checking

def check_credential(cred: Credential, kind: Kind, now: dt.datetime) -> list[str]:
    """The problems of *cred* used as *kind* at *now* (empty list: fine).

    Checks the validity dates and the Region's CN pattern (gateway.md section 9).
    """
    if kind not in CN_PATTERNS:
        raise ValueError(f"kind must be 'auth' or 'sign', not {kind!r}")
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.timezone.utc)
    cert = cred.certificate
    problems = []
    if now < cert.not_valid_before_utc:
        problems.append(f"certificate not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if now > cert.not_valid_after_utc:
        problems.append(f"certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    letter = "A" if kind == "auth" else "S"
    if not CN_PATTERNS[kind].match(cred.cn):
        problems.append(f"CN {cred.cn!r} does not follow the Region's pattern "
                        f"{letter}<n>#090#<VAT number or fiscal code><vendor>")
    key = cred.private_key
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        problems.append(f"RSA key of {key.key_size} bits (at least 2048 needed)")
    return problems


def cn_fiscal_code(cn: str) -> str | None:
    """The structure's P.IVA or fiscal code in a Region CN (``S1#090#01386030488VENDOR``), or None."""
    match = _CN_CODE.match(cn)
    return match.group(1) if match else None


def identity_problem(config, kind: Kind, cred: Credential) -> str | None:
    """Why *cred* does not belong to the structure of ``[structure] fiscal_code``, or None.

    The gateway takes the structure from the certificates and the document ids from the
    configuration: a mismatch files documents under another structure, or has every call refused.
    """
    expected = config.structure.fiscal_code.strip().upper()
    code = cn_fiscal_code(cred.cn)
    if code is None or code == expected:
        return None   # a CN outside the pattern is check_credential's problem
    return (f"the {kind} certificate ({cred.cn}) is issued to {code}, not to structure.fiscal_code {expected}")


def bind_identities(config, auth: Credential, sign: Credential) -> list[str]:
    """The identity problems of the A1 and S1 certificates; against a production gateway, none
    is tolerated: ConfigError."""
    problems = [p for p in (identity_problem(config, "auth", auth), identity_problem(config, "sign", sign)) if p]
    if problems and config.production_gateway:
        raise ConfigError("; ".join(problems) + ": refused against the production gateway "
                          f"{config.gateway.base_url}", file=str(config.source or ""), key="structure.fiscal_code")
    return problems


def require_valid(cred: Credential, kind: Kind, now: dt.datetime, *, key: str = "") -> None:
    """Raise ConfigError (naming the certificate file) when check_credential finds problems."""
    problems = check_credential(cred, kind, now)
    if problems:
        raise ConfigError("; ".join(problems), file=str(cred.source or ""), key=key)


# --------------------------------------------------------------------------- configuration

def load_configured(config, which: Kind, *, now: dt.datetime | None = None,
                    check: bool = True) -> Credential:
    """The ``auth`` or ``sign`` credential named by ``[certificates]``, checked at *now*.

    The passphrase comes from Config.passphrase (environment variable or file).
    Errors name the file and the configuration key.
    """
    certs = config.certificates
    key = f"certificates.{which}_cert"
    cert_path = getattr(certs, f"{which}_cert")
    if cert_path is None:
        raise ConfigError("no certificate configured", file=str(config.source or ""), key=key)
    try:
        cred = load_credential(cert_path, getattr(certs, f"{which}_key"), config.passphrase(which))
    except ConfigError as exc:
        if exc.key:
            raise
        raise ConfigError(exc.message, file=exc.file, key=key) from None
    if check:
        require_valid(cred, which, now or dt.datetime.now(dt.timezone.utc), key=key)
    return cred


def load_credentials(config, *, now: dt.datetime | None = None,
                     check: bool = True) -> tuple[Credential, Credential]:
    """The (auth, sign) credentials named by ``[certificates]``, checked at *now*.

    Development certificates are generated first when configured.
    """
    ensure_development_certificates(config)
    return (load_configured(config, "auth", now=now, check=check),
            load_configured(config, "sign", now=now, check=check))


# --------------------------------------------------------------------------- development PKI

@dataclass(frozen=True)
class DevPki:
    """The files of a development PKI (all PEM; keys unencrypted, mode 0600)."""

    ca_cert: Path
    ca_key: Path
    auth_cert: Path
    auth_key: Path
    sign_cert: Path
    sign_key: Path
    server_cert: Path
    server_key: Path


def vendor_token(vendor: str) -> str:
    """The vendor as it appears in a CN: upper case letters and digits only."""
    token = re.sub(r"[^A-Z0-9]", "", vendor.upper())
    return token or "VENDOR"


def generate_development_pki(folder: Path, *, fiscal_code: str, vendor: str,
                             key_size: int = 2048) -> DevPki:
    """Make a development CA and the auth, sign and server certificates in *folder*.

    Files that exist are kept (idempotent); a missing certificate is issued by
    the existing CA.
    """
    folder = Path(folder)
    pki = DevPki(folder / "ca.pem", folder / "ca.key", folder / "auth.pem", folder / "auth.key",
                 folder / "sign.pem", folder / "sign.key", folder / "server.pem", folder / "server.key")
    _generate(pki, fiscal_code=fiscal_code, vendor=vendor, key_size=key_size)
    return pki


def development_pki_paths(config) -> DevPki:
    """Where the development PKI of *config* lives.

    The CA is ``gateway_ca`` (its key beside it as ``<stem>.key``); auth and
    sign are the configured pairs (the key in the certificate file when no
    key path is set); the simulator's server certificate sits beside the
    auth certificate as server.pem/server.key.
    """
    certs = config.certificates
    base = (certs.auth_cert or certs.sign_cert or certs.gateway_ca or
            config.state_dir / "certs" / "auth.pem").parent
    ca_cert = certs.gateway_ca or base / "ca.pem"
    auth_cert = certs.auth_cert or base / "auth.pem"
    sign_cert = certs.sign_cert or base / "sign.pem"
    return DevPki(ca_cert, ca_cert.with_suffix(".key"),
                  auth_cert, certs.auth_key or auth_cert,
                  sign_cert, certs.sign_key or sign_cert,
                  base / "server.pem", base / "server.key")


def generate_configured_pki(config) -> DevPki:
    """Create the missing files of development_pki_paths(config); existing files are kept."""
    pki = development_pki_paths(config)
    for path in (pki.auth_cert, pki.sign_cert):
        if path.suffix.lower() in _PKCS12_SUFFIXES and not path.exists():
            raise ConfigError("development certificates are generated as PEM, not PKCS#12",
                              file=str(config.source or ""), key="certificates.development")
    _generate(pki, fiscal_code=config.structure.fiscal_code, vendor=config.application.vendor)
    return pki


def ensure_development_certificates(config) -> DevPki | None:
    """With ``certificates.development = true``, create the missing development files (else None)."""
    if not config.certificates.development:
        return None
    return generate_configured_pki(config)


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    """Write atomically (temp file + rename) so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "IT"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fse-bridge development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject_cn: str, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
           eku=None, sans=None, days: int = 825) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject_cn))
               .issuer_name(issuer if issuer is not None else _name(subject_cn))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if ca:
        usage = dict(digital_signature=True, key_cert_sign=True, crl_sign=True,
                     content_commitment=False, key_encipherment=False)
    else:
        usage = dict(digital_signature=True, key_cert_sign=False, crl_sign=False,
                     content_commitment=eku is None, key_encipherment=eku is not None)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    builder = builder.add_extension(x509.KeyUsage(data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False, **usage),
                                    critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _generate(pki: DevPki, *, fiscal_code: str, vendor: str, key_size: int = 2048) -> None:
    def new_key():
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)

    if pki.ca_cert.exists() and pki.ca_key.exists():
        ca = load_credential(pki.ca_cert, pki.ca_key)
        ca_cert, ca_key = ca.certificate, ca.private_key
    else:
        ca_key = new_key()
        ca_cert = _issue("fse-bridge development CA", ca_key, None, ca_key, ca=True, days=3650)
        _write(pki.ca_key, _key_pem(ca_key), secret=True)
        _write(pki.ca_cert, _cert_pem(ca_cert), secret=False)

    code = fiscal_code.strip().upper()
    token = vendor_token(vendor)
    leaves = [
        (pki.auth_cert, pki.auth_key, f"A1#090#{code}{token}",
         dict(eku=[ExtendedKeyUsageOID.CLIENT_AUTH])),
        (pki.sign_cert, pki.sign_key, f"S1#090#{code}{token}", {}),
        (pki.server_cert, pki.server_key, "localhost",
         dict(eku=[ExtendedKeyUsageOID.SERVER_AUTH],
              sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])),
    ]
    for cert_path, key_path, cn, extra in leaves:
        if cert_path.exists() and (key_path == cert_path or key_path.exists()):
            continue
        key = new_key()
        cert = _issue(cn, key, ca_cert.subject, ca_key, **extra)
        if key_path == cert_path:
            _write(cert_path, _key_pem(key) + _cert_pem(cert), secret=True)
        else:
            _write(key_path, _key_pem(key), secret=True)
            _write(cert_path, _cert_pem(cert), secret=False)
