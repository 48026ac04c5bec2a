"""Where the tests find ../shared (README, "Two commands"): every test reads it through these names.

A plain module (no pytest, no bridge) so that the oracles the root conftest imports can use it too;
tests/conftest.py re-exports the names as ``fse_helpers`` and stops the run when they are missing.
"""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
#: The project's shared data, beside the checkout.
SHARED = CHECKOUT / ".." / "shared"
#: Official reference data: CDA samples, XSD, schematrons, terminology, the gateway's OpenAPI.
REFERENCE = SHARED / "reference"
#: Public HL7 v2 messages of real-world shapes.
CORPUS = SHARED / "corpus" / "hl7-public"
#: Messages in the dialects of Italian senders, with the outcome each must get (its README).
DIALECTS = SHARED / "corpus" / "italian-dialects"
#: The independent CDA validator (XSD + its own schematron compiler).
VALIDATOR = SHARED / "tools" / "validate_cda.py"
#: The specifications the tests compare the product with.
SPEC = SHARED / "spec"


def missing() -> list[Path]:
    """What the tests need from ../shared and cannot find."""
    return [p.resolve() for p in (REFERENCE, CORPUS, DIALECTS, VALIDATOR, SPEC) if not p.exists()]


def missing_message(paths: list[Path]) -> str:
    what = SHARED.resolve() if not SHARED.is_dir() else ", ".join(map(str, paths))
    return (f"../shared is missing beside the checkout: the tests read the official reference data, the HL7 "
            f"corpora, the independent validator and the specifications from it ({what} not found); "
            f"clone or link the shared folder at {SHARED.resolve()}")
