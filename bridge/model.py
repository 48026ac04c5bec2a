"""The neutral report model shared by the stages.

Enums here are the vocabulary every stage speaks; the report dataclasses
(patient, author, results, sections...) are filled by ``mapping`` and read by
the templates and the gateway request builder.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# A document type's facts are data (mappings/<TYPE>.toml [document]); the type is re-exported here
# because every stage speaks of it.
from bridge.mapping.doctypes import DocumentType


class Action(enum.Enum):
    PUBLISH = "publish"
    """Route's verdict for a final report: the pipeline makes it CREATE or REPLACE."""
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


# --- The report model (filled by mapping.map_report, read by the templates) ---
#
# Values are already in CDA form: timestamps ``YYYYMMDDHHMMSS+ZZZZ`` (cda.md §4
# rule 12), codes with their code-system OID, CFs upper case. Optional parts
# are None or empty tuples; templates leave them out.

@dataclass(frozen=True, slots=True, kw_only=True)
class Code:
    code: str
    system: str
    display: str = ""
    system_name: str = ""
    translations: tuple["Code", ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Identifier:
    root: str
    extension: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    use: str = ""
    street: str = ""
    city: str = ""
    postal_code: str = ""
    county: str = ""
    state: str = ""
    country: str = ""
    census_tract: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Telecom:
    use: str
    value: str
    """A URI: ``tel:...`` or ``mailto:...``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Patient:
    ids: tuple[Identifier, ...]
    """``recordTarget/patientRole/id`` in order (cda.md §2.2)."""
    person_id: str
    """The gateway's person_id: a bare CF, or ``code^^^&root&ISO`` (gateway.md §5)."""
    family: str
    given: str
    gender: str
    """M, F or UN (AdministrativeGender)."""
    birth_time: str = ""
    """YYYYMMDD; empty → nullFlavor UNK."""
    addresses: tuple[Address, ...] = ()
    telecoms: tuple[Telecom, ...] = ()
    birthplace: Address | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Person:
    """A practitioner: CF id (root 2.16.840.1.113883.2.9.4.3.2) and one given + family."""

    fiscal_code: str
    family: str
    given: str
    telecoms: tuple[Telecom, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Organization:
    id: Identifier
    name: str
    telecoms: tuple[Telecom, ...] = ()
    address: Address | None = None
    part_of: Identifier | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Encounter:
    code: str
    """ActCode: IMP, AMB, EMER..."""
    id: Identifier | None = None
    low: str = ""
    high: str = ""
    responsible: Person | None = None
    facility: Identifier | None = None
    ward: str = ""
    provider: Organization | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    ids: tuple[Identifier, ...]
    """NRE first when present, else the placer order number under a local root."""
    priority: str = ""
    """ActPriority (2.16.840.1.113883.5.7): R, UR, EM, A, P, S, T."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Specimen:
    code: Code | None = None
    """SpecimenType; LAB always has it, a narrative type's SPM may not."""
    id: Identifier | None = None
    collected: str = ""
    site: Code | None = None
    """Where it was taken (SNOMED CT body structure: RAP procedure targetSiteCode)."""
    description: str = ""
    """The sender's description (SPM-14)."""
    site_text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Note:
    ref: str
    """Narrative ID the entry references (``#ref``)."""
    text: str
    """Plain text; line breaks kept."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Media:
    """An attachment sent in OBX-5 (ED) that the type's guide carries (observationMedia)."""

    media_type: str
    value: str
    """Base64."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """Something the mapping left out or changed that the sender must hear of: one ERR of the ACK."""

    code: str
    """HL7 table 0357 (``0``: the message is accepted)."""
    text: str
    location: str = ""
    """ERR-2, e.g. ``OBX^4^11``."""
    severity: str = "I"
    """W (warning) or I (information)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Range:
    low: str = ""
    high: str = ""
    unit: str = ""
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    ref: str
    code: Code
    name: str = ""
    """The test as the laboratory named it (OBX-3.2), shown in the narrative; LOINC's only when none."""
    status: str
    """completed or aborted (LAB b22)."""
    effective_time: str
    value_type: str
    """PQ, IVL_PQ, ST, CD, ED (an attachment: observationMedia) or "" (no value: aborted)."""
    value: str = ""
    unit: str = ""
    """UCUM, for the structured value."""
    unit_text: str = ""
    """The unit as the sender wrote it (OBX-6.1), for the narrative."""
    low: str = ""
    high: str = ""
    coded: Code | None = None
    text: str = ""
    """The value as shown in the narrative."""
    interpretation: Code | None = None
    ranges: tuple[Range, ...] = ()
    method: Code | None = None
    notes: tuple[Note, ...] = ()
    media_type: str = ""
    """ED only: MIME type of the Base64 ``value``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Exam:
    """One OBR: a LAB leaf section with its act, or a performed procedure elsewhere."""

    ref: str
    code: Code
    name: str = ""
    """The exam as the sender named it (OBR-4.2), for the narrative."""
    status: str
    """act statusCode: completed, active or aborted."""
    effective_time: str
    specimen: Specimen | None = None
    observations: tuple[Observation, ...] = ()
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    code: Code
    title: str
    ref: str
    paragraphs: tuple[str, ...] = ()
    """Narrative text, one item per paragraph (line breaks inside kept)."""
    exams: tuple[Exam, ...] = ()
    """LAB: the leaf sections of a specialty section."""
    codes: tuple[Code, ...] = ()
    """Coded findings for this section (diagnoses...), from CE/CWE results."""
    media: Media | None = None
    """An attachment the section's entry carries (RAP: observationMedia of its AP observation)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    doc_type: DocumentType
    title: str
    code_display: str
    """displayName of ClinicalDocument/code (the schematrons' W001 recommendation)."""
    template: str
    """Template file under the templates folder, from the type's mapping."""
    template_version: str
    effective_time: str
    status: str
    """completed (final) or active (partial)."""
    accession: str
    confidentiality: str
    language: str
    patient: Patient
    author: Person
    author_time: str
    legal_authenticator: Person
    legal_time: str
    custodian: Organization
    order: Order
    service_start: str
    service_end: str
    service_code: str = ""
    """serviceEvent/code (PROG, DIR...) for RAD and RSA."""
    referrer: Person | None = None
    performer: Person | None = None
    encounter: Encounter | None = None
    sections: tuple[Section, ...] = ()
    procedures: tuple[Code, ...] = ()
    """What was done (OBR-4 of each group): RAD exam act, RSA prestazioni, RAP procedure."""
    specimens: tuple[Specimen, ...] = ()
    notes: tuple[Note, ...] = ()
    # What the gateway request body needs (gateway.md §4, bridge filling rules).
    document_class: str = "REF"
    """tipoDocumentoLivAlto (the type's class_code)."""
    inpatient: bool = False
    """True → tipologiaStruttura Ospedale, else Territorio."""
    practice_setting: str = "AD_PSC999"
    """assettoOrganizzativo, AD_PSCnnn."""
    billing: str = "SSN"
    """administrativeRequest: SSN or NOSSN."""
    clinical_activity: str = "ERP"
    """tipoAttivitaClinica: ERP, DIS..."""
    service_start_local: str = ""
    """dataInizioPrestazione, yyyyMMddHHmmss local time (collection)."""
    service_end_local: str = ""
    """dataFinePrestazione, yyyyMMddHHmmss local time (report)."""
    access_policies: tuple[str, ...] = ()
    """attiCliniciRegoleAccesso the create carries: ("P99",) when the patient asked to obscure the
    report (ARV, or the field the mapping's ``access`` table names); () otherwise."""
    notices: tuple[Notice, ...] = ()
    """ERRs (severity W or I) for the ACK of the published document: results or attachments left out."""

    @property
    def tipologia_struttura(self) -> str:
        return "Ospedale" if self.inpatient else "Territorio"
