"""Specimens of a narrative report (RAP): every SPM segment, described in the section that lists them.

Which fields make a specimen, and the section that shows them, are data: the
type's ``[specimens]`` table (RAP.toml). LAB keeps its own per-exam specimen
(``[specimen]``, SPM-4 or OBR-15 → SpecimenType).
"""

from __future__ import annotations

from bridge.model import Code, Identifier, Specimen

SNOMED = "2.16.840.1.113883.6.96"


def narrative_specimens(mapper, spec: dict, id_root: str) -> tuple[Specimen, ...]:
    """One Specimen per SPM segment: id (SPM-2), site (SPM-8, kept when SNOMED CT), description (SPM-14)."""
    if not spec:
        return ()
    systems = mapper.setting("code_systems", {})
    out = []
    for occurrence, _ in enumerate(mapper.reader.occurrences("SPM"), start=1):
        scope = {"SPM": occurrence}
        ident, _ = mapper.source(spec.get("id", ["SPM-2.2", "SPM-2.1"]), scope)
        description, _ = mapper.source(spec.get("description", ["SPM-14", "SPM-4.2"]), scope)
        site_code, _ = mapper.source(spec.get("site", "SPM-8.1"), scope)
        site_text, _ = mapper.source(spec.get("site_text", "SPM-8.2"), scope)
        site_system, _ = mapper.source(spec.get("site_system", "SPM-8.3"), scope)
        site = None
        if site_code and systems.get(site_system.upper()) == SNOMED:
            site = Code(code=site_code, system=SNOMED, system_name="SNOMED CT", display=site_text)
        if not (ident or description or site_text):
            continue
        out.append(Specimen(code=None, id=Identifier(root=id_root, extension=ident) if ident else None,
                            site=site, description=description or site_text,
                            site_text=site_text))
    return tuple(out)


def specimen_line(specimen: Specimen) -> str:
    """The specimen as one narrative paragraph: its description, and its site when not already said."""
    text = specimen.description
    if specimen.site_text and specimen.site_text.lower() not in text.lower():
        text = f"{text} ({specimen.site_text})" if text else specimen.site_text
    return f"{specimen.id.extension}: {text}" if specimen.id else text
