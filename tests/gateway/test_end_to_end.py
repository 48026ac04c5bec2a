"""The project's real packages (bridge.pdf.package) of the five official samples, through the client,
to the simulator validating with the reference XSD and schematrons, over mutual TLS."""

import pytest
import pytest_twisted

from bridge.cda import validate
from bridge.model import DocumentType

from gateway_kit import REFERENCE, aio, doc_id, in_thread, make_cda, make_client, start, submission

package_module = pytest.importorskip("bridge.pdf.package")
sign_module = pytest.importorskip("bridge.pdf.sign")

FILLING = {  # gateway.md section 4, bridge filling rules
    "LAB": dict(facility_type="Territorio", practice_setting="AD_PSC100", clinical_activity="ERP"),
    "RAD": dict(facility_type="Territorio", practice_setting="AD_PSC103", clinical_activity="ERP"),
    "RSA": dict(facility_type="Territorio", practice_setting="AD_PSC107", clinical_activity="ERP"),
    "RAP": dict(facility_type="Territorio", practice_setting="AD_PSC003", clinical_activity="ERP"),
    "LDO": dict(facility_type="Ospedale", practice_setting="AD_PSC999", clinical_activity="DIS",
                administrative_request=("INPATIENT",)),
}


@pytest.fixture(scope="module")
def packages(sign_credential):
    signer = sign_module.PdfSigner.from_credential(sign_credential)
    return {kind: in_thread(package_module.package_pdf, make_cda(kind=kind), signer) for kind in FILLING}


@pytest_twisted.ensureDeferred
async def test_real_packages_of_every_type_are_published(config, packages, fake_sleep, sign_credential):
    rules = validate.load_rules(REFERENCE)
    handle = start(config, rules=rules)
    try:
        client = make_client(config, handle, fake_sleep, sign_credential)
        for n, (kind, pdf) in enumerate(packages.items(), start=1):
            sub = submission(document_id=doc_id(kind=kind), document_type=DocumentType[kind],
                             submission_id=f"2.16.840.1.113883.2.9.2.90.4.3.{n}", **FILLING[kind])
            result = await aio(client.create(sub, pdf))
            assert result.status == 202, (kind, result.problem)
            assert result.x_cart_id
        assert len(handle.registry.all()) == 5
    finally:
        handle.simulator.stop()
        await handle.listening.stopListening()
        handle.registry.close()
