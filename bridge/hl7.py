"""Decode and parse one HL7 v2 message, once, into a :class:`ParsedMessage`.

Parsing is python-hl7's (tolerant of v2.2 to v2.8, Z-segments, empty and
repeated fields). This module adds what a listener needs before parsing:
the charset from MSH-18 (or the configured default), a stray UTF-8 BOM, and
segments ended by CR, LF or CRLF.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

import hl7

from bridge.errors import ParseError

#: MSH-18 spellings seen in the field, to Python codec names.
CHARSETS = {
    "ASCII": "ascii",
    "US-ASCII": "ascii",
    "8859/1": "iso-8859-1",
    "ISO-8859-1": "iso-8859-1",
    "ISO8859-1": "iso-8859-1",
    "ISO_8859-1": "iso-8859-1",
    "ISO IR100": "iso-8859-1",
    "ISO-IR100": "iso-8859-1",
    "LATIN1": "iso-8859-1",
    "LATIN-1": "iso-8859-1",
    "8859/15": "iso-8859-15",
    "ISO-8859-15": "iso-8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "WINDOWS-1252": "cp1252",
    "CP1252": "cp1252",
}

_BOM = codecs.BOM_UTF8
_TERMINATORS = re.compile(r"\r\n|\n\r?|\r")


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """One decoded and parsed HL7 v2 message."""

    raw: bytes
    text: str
    """The decoded message with segments ended by CR."""
    charset: str
    """The Python codec used to decode ``raw``."""
    message: hl7.Message
    """python-hl7's parse tree; read fields with :meth:`get`."""

    @property
    def field_separator(self) -> str:
        return self.text[3]

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as received (component, repetition, escape, subcomponent[, truncation])."""
        return str(self.message.segment("MSH")[2])

    def get(self, segment: str, field: int, component: int = 1, repetition: int = 1,
            subcomponent: int = 1, occurrence: int = 1) -> str:
        """Text at SEG-field.component (1-based), or "" when absent. Never raises."""
        try:
            return str(self.message.extract_field(segment, occurrence, field, repetition,
                                                  component, subcomponent) or "")
        except (KeyError, IndexError, LookupError, ValueError):
            return ""

    @property
    def control_id(self) -> str:
        return self.get("MSH", 10)

    @property
    def sending_application(self) -> str:
        return self.get("MSH", 3)

    @property
    def sending_facility(self) -> str:
        return self.get("MSH", 4)

    @property
    def message_type(self) -> str:
        return self.get("MSH", 9, 1)

    @property
    def trigger_event(self) -> str:
        return self.get("MSH", 9, 2)

    @property
    def version(self) -> str:
        return self.get("MSH", 12)

    @property
    def accept_ack_type(self) -> str:
        return self.get("MSH", 15)

    @property
    def application_ack_type(self) -> str:
        return self.get("MSH", 16)


def charset_of(raw: bytes, default: str) -> str:
    """The Python codec for MSH-18 of *raw*, read from the bytes before decoding.

    MSH-18 may repeat (first repetition wins). An unknown name raises
    :class:`ParseError` at ``MSH^1^18``.
    """
    head = re.split(rb"[\r\n]", raw, maxsplit=1)[0]
    if len(head) < 4 or not head.startswith(b"MSH"):
        return default
    sep = head[3:4]
    fields = head.split(sep)
    # fields[0] = "MSH", fields[1] = MSH-2, so MSH-n is fields[n - 1].
    declared = fields[17].decode("ascii", "replace").strip() if len(fields) > 17 else ""
    if not declared:
        return default
    declared = declared.split(head[4:5].decode("ascii", "replace") or "^")[0]
    first = declared.split("~")[0].strip().upper()
    codec = CHARSETS.get(first)
    if codec is None:
        try:
            codec = codecs.lookup(first).name
        except LookupError:
            raise ParseError(f"unknown character set {first!r} in MSH-18",
                             location="MSH^1^18", code="102") from None
    return codec


def decode(raw: bytes, default_charset: str) -> tuple[str, str]:
    """Decode *raw* (one message) to text with CR segment terminators: (text, codec)."""
    body = raw[len(_BOM):] if raw.startswith(_BOM) else raw
    start = body.find(b"MSH")
    if start < 0:
        raise ParseError("no MSH segment", location="MSH^1")
    body = body[start:]
    codec = charset_of(body, default_charset)
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        raise ParseError(f"bytes not valid in the character set {codec} (offset {exc.start})",
                         location="MSH^1^18", code="102") from None
    text = _TERMINATORS.sub("\r", text.strip("\r\n")).strip("\r")
    # Drop empty segments left by blank lines.
    text = "\r".join(s for s in text.split("\r") if s.strip())
    return text, codec


def parse_message(raw: bytes, default_charset: str = "iso-8859-1") -> ParsedMessage:
    """Decode and parse one message. Raises :class:`ParseError` with an HL7 location."""
    text, codec = decode(raw, default_charset)
    if len(text) < 8 or text[3] in "\r\n" or text[3].isalnum():
        raise ParseError("MSH segment too short or without a field separator", location="MSH^1^1")
    try:
        message = hl7.parse(text)
        message.segment("MSH")
    except Exception as exc:  # python-hl7 raises assorted errors on broken input
        raise ParseError(f"message cannot be parsed: {type(exc).__name__}", location="MSH^1") from None
    return ParsedMessage(raw=raw, text=text, charset=codec, message=message)
