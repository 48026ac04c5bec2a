"""Sections a type's schematron requires, filled as its mapping declares (issue 13 item 4).

A type's ``[sections.required]`` table lists, for each required section code,
where its text comes from when no OBX carries it, tried in order:

* ``"procedures"``: the services of OBR-4 (their names);
* a section code: that section's paragraphs, as the sender wrote them;
* ``"narrative"``: the paragraphs of every section the sender wrote.

A section copied from others starts with the paragraph ``narrative.copied_note``
(``{sources}`` = their titles), so a reader knows where its text comes from.
A required section that no source fills is refused (AE 101 naming the section).
"""

from __future__ import annotations

from bridge.errors import ConfigError, MissingField
from bridge.model import Code

PROCEDURES = "procedures"
NARRATIVE = "narrative"


def check_declaration(required, file: str) -> None:
    """A start-up check: ``[sections.required]`` maps section codes to lists of sources."""
    if not isinstance(required, dict) or not all(isinstance(v, list) for v in required.values()):
        raise ConfigError('must be a table: section code = ["procedures" | "narrative" | section code, ...]',
                          file=file, key="sections.required")


def fill_required(texts: dict[str, tuple[str, ...]], required: dict[str, list[str]], *,
                  procedures: list[Code], titles: dict[str, str], note: str) -> dict[str, tuple[str, ...]]:
    """*texts* (section code → paragraphs, in the sender's order) with every required section present.

    Raises MissingField naming the first required section no source can fill.
    """
    written = dict(texts)
    out = dict(texts)
    for code, sources in required.items():
        if out.get(code):
            continue
        for source in sources:
            if source == PROCEDURES:
                filled = tuple(c.display or c.code for c in procedures)
                origin: list[str] = []
            elif source == NARRATIVE:
                origin = [c for c in written if c != code and written[c]]
                filled = tuple(p for c in origin for p in written[c])
            else:
                origin = [source] if written.get(source) else []
                filled = written.get(source, ())
            if filled:
                if origin and note:
                    filled = (note.format(sources=", ".join(titles.get(c, c) for c in origin)),) + filled
                out[code] = filled
                break
        else:
            raise MissingField(f"required section {code} ({titles.get(code, code)}) has no content "
                               "and the mapping declares no source for it", location="OBX^1^3")
    return out
