"""The patient's request to obscure a report at creation (issue 11 item 4, mapping side).

HL7 v2.6+ carries it in ARV (Access Restrictions; in ORU_R01's patient group
from v2.8.1, after PID in earlier versions too): ARV-2 the action (A add,
U update, D delete), ARV-4 the reason (table 0719, PAT patient request). A
deployment whose senders write it elsewhere declares that field instead. What
counts is data: ``[access]`` in mappings/header.toml.
"""

from __future__ import annotations

from bridge.hl7.path import Reader, parse_path


def access_policies(reader: Reader, spec: dict) -> tuple[str, ...]:
    """attiCliniciRegoleAccesso for the create: ``spec["policies"]`` (P99) when obscuring is asked, else ().

    Restriction segments are read in order: an add or update asks for it, a
    delete lifts it. Any declared field with one of its values asks for it too.
    """
    if not spec:
        return ()
    policies = tuple(spec.get("policies", ["P99"]))
    asked = False
    segment = spec.get("segment", "ARV")
    reason, action = parse_path(spec.get("reason", f"{segment}-4.1")), parse_path(spec.get("action", f"{segment}-2"))
    reasons = {v.upper() for v in spec.get("reasons", ["PAT"])}
    obscure = {v.upper() for v in spec.get("obscure", ["A", "U"])}
    lift = {v.upper() for v in spec.get("lift", ["D"])}
    for index in reader.occurrences(segment):
        if reader.value(index, reason).upper() not in reasons:
            continue
        verb = reader.value(index, action).upper()
        asked = True if verb in obscure else False if verb in lift else asked
    for field in spec.get("fields", []):
        path = parse_path(field["path"])
        values = {v.upper() for v in field.get("in", [])}
        if any(reader.value(i, path).upper() in values for i in reader.occurrences(path.segment)):
            asked = True
    return policies if asked else ()
