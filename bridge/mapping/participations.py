"""HL7 v2.7+ PRT participations: the person a withdrawn field would have named.

From v2.7 senders name people in PRT segments placed after the segment they
belong to (ORU_R01: ``ORC {PRT}``, ``OBR {NTE} {PRT}``, ``OBX {PRT} {NTE}``,
``PV1 [PV2] {PRT}``), with the role in PRT-4 (table 0912: PI primary
interpreter, RO responsible observer, OP ordering provider, AT attending...)
and the person in PRT-5 (XCN). Which roles stand for which field is data:
``[participations]`` in mappings/header.toml.
"""

from __future__ import annotations

from bridge.hl7.path import Reader, parse_path

#: A PRT belongs to the nearest of these before it (NTE, PV2 in between do not count).
_OWNERS = {"PV1", "ORC", "OBR", "OBX", "SPM", "PID", "NK1", "TQ1", "CTI"}
_ROLE = parse_path("PRT-4.1")


def attach(reader: Reader) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """PRT segments by owner ``(segment, occurrence)``: ``[(segment index, PRT occurrence), ...]``.

    An ORC opens the order its OBR follows, so its PRTs count as the OBR's.
    """
    owners: dict[tuple[str, int], list[tuple[int, int]]] = {}
    counts: dict[str, int] = {}
    owner: tuple[str, int] | None = None
    for index, text in enumerate(reader.segments):
        seg = text[:3]
        counts[seg] = counts.get(seg, 0) + 1
        if seg == "PRT":
            if owner is not None:
                owners.setdefault(owner, []).append((index, counts[seg]))
        elif seg == "ORC":
            owner = ("OBR", counts.get("OBR", 0) + 1)
        elif seg in _OWNERS:
            owner = (seg, counts[seg])
    return owners


def find(reader: Reader, prts: dict[tuple[str, int], list[tuple[int, int]]], owner: tuple[str, int],
         roles: list[str]) -> tuple[int, int] | None:
    """The first PRT of *owner* whose role (PRT-4.1) is one of *roles*, in the order of *roles*."""
    candidates = prts.get(owner, [])
    for role in (r.upper() for r in roles):
        for index, occurrence in candidates:
            if reader.value(index, _ROLE).upper() == role:
                return index, occurrence
    return None
