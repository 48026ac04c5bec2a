"""The body of a LAB report: specialty sections of exams (one per OBR) and their observations (OBX).

The OBX-level decisions the narrative types share live here too: attachments,
and the results left out of the document (said in the ACK).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bridge.errors import ConfigError, InvalidValue, MissingField, UnknownCode
from bridge.hl7.path import parse_path
from bridge.mapping.codes import LOINC, code_of, coded_value
from bridge.mapping.groups import obx_text
from bridge.mapping.values import decimal_text, normalize_ts
from bridge.model import Code, Exam, Media, Note, Observation, Range, Section, Specimen

if TYPE_CHECKING:   # mapper imports this module to build the report
    from bridge.mapping.mapper import Mapper


# --------------------------------------------------------------------------- attachments, results left out

def attachment_types(mapper: Mapper) -> set[str]:
    return {t.upper() for t in mapper.setting("observation.attachment_types", ["ED", "RP"])}


def attachment(mapper: Mapper, obx: dict) -> Media:
    """An ED OBX-5 (``^type^subtype^Base64^data``) as Base64 with its MIME type, checked."""
    i, n = obx["index"], obx["occurrence"]
    comps = [c.strip() for c in (mapper.reader.repetitions(i, 5) or [[]])[0]] + [""] * 5
    if comps[3].upper() not in ("BASE64", "B64"):
        raise InvalidValue("attachment encoding must be Base64", location=f"OBX^{n}^5^4")
    value = re.sub(r"\s+", "", comps[4])
    if not value or not re.fullmatch(r"[A-Za-z0-9+/]+=*", value):
        raise InvalidValue("attachment data is not Base64", location=f"OBX^{n}^5^5")
    if len(value) * 3 // 4 > int(mapper.setting("observation.attachment_max_bytes", 700_000)):
        # The signed PDF that embeds this CDA must stay under the gateway's 1 MB (pdf.md §1).
        raise InvalidValue("attachment too large for the document", location=f"OBX^{n}^5^5")
    media_type = mapper.setting("observation.media_types", {}).get(f"{comps[1]}/{comps[2]}".upper())
    if media_type is None:
        raise UnknownCode("attachment type not in observation.media_types", location=f"OBX^{n}^5^2")
    return Media(media_type=media_type, value=value)


def attachment_left_out(mapper: Mapper, n: int, value_type: str) -> None:
    """An attachment (ED/RP) where the type's guide has no multimedia: a warning, never narrative text."""
    mapper.notice(f"attachment ({value_type}) not carried: {mapper.doc_type.name} has no place for it",
                  f"OBX^{n}^5", severity="W")


def left_out(mapper: Mapper, obx: dict) -> bool:
    """OBX-11 says the result is deleted or wrong (``omit`` in observation.status): leave it out, say so."""
    status = mapper.reader.value(obx["index"], parse_path("OBX-11")).upper()
    if mapper.setting("observation.status", {}).get(status) != "omit":
        return False
    mapper.notice(f"result left out of the document: OBX-11 is {status}", f"OBX^{obx['occurrence']}^11")
    return True


# --------------------------------------------------------------------------- LAB sections

def lab_sections(mapper: Mapper, groups: list[dict]) -> tuple[Section, ...]:
    by_code: dict[str, list[Exam]] = {}
    for specialty, exam in exams(mapper, groups):
        by_code.setdefault(specialty, []).append(exam)
    if not by_code:
        raise MissingField("no results to publish: every result is left out (OBX-11)", location="OBX^1^11")
    sections = []
    for code, found in by_code.items():
        row = mapper.mappings.lookup("lab_specialties.csv", code, column="loinc")
        if row is None:
            raise ConfigError(f"specialty section {code} is not one of the LAB section codes",
                              file=str(mapper.mappings.directory / "lab_specialties.csv"))
        sections.append(Section(code=Code(code=code, system=LOINC, system_name="LOINC",
                                          display=row["display"]),
                                title=row["display"], ref=mapper.ref("sec"), exams=tuple(found)))
    return tuple(sections)


def exams(mapper: Mapper, groups: list[dict]) -> list[tuple[str, Exam]]:
    """(specialty section code, exam) per OBR group (LAB)."""
    out = []
    spec = mapper.setting("specialty")
    for group in groups:
        scope = group["scope"]
        n = scope["OBR"]
        specialty, _ = mapper.source(spec, scope, what="diagnostic service section")
        comps = mapper.reader.repetitions(group["index"], 4)
        code = code_of(mapper, comps[0] if comps else [], f"OBR^{n}^4", what="universal service identifier")
        kept = results(mapper, group)
        observations = tuple(observation(mapper, obx, group) for obx in kept)
        if not observations and group["obx"]:
            mapper.notice("order left out of the document: none of its results is to be shown",
                          f"OBR^{n}^4")
            continue
        if not observations:
            raise MissingField("no results (OBX) for this order", location=f"OBR^{n}^4")
        # Preliminary results (OBX-11 P, R, I, S) make the act, and the document, partial.
        partial = {v.upper() for v in mapper.setting("observation.partial", [])}
        statuses = {mapper.reader.value(obx["index"], parse_path("OBX-11")).upper() for obx in kept}
        status = "active" if statuses & partial else "completed"
        notes = tuple(Note(ref=mapper.ref("note"), text=t) for t in group["notes"])
        out.append((specialty, Exam(ref=mapper.ref("exam"), code=code, name=local_name(
                                        mapper.reader.repetitions(group["index"], 4), code), status=status,
                                    effective_time=group["time"], specimen=specimen(mapper, group),
                                    observations=observations, notes=notes)))
    return out


def results(mapper: Mapper, group: dict) -> list[dict]:
    """The OBX of a LAB group that become observations: attachments the type cannot carry,
    deleted or wrong results (said in the ACK) and blank text lines are left out; the
    lines of one text result sent one per OBX (``observation.continued_lines``, same
    OBX-3 and OBX-4) are one observation."""
    reader = mapper.reader
    carried = {t.upper() for t in mapper.setting("observation.carried_attachments", [])}
    continued = {t.upper() for t in mapper.setting("observation.continued_lines", ["TX"])}
    kept: list[dict] = []
    run = None
    for obx in group["obx"]:
        i, n = obx["index"], obx["occurrence"]
        value_type = reader.value(i, parse_path("OBX-2")).upper()
        key = (reader.raw_field(i, 3), reader.raw_field(i, 4), reader.raw_field(i, 11)) \
            if value_type in continued else None
        if key is not None and key == run:
            kept[-1].setdefault("more", []).append(obx)
            kept[-1]["notes"] = kept[-1]["notes"] + obx["notes"]
            continue
        run = None
        if value_type in attachment_types(mapper) and value_type not in carried:
            attachment_left_out(mapper, n, value_type)
        elif left_out(mapper, obx):
            continue
        elif value_type in ("TX", "FT") and not obx_text(mapper, obx).strip() and not obx["notes"] and \
                mapper.setting("observation.status", {}).get(
                    reader.value(i, parse_path("OBX-11")).upper()) != "aborted":
            continue   # a blank line between text results: nothing to show
        else:
            kept.append(dict(obx))
            run = key
    return kept


def observation(mapper: Mapper, obx: dict, group: dict) -> Observation:
    r, i, n = mapper.reader, obx["index"], obx["occurrence"]
    value_type = r.value(i, parse_path("OBX-2")).upper()
    code = code_of(mapper, r.repetitions(i, 3)[0] if r.repetitions(i, 3) else [], f"OBX^{n}^3",
                   what="observation identifier")
    status = mapper.setting("observation.status", {}).get(r.value(i, parse_path("OBX-11")).upper(), "completed")
    raw_time = r.value(i, parse_path("OBX-14"))
    effective = normalize_ts(raw_time, mapper.tz, f"OBX^{n}^14") if raw_time else group["time"]
    unit_raw = r.value(i, parse_path("OBX-6.1"))
    ucum = unit(mapper, unit_raw, f"OBX^{n}^6")
    kind, value, low, high, coded, shown, media_type = "", "", "", "", None, "", ""
    if status != "aborted":
        if value_type == "NM":
            text = r.value(i, parse_path("OBX-5"))
            value = decimal_text(text) or ""
            if not value:
                raise InvalidValue("numeric result is not a number", location=f"OBX^{n}^5")
            kind, shown = "PQ", text
        elif value_type == "SN":
            comps = (r.repetitions(i, 5) or [[]])[0] + ["", "", "", ""]
            comparator, num1, sep, num2 = (c.strip() for c in comps[:4])
            shown = " ".join(c for c in (comparator, num1, sep, num2) if c)
            a, b = decimal_text(num1), decimal_text(num2)
            if a is not None and sep in ("-",) and b is not None:
                kind, low, high = "IVL_PQ", a, b
            elif a is not None and not sep and comparator in ("<", "<="):
                kind, high = "IVL_PQ", a
            elif a is not None and not sep and comparator in (">", ">="):
                kind, low = "IVL_PQ", a
            elif a is not None and not sep and comparator in ("", "="):
                kind, value = "PQ", a
            else:
                kind, value = "ST", shown
            if not shown:
                raise MissingField("result value is missing", location=f"OBX^{n}^5")
        elif value_type == "ED":
            media = attachment(mapper, obx)
            kind, value, media_type = "ED", media.value, media.media_type
            shown = f"Allegato ({media_type})"
        elif value_type in ("CE", "CWE", "CNE", "CF"):
            comps = (r.repetitions(i, 5) or [[]])[0]
            coded = coded_value(mapper, comps, f"OBX^{n}^5")
            shown = (comps[1] if len(comps) > 1 and comps[1] else comps[0] if comps else "").strip()
            kind = "CD" if coded else "ST"
            value = shown
        else:
            shown = obx_text(mapper, obx)
            kind, value = "ST", shown
        if not shown:
            raise MissingField("result value is missing", location=f"OBX^{n}^5")
    ranges = ()
    range_text = r.value(i, parse_path("OBX-7"))
    if range_text:
        ranges = (reference_range(range_text, ucum),)
    interpretation = None
    flag = r.value(i, parse_path("OBX-8.1"))
    if flag and status != "aborted":
        codes = mapper.setting("observation.interpretation", {})
        mapped = codes.get(flag.upper())
        if mapped is None:
            raise UnknownCode("abnormal flag not in the interpretation codes", location=f"OBX^{n}^8")
        interpretation = Code(code=mapped[0], system="2.16.840.1.113883.5.83", display=mapped[1],
                              system_name="HL7 ObservationInterpretation")
    notes = tuple(Note(ref=mapper.ref("note"), text=t) for t in obx["notes"])
    return Observation(ref=mapper.ref("obs"), code=code, name=local_name(r.repetitions(i, 3), code),
                       unit_text=unit_raw, status=status, effective_time=effective,
                       value_type=kind if status != "aborted" else "", value=value,
                       unit=ucum if kind in ("PQ", "IVL_PQ") else "", low=low, high=high,
                       coded=coded, text=shown, interpretation=interpretation, ranges=ranges,
                       notes=notes, media_type=media_type)


def unit(mapper: Mapper, raw: str, location: str) -> str:
    if not raw:
        return "1"
    row = mapper.mappings.lookup("units.csv", raw, column="unit")
    if row:
        return row["ucum"]
    if re.fullmatch(r"[A-Za-z0-9/.%*\[\]{}()^'_-]+", raw):
        return raw
    raise UnknownCode("unit not in units.csv and not UCUM", location=location)


def reference_range(text: str, unit: str) -> Range:
    clean = text.strip()
    match = re.fullmatch(r"([+-]?\d+(?:[.,]\d+)?)\s*-\s*([+-]?\d+(?:[.,]\d+)?)", clean)
    if match:
        return Range(low=decimal_text(match[1]) or "", high=decimal_text(match[2]) or "", unit=unit, text=clean)
    match = re.fullmatch(r"(<=?|>=?)\s*([+-]?\d+(?:[.,]\d+)?)", clean)
    if match:
        number = decimal_text(match[2]) or ""
        return Range(high=number, unit=unit, text=clean) if match[1].startswith("<") \
            else Range(low=number, unit=unit, text=clean)
    return Range(text=clean)


def specimen(mapper: Mapper, group: dict) -> Specimen | None:
    spec = mapper.setting("specimen", {})
    if group["spm"]:
        index, occ = group["spm"]
        raw, location = mapper.reader.value(index, parse_path("SPM-4.1")), f"SPM^{occ}^4^1"
    else:
        raw, location = mapper.source(spec.get("source", "OBR-15.1"), group["scope"])
    if not raw:
        return None
    row = mapper.mappings.lookup(spec.get("table", "specimens.csv"), raw.upper(), column="local")
    if row is None:
        raise UnknownCode("specimen type not in specimens.csv", location=location)
    return Specimen(code=Code(code=row["code"], system="2.16.840.1.113883.5.129", display=row["display"],
                              system_name="SpecimenType"),
                    collected=group["collected"])


def local_name(reps: list[list[str]], code: Code) -> str:
    """The name the sender gave a test (CE.2, else CE.5), else the code's display name."""
    comps = [c.strip() for c in (reps[0] if reps else [])] + ["", "", "", "", ""]
    return comps[1] or comps[4] or code.display or code.code
