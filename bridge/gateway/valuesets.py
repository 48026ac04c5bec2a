"""The gateway's value sets and identifier formats (gateway.md sections 3, 4, 5, 7).

Shared by the request builder (which refuses to send a value outside them)
and the simulator (which refuses to accept one). These are the contract's
own enumerations, not local code maps.
"""

from __future__ import annotations

import re

#: Section 4, set A (healthcareFacilityTypeCode).
FACILITY_TYPES = frozenset({"Ospedale", "Prevenzione", "Territorio", "SistemaTS", "Cittadino", "MdsPN_DGC"})

#: Section 4, set B (classCode); LET PRO COL are in IG/SW but not in DSP's enum.
CLASS_CODES = frozenset({"WOR", "REF", "LDO", "RIC", "SUM", "TAC", "PRS", "PRE", "ESE", "PDC", "VAC",
                         "CER", "VRB", "CON", "CNT", "CRT"})

#: Section 4, set C (SubmissionSet.contentTypeCode).
CLINICAL_ACTIVITIES = frozenset({"PHR", "CON", "DIS", "ERP", "Sistema_TS", "INI", "PN_DGC", "OBS"})

#: Section 4, set D.
ADMINISTRATIVE_REQUESTS = frozenset({"SSN", "INPATIENT", "NOSSN", "SSR", "DONOR", "AUTO"})

#: Section 4, set F: the official OpenAPI's enum, AD_PSC001 ... AD_PSC999 with gaps (no AD_PSC016,
#: no AD_PSC150: the gateway refuses what a pattern AD_PSCnnn would let through).
PRACTICE_SETTINGS = frozenset("AD_PSC" + n for n in """
    001 002 003 004 005 006 007 008 009 010 011 012 013 014 015 018 019 020 021 024 025 026 027 028
    029 030 031 032 033 034 035 036 037 038 039 040 041 042 043 046 047 048 049 050 051 052 054 055
    056 057 058 060 061 062 064 065 066 067 068 069 070 071 072 073 074 075 076 077 078 094 096 097
    098 099 100 101 102 103 104 107 109 121 122 126 129 130 131 199 999""".split())
#: The same set as a pattern, for callers that match (bodies.check_submission).
PRACTICE_SETTING = re.compile("^(?:" + "|".join(sorted(PRACTICE_SETTINGS)) + ")$")

#: Section 4, set E (the fixed part; vaccine codes J07... and SNOMED codes are open-ended).
EVENT_CODES = frozenset({"P99", "P97", "P98", "P00", "LP418019-8", "LP417541-2", "96118-5", "94503-0",
                         "90768-3", "pay", "PUBLICPOL", "LP267463-0", "LP199190-2"})
EVENT_CODE_OPEN = re.compile(r"^(J07[A-Z0-9]*|[0-9]{6,18})$")
#: Event codes that change the document's visibility (purpose_of_use "ACCESS UPDATE" on metadata).
OBSCURING_CODES = frozenset({"P99", "P97", "P98", "P00"})
#: Those that hide it (P00 shows it again): a replacement keeps them (the patient's choice).
HIDING_CODES = frozenset({"P99", "P97", "P98"})

#: Section 4, set G: OIDs allowed in descriptions ``CODE^Text^OID``.
DESCRIPTION_OIDS = frozenset({"2.16.840.1.113883.2.9.6.1.5", "2.16.840.1.113883.2.9.6.1.51",
                              "2.16.840.1.113883.6.73", "2.16.840.1.113883.2.9.6.1.57.1",
                              "2.16.840.1.113883.2.9.6.1.57.2", "2.16.840.1.113883.2.9.6.1.11",
                              "2.16.840.1.113883.2.9.4.3.13"})
REGIONAL_DESCRIPTION_OID = re.compile(r"^2\.16\.840\.1\.113883\.2\.9\.2\.[0-9]+\.6\.1\.11$")

#: Section 3: subject_role.
ROLES = frozenset({"AAS", "APR", "PSS", "INF", "FAR", "DSA", "DAM", "OAM", "ASS", "TUT", "ING", "GEN",
                   "NOR", "DRS", "RSA", "MRP", "INI", "OGC", "OPI", "MDS", "GTW", "DAP"})
ACTIONS = frozenset({"CREATE", "READ", "UPDATE", "DELETE"})
PURPOSES = frozenset({"TREATMENT", "UPDATE", "ACCESS UPDATE", "EMERGENCY", "PUBLICHEALTH",
                      "SYSADMIN", "PERSONAL", "CONSENT"})

#: Organizzazione table rows (subject_organization_id -> subject_organization).
#: CART serves Toscana only (gateway.md section 9), so only its row is accepted.
ORGANIZATIONS = {"090": "Regione Toscana"}

#: Section 3: per operation, the action_id and the accepted purpose_of_use values.
OPERATION_CLAIMS = {
    "create": ("CREATE", frozenset({"TREATMENT"})),
    "replace": ("UPDATE", frozenset({"UPDATE", "TREATMENT"})),
    "metadata": ("UPDATE", frozenset({"UPDATE", "ACCESS UPDATE"})),
    "delete": ("DELETE", frozenset({"UPDATE"})),
}

#: Section 3: locality is an XON string.
LOCALITY = re.compile(r"^[^^]*\^{5}&[^&]*&ISO\^{4}[^^&]*$")

#: Section 7: identificativoRep as DSP checks it (group 1: the organisation code).
REPOSITORY_ID = re.compile(r"^2\.16\.840\.1\.113883\.2\.9\.2\.(\d+)\.4\.5\..*$")

#: Section 5: the document types the Region's identifiers know (identificativoDoc's <TYPE>).
TOSCANA_DOCUMENT_TYPES = ("LAB", "RAD", "LDO", "RSA", "RAP")

#: Section 5: Toscana identifiers.
TOSCANA_DOCUMENT_ID = re.compile(
    r"^2\.16\.840\.1\.113883\.2\.9\.2\.90\.4\.4\^(?P<code>[0-9]{11})\.(?P<type>" + "|".join(TOSCANA_DOCUMENT_TYPES)
    + r")\."
    r"(?P<rep>999|201|202|203|[0-9]{11}(?:-[0-9]+)?)\.(?P<local>[A-Za-z0-9_-]+)$")
TOSCANA_REPOSITORY_ID = re.compile(
    r"^2\.16\.840\.1\.113883\.2\.9\.2\.90\.4\.5\.(?:999|201|202|203|[0-9]{11}(?:-[0-9]+)?)$")
TOSCANA_SUBMISSION_ID = re.compile(r"^2\.16\.840\.1\.113883\.2\.9\.2\.90\.4\.3\.[1-9][0-9]*$")

#: Section 4: dates.
DATE = re.compile(r"^[0-9]{14}$")

FISCAL_CODE_ROOT = "2.16.840.1.113883.2.9.4.3.2"
TEAM_ROOT = "2.16.840.1.113883.2.9.4.3.7"
