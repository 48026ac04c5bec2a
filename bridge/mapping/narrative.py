"""The body of a narrative report (RAD/RSA/RAP/LDO): each OBX's text in the section its OBX-3 maps to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.errors import MissingField, UnknownCode
from bridge.hl7.path import parse_path
from bridge.mapping.codes import LOINC, coded_value
from bridge.mapping.groups import obx_lines
from bridge.mapping.observations import attachment, attachment_left_out, attachment_types, left_out
from bridge.mapping.sections import fill_required
from bridge.mapping.specimens import specimen_line
from bridge.mapping.text import BREAK, paragraphs, text_lines
from bridge.model import Code, Media, Section, Specimen

if TYPE_CHECKING:   # mapper imports this module to build the report
    from bridge.mapping.mapper import Mapper


def narrative_sections(mapper: Mapper, groups: list[dict], procedures: list[Code], report_notes: list[str],
                       specimens: tuple[Specimen, ...] = ()) -> tuple[Section, ...]:
    """Sections of RAD/RSA/RAP/LDO: each OBX goes to the section its OBX-3 maps to.

    Consecutive lines of one OBX-3 (``observation.continued_lines`` types,
    one TX line per OBX) make one paragraph; an empty OBX-5 or a blank line
    ends it. Required sections are then filled as the type declares
    (:mod:`bridge.mapping.sections`).
    """
    reader = mapper.reader
    table = mapper.setting("sections.table", "sections.csv")
    default = mapper.setting("sections.default")
    notes_section = mapper.setting("sections.notes", default)
    continued = {t.upper() for t in mapper.setting("observation.continued_lines", ["TX"])}
    carried = {t.upper() for t in mapper.setting("observation.carried_attachments", [])}
    # Sections whose entry can hold one attachment (RAP: the AP observation's observationMedia).
    media_sections = set(mapper.setting("sections.media", []))
    media: dict[str, Media] = {}
    flat: dict[str, list[str]] = {}
    codes: dict[str, list[Code]] = {}
    run = None

    def add(section: str, lines: list[str], key=None) -> None:
        nonlocal run
        target = flat.setdefault(section, [])
        if key is None or key != run:
            target.append(BREAK)
        target.extend(lines)
        run = key

    add(notes_section, [line for n in report_notes for line in text_lines(n) + [BREAK]])
    for group in groups:
        for obx in group["obx"]:
            i, n = obx["index"], obx["occurrence"]
            section = section_of(mapper, obx, table, default)
            value_type = reader.value(i, parse_path("OBX-2")).upper()
            if value_type in attachment_types(mapper):
                if value_type in carried and section in media_sections and section not in media:
                    media[section] = attachment(mapper, obx)
                else:
                    attachment_left_out(mapper, n, value_type)
                continue
            if left_out(mapper, obx):
                continue
            if value_type in ("CE", "CWE", "CNE"):
                comps = (reader.repetitions(i, 5) or [[]])[0]
                coded = coded_value(mapper, comps, f"OBX^{n}^5")
                if coded:
                    codes.setdefault(section, []).append(coded)
                lines = [(comps[1] if len(comps) > 1 and comps[1] else comps[0] if comps else "").strip()]
                add(section, lines)
            else:
                key = (section, reader.raw_field(i, 3), reader.raw_field(i, 4)) \
                    if value_type in continued else None
                add(section, obx_lines(mapper, obx, highlight=True) or [BREAK], key)
            for note in obx["notes"]:
                add(section, text_lines(note))
        for note in group["notes"]:
            add(notes_section, text_lines(note))
    texts = {code: paras for code, lines in flat.items() if (paras := paragraphs(lines))}
    for code, item in media.items():
        texts.setdefault(code, (f"Allegato ({item.media_type})",))
    if not texts:
        raise MissingField("the report has no text (every OBX-5 is empty)", location="OBX^1^5")
    rows = mapper.mappings.tables.get(table, ())
    doc_type = mapper.doc_type.name
    order = [row["section"] for row in rows if row.get("type") == doc_type and row.get("obx") == row.get("section")]
    titles = {row["section"]: row["title"] for row in rows if row.get("type") == doc_type and row.get("title")}
    texts = fill_required(texts, mapper.setting("sections.required", {}), procedures=procedures,
                          titles=titles, note=mapper.setting("narrative.copied_note", ""))
    shown_in = mapper.setting("specimens.section")
    if specimens and shown_in:
        texts[shown_in] = texts.get(shown_in, ()) + tuple(specimen_line(s) for s in specimens)
    out = []
    for code in sorted(texts, key=lambda c: order.index(c) if c in order else len(order)):
        title = titles.get(code, code)
        out.append(Section(code=Code(code=code, system=LOINC, system_name="LOINC", display=title),
                           title=title, ref=mapper.ref("sec"), paragraphs=texts[code],
                           codes=tuple(codes.get(code, ())), media=media.get(code)))
    return tuple(out)


def section_of(mapper: Mapper, obx: dict, table: str, default: str | None) -> str:
    """The section an OBX goes to: OBX-3.1, then its suffix OBX-3.1.2 (``RM093&IMP``), in the table."""
    i, n = obx["index"], obx["occurrence"]
    for path in mapper.setting("narrative.section_keys", ["OBX-3.1", "OBX-3.1.2"]):
        ident = mapper.reader.value(i, parse_path(path))
        if not ident:
            continue
        row = mapper.mappings.lookup(table, ident, column="obx", type=mapper.doc_type.name) \
            or mapper.mappings.lookup(table, ident, column="section", type=mapper.doc_type.name)
        if row:
            return row["section"]
    if not default:
        raise UnknownCode("observation identifier not mapped to a section", location=f"OBX^{n}^3")
    return default
