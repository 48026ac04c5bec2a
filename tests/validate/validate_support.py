"""Helpers shared by the validation tests (the official samples and how to break them)."""

from lxml import etree

from fse_helpers import CHECKOUT, REFERENCE  # noqa: F401

SAMPLES = REFERENCE / "cda" / "samples"
TYPES = ["LAB", "RAD", "RSA", "RAP", "LDO"]
NS = {"h": "urn:hl7-org:v3"}


def sample(doc_type: str) -> bytes:
    return (SAMPLES / f"{doc_type}.xml").read_bytes()


def mutate(xml: bytes, change) -> bytes:
    """Apply *change(root)* to a parsed copy of *xml* and serialise it again."""
    root = etree.fromstring(xml)
    change(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
