"""Read HL7 v2 fields by path (``PID-3``, ``OBR-32.1``, ``PID-3[2].5``, ``OBX-5[*]``).

The mapping files name fields this way. Text is split on the message's own
encoding characters (MSH-2) and then unescaped here, so that the escapes of
HL7 v2 section 2.7 come out as text: ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` are
the delimiters, ``\\Xhh..\\`` bytes in the message's charset, ``\\.br\\`` a
line break; highlighting (``\\H\\ … \\N\\``) is dropped, or kept as the
:data:`HIGHLIGHT` / :data:`NORMAL` marks where the caller asks (narrative text);
other formatting commands are dropped.
Locations for errors follow ERR-2: ``SEG^occurrence^field[^component]``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from bridge.hl7.message import ParsedMessage, delimiters

HIGHLIGHT = "\ue000"
"""Start of highlighted text (``\\H\\``): a private-use character, never in a message's text."""
NORMAL = "\ue001"
"""End of highlighted text (``\\N\\``)."""

_PATH = re.compile(r"^(?P<seg>[A-Z][A-Z0-9]{2})-(?P<field>\d+)(?:\[(?P<rep>\d+|\*)\])?"
                   r"(?:\.(?P<comp>\d+))?(?:\.(?P<sub>\d+))?$")


@dataclass(frozen=True, slots=True)
class Path:
    segment: str
    field: int
    repetition: int | None = 1
    """1-based; None = every repetition."""
    component: int | None = None
    subcomponent: int | None = None

    def location(self, occurrence: int = 1) -> str:
        where = f"{self.segment}^{occurrence}^{self.field}"
        return f"{where}^{self.component}" if self.component else where

    def __str__(self) -> str:
        text = f"{self.segment}-{self.field}"
        if self.repetition != 1:
            text += f"[{self.repetition or '*'}]"
        if self.component:
            text += f".{self.component}"
        if self.subcomponent:
            text += f".{self.subcomponent}"
        return text


@functools.lru_cache(maxsize=1024)
def parse_path(text: str) -> Path:
    """``SEG-f[rep].c.s`` → :class:`Path`; raises ValueError on bad syntax (cached: paths are few)."""
    match = _PATH.match(text.strip())
    if not match:
        raise ValueError(f"not an HL7 path: {text!r} (expected like PID-5.1 or PID-3[2].5)")
    rep = match["rep"]
    return Path(match["seg"], int(match["field"]),
                None if rep == "*" else int(rep or 1),
                int(match["comp"]) if match["comp"] else None,
                int(match["sub"]) if match["sub"] else None)


class Reader:
    """Field access over one parsed message, with the message's own delimiters."""

    def __init__(self, parsed: ParsedMessage):
        self.parsed = parsed
        enc = parsed.encoding_characters
        self.fs = parsed.field_separator
        self.cs, self.rs, self.ss = delimiters(enc)
        self.es = enc[2] if len(enc) > 2 else "\\"
        self.segments = [s for s in parsed.text.split("\r") if s]
        self._escape = re.compile(re.escape(self.es) + r"(.*?)" + re.escape(self.es), re.S)

    def occurrences(self, segment: str) -> list[int]:
        """Indexes (into self.segments) of each occurrence of *segment*."""
        return [i for i, s in enumerate(self.segments) if s[:3] == segment]

    def segment_id(self, index: int) -> str:
        return self.segments[index][:3]

    def raw_field(self, index: int, field: int) -> str:
        """Raw (escaped) text of field *field* of the segment at *index*."""
        seg = self.segments[index]
        parts = seg.split(self.fs)
        if seg[:3] == "MSH":
            # MSH-1 is the separator itself: MSH-n is parts[n - 1].
            if field == 1:
                return self.fs
            parts = [parts[0], self.fs] + parts[1:]
        return parts[field] if field < len(parts) else ""

    def values(self, index: int, path: Path, *, highlight: bool = False) -> list[str]:
        """The unescaped values at *path* in the segment at *index*, one per repetition read.

        *highlight*: keep ``\\H\\``/``\\N\\`` as :data:`HIGHLIGHT`/:data:`NORMAL`.
        """
        raw = self.raw_field(index, path.field)
        if path.segment == "MSH" and path.field in (1, 2):
            return [raw]
        reps = raw.split(self.rs) if raw else []
        if path.repetition is not None:
            reps = reps[path.repetition - 1: path.repetition]
        out = []
        for rep in reps:
            text = rep
            if path.component:
                comps = rep.split(self.cs)
                text = comps[path.component - 1] if path.component <= len(comps) else ""
                subs = text.split(self.ss)
                text = subs[(path.subcomponent or 1) - 1] if (path.subcomponent or 1) <= len(subs) else ""
            out.append(self.unescape(text, highlight=highlight))
        return out

    def value(self, index: int, path: Path) -> str:
        values = self.values(index, path)
        return values[0].strip() if values else ""

    def repetitions(self, index: int, field: int) -> list[list[str]]:
        """Every repetition of a field as its unescaped components."""
        raw = self.raw_field(index, field)
        return [[self.unescape(c) for c in rep.split(self.cs)] for rep in raw.split(self.rs)] if raw else []

    def unescape(self, text: str, *, highlight: bool = False) -> str:
        if self.es not in text:
            return text
        return self._escape.sub(lambda match: self._replace(match, highlight), text)

    def _replace(self, match: re.Match, highlight: bool = False) -> str:
        seq = match.group(1)
        simple = {"F": self.fs, "S": self.cs, "T": self.ss, "R": self.rs, "E": self.es,
                  ".br": "\n", ".sp": "\n"}
        if seq in simple:
            return simple[seq]
        if highlight and seq in ("H", "N"):
            return HIGHLIGHT if seq == "H" else NORMAL
        if seq[:1] == "X" and re.fullmatch(r"X(?:[0-9A-Fa-f]{2})+", seq):
            return bytes.fromhex(seq[1:]).decode(self.parsed.charset, "replace")
        # \H\ \N\ (highlight), \.in\ \.ti\ \.sk\ \.ce\ \.fi\ \.nf\, \Zxx\: formatting only.
        return ""
