"""Fixtures for certificate tests: a development PKI made once per session, and a cert factory."""

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bridge import certs


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> certs.DevPki:
    return certs.generate_development_pki(tmp_path_factory.mktemp("pki"),
                                          fiscal_code="01386030488", vendor="Pipo House")


@pytest.fixture(scope="session")
def issue(pki):
    """issue(folder, cn, not_before=..., not_after=..., passphrase=None) -> (cert_path, key_path)."""
    ca = certs.load_credential(pki.ca_cert, pki.ca_key)
    now = dt.datetime.now(dt.timezone.utc)

    def make(folder: Path, cn: str, *, not_before=now - dt.timedelta(days=1),
             not_after=now + dt.timedelta(days=30), passphrase: bytes | None = None):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(ca.certificate.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before).not_valid_after(not_after)
                .sign(ca.private_key, hashes.SHA256()))
        enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
               else serialization.NoEncryption())
        stem = cn.replace("#", "_")
        cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8, enc))
        return cert_path, key_path

    return make
