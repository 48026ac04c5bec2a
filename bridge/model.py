"""The neutral report model shared by the stages.

Enums here are the vocabulary every stage speaks; the report dataclasses
(patient, author, results, sections...) are filled by ``mapping`` and read by
the templates and the gateway request builder.
"""

from __future__ import annotations

import enum


class DocumentType(enum.Enum):
    """The five FSE document types with their LOINC document code."""

    LAB = "11502-2"
    RAD = "68604-8"
    RSA = "11488-4"
    RAP = "11526-1"
    LDO = "34105-7"

    @property
    def loinc(self) -> str:
        return self.value

    @property
    def resource_hl7_type(self) -> str:
        """The JWT claim value that must equal the CDA's code (gateway.md section 3)."""
        return f"('{self.value}^^2.16.840.1.113883.6.1')"


class Action(enum.Enum):
    CREATE = "create"
    REPLACE = "replace"
    DELETE = "delete"
    METADATA = "metadata"
    IGNORE = "ignore"
    """Deliberately not published (preliminary, nothing to delete, identical)."""


class AckCode(enum.Enum):
    AA = "AA"
    AE = "AE"
    AR = "AR"
    CA = "CA"
    CE = "CE"
    CR = "CR"
