from pathlib import Path

import pytest

from bridge.cda.validate import load_rules
from .validate_support import REFERENCE


@pytest.fixture(scope="session")
def reference_rules() -> Path:
    """The official reference pack, laid out as an installed rules folder."""
    assert (REFERENCE / "schematron").is_dir(), f"the reference pack is missing: {REFERENCE}"
    return REFERENCE.resolve()


@pytest.fixture(scope="session")
def rules(reference_rules):
    """One Rules for the session: each schematron compiles once, as in the service."""
    return load_rules(reference_rules)

