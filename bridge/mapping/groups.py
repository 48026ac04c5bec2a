"""The message as OBR groups (their OBX, NTE and SPM), and the text an OBX or an NTE carries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.hl7.path import parse_path
from bridge.mapping.text import BREAK, text_lines

if TYPE_CHECKING:   # mapper imports this module to build the report
    from bridge.mapping.mapper import Mapper


def obr_groups(mapper: Mapper) -> tuple[list[dict], list[str]]:
    """OBR groups in order (their occurrence numbers and OBX/NTE/SPM children), and the
    comments on the whole report (NTE before the first OBR)."""
    out: list[dict] = []
    report_notes: list[str] = []
    counts: dict[str, int] = {}
    current: dict | None = None
    last_obx: dict | None = None
    for index, text in enumerate(mapper.reader.segments):
        seg = text[:3]
        counts[seg] = counts.get(seg, 0) + 1
        if seg == "OBR":
            current = {"scope": {"OBR": counts[seg], "ORC": max(counts.get("ORC", 1), 1),
                                 "PID": 1, "PV1": 1, "MSH": 1},
                       "index": index, "obx": [], "notes": [], "spm": None}
            out.append(current)
            last_obx = None
        elif current is None:
            if seg == "NTE":
                report_notes.extend(nte_text(mapper, index))
            continue
        elif seg == "OBX":
            last_obx = {"index": index, "occurrence": counts[seg], "notes": []}
            current["scope"].setdefault("OBX", counts[seg])
            current["obx"].append(last_obx)
        elif seg == "NTE":
            (last_obx["notes"] if last_obx else current["notes"]).extend(nte_text(mapper, index))
        elif seg == "SPM" and current["spm"] is None:
            current["spm"] = (index, counts[seg])
    return out, report_notes


def nte_text(mapper: Mapper, index: int) -> list[str]:
    """An NTE's comment (NTE-3 repetitions are lines), or nothing when it is blank."""
    note = "\n".join(mapper.reader.values(index, parse_path("NTE-3[*]")))
    return [note.strip("\n")] if note.strip() else []


def obx_lines(mapper: Mapper, obx: dict, *, highlight: bool = False) -> list[str]:
    """OBX-5 as lines: repetitions and ``\\.br\\`` break lines, escapes decoded, blank lines kept.

    *highlight*: keep ``\\H\\…\\N\\`` as marks (narrative paragraphs show them bold).
    """
    out: list[str] = []
    for part in [obx] + obx.get("more", []):
        values = mapper.reader.values(part["index"], parse_path("OBX-5[*]"), highlight=highlight)
        # An OBX with an empty OBX-5 is a blank line (a paragraph break).
        out.extend([line for value in values for line in text_lines(value)] or [BREAK])
    return out


def obx_text(mapper: Mapper, obx: dict) -> str:
    """OBX-5 as text: lines joined, blank lines kept inside, none at the ends."""
    return "\n".join(obx_lines(mapper, obx)).strip("\n")
