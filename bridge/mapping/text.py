"""Narrative text as senders write it: lines, blank lines and paragraphs.

RIS and clinic systems send a report one TX line per OBX, an empty OBX-5 (or
an empty repetition, or ``\\.br\\\\.br\\``) where a paragraph ends. Here a
section's text is a flat list of lines in which ``""`` is a paragraph break;
:func:`paragraphs` turns it into the Report's paragraphs (lines kept inside).
"""

from __future__ import annotations

import re

from bridge.hl7.path import HIGHLIGHT, NORMAL

BREAK = ""
"""A paragraph break in a list of lines."""


def text_lines(text: str) -> list[str]:
    """The lines of decoded text (CR, LF, CRLF), trailing blanks trimmed; blank lines kept as breaks."""
    return [line.rstrip() for line in re.split(r"\r\n|\r|\n", text)] if text else []


def paragraphs(flat: list[str]) -> tuple[str, ...]:
    """Paragraphs of *flat* lines: blank lines split them; empty paragraphs vanish."""
    out: list[str] = []
    current: list[str] = []
    for line in flat + [BREAK]:
        if plain(line).strip():
            current.append(line)
        elif current:
            out.append("\n".join(current))
            current = []
    return tuple(out)


def plain(text: str) -> str:
    """*text* without highlight marks (for structured values)."""
    return text.replace(HIGHLIGHT, "").replace(NORMAL, "")
