"""Fixtures shared by tests/gateway and tests/simulator: PKI, configuration,
signed test PDFs carrying a real CDA, the simulator on loopback with mutual TLS,
and a client with a fake sleep.

Both conftest.py files import everything from here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import re
from pathlib import Path

import pikepdf
import pytest
import pytest_twisted
from twisted.internet import defer

from bridge import certs, config as config_module
from bridge.gateway import GatewayClient, Submission
from bridge.gateway.identifiers import new_submission_id
from bridge.model import DocumentType
from oracles.wire import openapi_checked_requests  # noqa: F401  (autouse: every request against the OpenAPI)

from fse_helpers import REFERENCE

PATIENT = "RMSLSO31M04Z404R"
OTHER_PATIENT = "MNTMRA03M71C615V"
OPERATOR = "MNZLSN99E05F205J"
STRUCTURE = "01386030488"
DOC_ROOT = "2.16.840.1.113883.2.9.2.90.4.4"


def doc_id(local: str = "A26-00412_1", kind: str = "LAB") -> str:
    return f"{DOC_ROOT}^{STRUCTURE}.{kind}.999.{local}"


def aio(coro) -> defer.Deferred:
    """Await an asyncio coroutine (httpx) from a Twisted-driven test."""
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


def in_thread(fn, *args, **kwargs):
    """Run blocking pyHanko code off the reactor's thread (it calls asyncio.run inside)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


# --------------------------------------------------------------------------- CDA and PDFs

def make_cda(*, patient: str = PATIENT, local: str = "A26-00412_1", code: str | None = None,
             kind: str = "LAB") -> bytes:
    """An official sample with a Toscana ClinicalDocument/id and a stage test patient."""
    text = (REFERENCE / "cda" / "samples" / f"{kind}.xml").read_text(encoding="utf-8")
    sample_patient = re.search(r'<patientRole[^>]*>\s*<id root="2\.16\.840\.1\.113883\.2\.9\.4\.3\.2" '
                               r'extension="([^"]+)"', text).group(1)
    text = text.replace(f'extension="{sample_patient}"', f'extension="{patient}"')
    text = re.sub(r'<id root="2\.16\.840\.1\.113883\.2\.9\.2\.120\.4\.4" extension="[^"]*"',
                  f'<id root="{DOC_ROOT}" extension="{STRUCTURE}.{kind}.999.{local}"', text, count=1)
    if code:
        text = re.sub(r'code="\d+-\d"', f'code="{code}"', text, count=1)
    return text.encode("utf-8")


def build_pdf(cda: bytes | None, *, name: str = "cda.xml", in_kids: bool = False) -> bytes:
    """A one-page PDF with *cda* embedded as *name* (flat name tree or one level of /Kids)."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))
    if cda is not None:
        spec = pikepdf.AttachedFileSpec(pdf, cda, filename=name, mime_type="application/xml")
        if in_kids:
            kid = pdf.make_indirect(pikepdf.Dictionary(
                Names=pikepdf.Array([pikepdf.String(name), spec.obj]),
                Limits=pikepdf.Array([pikepdf.String(name), pikepdf.String(name)])))
            pdf.Root.Names = pikepdf.Dictionary(
                EmbeddedFiles=pdf.make_indirect(pikepdf.Dictionary(Kids=pikepdf.Array([kid]))))
        else:
            pdf.attachments[name] = spec
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def _sign(pdf: bytes, cert_path: Path, key_path: Path) -> bytes:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    signer = signers.SimpleSigner.load(str(key_path), str(cert_path))
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    meta = signers.PdfSignatureMetadata(field_name="Signature1",
                                        subfilter=fields.SigSeedSubFilter.PADES)
    out = signers.sign_pdf(writer, meta, signer=signer)
    return out.getvalue()


def sign_pdf(pdf: bytes, pki) -> bytes:
    return in_thread(_sign, pdf, pki.sign_cert, pki.sign_key)


def signed_package(pki, **cda_args) -> bytes:
    return sign_pdf(build_pdf(make_cda(**cda_args)), pki)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return certs.generate_development_pki(tmp_path_factory.mktemp("pki"), fiscal_code=STRUCTURE,
                                          vendor="PIPOHOUSE")


@pytest.fixture(scope="session")
def sign_credential(pki):
    return certs.load_credential(pki.sign_cert, pki.sign_key)


@pytest.fixture(scope="session")
def package(pki):
    """A signed PDF/A-like package with the LAB CDA (document id doc_id())."""
    return signed_package(pki)


def make_config(tmp_path: Path, pki, *, tls: bool = True, client_ca: bool = True, **gateway):
    for name in ("mappings", "templates", "var"):
        (tmp_path / name).mkdir(exist_ok=True)
    table = {
        "state_dir": str(tmp_path / "var"),
        "gateway": {"base_url": "embedded", "timeout_s": 5, "max_attempts": 4, **gateway},
        "certificates": {"development": False, "auth_cert": str(pki.auth_cert),
                         "auth_key": str(pki.auth_key), "sign_cert": str(pki.sign_cert),
                         "sign_key": str(pki.sign_key), "gateway_ca": str(pki.ca_cert)},
        "structure": {"fiscal_code": STRUCTURE,
                      "locality": "LAB ROSSI^^^^^&2.16.840.1.113883.2.9.4.1.3&ISO^^^^090201123456"},
        "operator": {"fiscal_code": OPERATOR, "role": "AAS"},
        "mapping": {"dir": str(tmp_path / "mappings"), "templates": str(tmp_path / "templates"),
                    "practitioners": str(tmp_path / "mappings" / "practitioners.csv")},
        "validation": {"rules_dir": str(tmp_path / "no-rules")},
        "simulator": {"host": "127.0.0.1", "port": 0},
    }
    (tmp_path / "mappings" / "practitioners.csv").write_text("id\n")
    if tls:
        table["simulator"].update(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
        if client_ca:
            table["simulator"]["tls_client_ca"] = str(pki.ca_cert)
    return config_module.from_dict(table, base_dir=tmp_path)


@pytest.fixture
def config(tmp_path, pki):
    return make_config(tmp_path, pki)


class FakeSleep:
    """The injected sleep: records the delays, returns at once."""

    def __init__(self):
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def fake_sleep():
    return FakeSleep()


def start(config, **kwargs):
    from twisted.internet import reactor

    from bridge.simulator import start_simulator

    kwargs.setdefault("rules", False)
    return start_simulator(config, reactor, **kwargs)


@pytest.fixture
def simulator(config):
    handle = start(config)
    yield handle
    handle.simulator.stop()
    handle.listening.stopListening()
    handle.registry.close()


#: The clients a test made (make_client), closed after it by ``close_clients``.
_MADE: list[GatewayClient] = []


def make_client(config, handle, sleep, sign_credential, **kwargs) -> GatewayClient:
    made = GatewayClient.from_config(config, sleep=sleep, base_url=handle.url,
                                     sign_credential=sign_credential, **kwargs)
    _MADE.append(made)
    return made


@pytest.fixture(autouse=True)
def close_clients():
    """Each client's pooled connections closed after its test, on the running reactor, not
    left to the garbage collector (whose ResourceWarnings then land in a later test)."""
    yield
    while _MADE:
        made = _MADE.pop()
        pytest_twisted.blockon(defer.Deferred.fromFuture(asyncio.ensure_future(made.aclose())))


@pytest.fixture
def client(config, simulator, fake_sleep, sign_credential):
    return make_client(config, simulator, fake_sleep, sign_credential)


def submission(**overrides) -> Submission:
    values = dict(document_id=doc_id(), repository_id="2.16.840.1.113883.2.9.2.90.4.5.999",
                  document_type=DocumentType.LAB, facility_type="Territorio",
                  practice_setting="AD_PSC100", clinical_activity="ERP",
                  submission_id=new_submission_id(), patient_id=PATIENT,
                  administrative_request=("SSN",), start="20260301083000", end="20260302120000")
    values.update(overrides)
    return Submission(**values)


def registry_rows(handle) -> list[dict]:
    return json.loads(json.dumps(handle.registry.all()))
