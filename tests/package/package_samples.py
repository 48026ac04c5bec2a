"""Helpers shared by the package tests (a uniquely named module: every test folder has a conftest)."""

from __future__ import annotations

from fse_helpers import REFERENCE

SAMPLES = REFERENCE / "cda" / "samples"
SAMPLE_NAMES = ("LAB", "RAD", "RSA", "RAP", "LDO")


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.xml").read_bytes()


ACCENTED_GIVEN = "Niccolò Élia"
ACCENTED_FAMILY = "D’Àngelo Lùpi"
