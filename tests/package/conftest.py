"""Fixtures for the PDF package tests: the official CDA samples, a development signer."""

from __future__ import annotations


import pytest
from asn1crypto import x509 as asn1_x509
from pyhanko_certvalidator import ValidationContext

from bridge import certs
from bridge.pdf import package
from bridge.pdf.sign import PdfSigner

from .package_samples import ACCENTED_FAMILY, ACCENTED_GIVEN, sample


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> certs.DevPki:
    return certs.generate_development_pki(tmp_path_factory.mktemp("pki"),
                                          fiscal_code="01386030488", vendor="PIPOHOUSE")


@pytest.fixture(scope="session")
def signer(pki) -> PdfSigner:
    return PdfSigner.from_credential(certs.load_credential(pki.sign_cert, pki.sign_key))


@pytest.fixture(scope="session")
def trust(pki) -> ValidationContext:
    """pyHanko's validation context with the development CA as the trust root."""
    ca = certs.load_credential(pki.ca_cert, pki.ca_key)
    return ValidationContext(trust_roots=[asn1_x509.Certificate.load(ca.der)])


@pytest.fixture(scope="session")
def packaged(signer):
    """name -> (unsigned PDF, signed PDF), built once per session."""
    cache: dict[str, tuple[bytes, bytes]] = {}

    def get(name: str) -> tuple[bytes, bytes]:
        if name not in cache:
            unsigned = package.build_unsigned_pdf(sample(name), signer_name=signer.display_name)
            cache[name] = (unsigned, signer.sign(unsigned))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def accented_cda() -> bytes:
    """LAB.xml with the patient called Niccolò Élia D’Àngelo Lùpi."""
    text = sample("LAB").decode("utf-8")
    head, rest = text.split("<patient>", 1)
    patient, tail = rest.split("</patient>", 1)
    patient = patient.replace("<family>Test</family>", f"<family>{ACCENTED_FAMILY}</family>", 1)
    patient = patient.replace("<given>Giuseppe</given>", f"<given>{ACCENTED_GIVEN}</given>", 1)
    assert ACCENTED_FAMILY in patient
    return (head + "<patient>" + patient + "</patient>" + tail).encode("utf-8")
