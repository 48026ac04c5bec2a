"""The value sets and identifier formats the simulated gateway accepts (gateway.md sections 3-5, 7).

The simulator is the peer that judges the client, so it keeps its own copy of
the contract, written from gateway.md and the official OpenAPI
(``swagger_gtw.yaml``), never imported from :mod:`bridge.gateway`: a value
wrongly added to the client's sets must be refused here.
tests/simulator/test_contract.py checks every set against the OpenAPI's enum:
each is a subset of it, smaller where the national dispatcher (DSP) refuses
a value the OpenAPI lists.
"""

from __future__ import annotations

import re

#: tipologiaStruttura (set A): the OpenAPI's enum.
FACILITY_TYPES = frozenset({"Ospedale", "Prevenzione", "Territorio", "SistemaTS", "Cittadino", "MdsPN_DGC"})

#: tipoDocumentoLivAlto (set B): the OpenAPI also lists LET, PRO, COL; DSP's enum lacks them.
CLASS_CODES = frozenset({"WOR", "REF", "LDO", "RIC", "SUM", "TAC", "PRS", "PRE", "ESE", "PDC", "VAC",
                         "CER", "VRB", "CON", "CNT", "CRT"})

#: tipoAttivitaClinica (set C).
CLINICAL_ACTIVITIES = frozenset({"PHR", "CON", "DIS", "ERP", "Sistema_TS", "INI", "PN_DGC", "OBS"})

#: administrativeRequest items (set D).
ADMINISTRATIVE_REQUESTS = frozenset({"SSN", "INPATIENT", "NOSSN", "SSR", "DONOR", "AUTO"})

#: assettoOrganizzativo (set F): the OpenAPI's enum, AD_PSC001 ... AD_PSC999 with gaps
#: (no AD_PSC016, no AD_PSC150: a pattern AD_PSCnnn would accept what the gateway refuses).
PRACTICE_SETTINGS = frozenset("AD_PSC" + n for n in """
    001 002 003 004 005 006 007 008 009 010 011 012 013 014 015 018 019 020 021 024 025 026 027 028
    029 030 031 032 033 034 035 036 037 038 039 040 041 042 043 046 047 048 049 050 051 052 054 055
    056 057 058 060 061 062 064 065 066 067 068 069 070 071 072 073 074 075 076 077 078 094 096 097
    098 099 100 101 102 103 104 107 109 121 122 126 129 130 131 199 999""".split())

#: healthDataFormat and mode.
HEALTH_DATA_FORMATS = frozenset({"CDA"})
MODES = frozenset({"ATTACHMENT", "RESOURCE"})

#: attiCliniciRegoleAccesso (set E): the fixed codes, then the open-ended vaccine (J07...) and SNOMED ones.
EVENT_CODES = frozenset({"P99", "P97", "P98", "P00", "LP418019-8", "LP417541-2", "96118-5", "94503-0",
                         "90768-3", "pay", "PUBLICPOL", "LP267463-0", "LP199190-2"})
EVENT_CODE_OPEN = re.compile(r"^(J07[A-Z0-9]*|[0-9]{6,18})$")

#: descriptions ``CODE^Text^OID`` (set G): the catalogue OIDs, and the regional catalogue's arc.
DESCRIPTION_OIDS = frozenset({"2.16.840.1.113883.2.9.6.1.5", "2.16.840.1.113883.2.9.6.1.51",
                              "2.16.840.1.113883.6.73", "2.16.840.1.113883.2.9.6.1.57.1",
                              "2.16.840.1.113883.2.9.6.1.57.2", "2.16.840.1.113883.2.9.6.1.11",
                              "2.16.840.1.113883.2.9.4.3.13"})
REGIONAL_DESCRIPTION_OID = re.compile(r"^2\.16\.840\.1\.113883\.2\.9\.2\.[0-9]+\.6\.1\.11$")

#: IG section 15.4: document LOINC -> the class code it pairs with (enforced here, not by DSP).
CLASS_FOR_LOINC = {"11502-2": "REF", "68604-8": "REF", "11526-1": "REF", "11488-4": "REF",
                   "34105-7": "LDO", "18842-5": "LDO"}
#: DSP DocumentTypeEnum: LOINC -> the TYPE part of a Toscana identificativoDoc.
DOC_TYPE_FOR_LOINC = {"11502-2": "LAB", "68604-8": "RAD", "11488-4": "RSA", "11526-1": "RAP",
                      "34105-7": "LDO"}

#: Section 3: claim value sets.
ROLES = frozenset({"AAS", "APR", "PSS", "INF", "FAR", "DSA", "DAM", "OAM", "ASS", "TUT", "ING", "GEN",
                   "NOR", "DRS", "RSA", "MRP", "INI", "OGC", "OPI", "MDS", "GTW", "DAP"})
ACTIONS = frozenset({"CREATE", "READ", "UPDATE", "DELETE"})
PURPOSES = frozenset({"TREATMENT", "UPDATE", "ACCESS UPDATE", "EMERGENCY", "PUBLICHEALTH",
                      "SYSADMIN", "PERSONAL", "CONSENT"})
#: CART serves Toscana only (section 9): the one Organizzazione row it accepts.
ORGANIZATIONS = {"090": "Regione Toscana"}
#: Per operation: the action_id and the purpose_of_use values DSP accepts.
OPERATION_CLAIMS = {
    "create": ("CREATE", frozenset({"TREATMENT"})),
    "replace": ("UPDATE", frozenset({"UPDATE", "TREATMENT"})),
    "metadata": ("UPDATE", frozenset({"UPDATE", "ACCESS UPDATE"})),
    "delete": ("DELETE", frozenset({"UPDATE"})),
}
#: locality: an XON string.
LOCALITY = re.compile(r"^[^^]*\^{5}&[^&]*&ISO\^{4}[^^&]*$")

#: Section 5: Toscana identifiers.
TOSCANA_DOCUMENT_ID = re.compile(
    r"^2\.16\.840\.1\.113883\.2\.9\.2\.90\.4\.4\^(?P<code>[0-9]{11})\.(?P<type>LAB|RAD|LDO|RSA|RAP)\."
    r"(?P<rep>999|201|202|203|[0-9]{11}(?:-[0-9]+)?)\.(?P<local>[A-Za-z0-9_-]+)$")
TOSCANA_REPOSITORY_ID = re.compile(
    r"^2\.16\.840\.1\.113883\.2\.9\.2\.90\.4\.5\.(?:999|201|202|203|[0-9]{11}(?:-[0-9]+)?)$")
TOSCANA_SUBMISSION_ID = re.compile(r"^2\.16\.840\.1\.113883\.2\.9\.2\.90\.4\.3\.[1-9][0-9]*$")

#: Section 4: dates (DSP checkFormatDate).
DATE = re.compile(r"^[0-9]{14}$")

FISCAL_CODE_ROOT = "2.16.840.1.113883.2.9.4.3.2"
TEAM_ROOT = "2.16.840.1.113883.2.9.4.3.7"


def description_ok(text) -> bool:
    """``CODE^Text^OID`` with an OID of set G (DSP validateDescriptions)."""
    parts = text.split("^") if isinstance(text, str) else []
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return False
    return parts[2] in DESCRIPTION_OIDS or bool(REGIONAL_DESCRIPTION_OID.match(parts[2]))
