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


def _delimiter(ch: str) -> bool:
    """A character that can separate fields or components: printable ASCII, not a letter or digit."""
    return len(ch) == 1 and "!" <= ch <= "~" and not ch.isalnum()


def _encoding_characters(chars: str, separator: str) -> bool:
    """MSH-2 as seen in the field: 1 to 5 distinct delimiters, none the field separator."""
    return (1 <= len(chars) <= 5 and all(_delimiter(c) for c in chars) and separator not in chars
            and len(set(chars)) == len(chars))


def parse_message(raw: bytes, default_charset: str = "iso-8859-1") -> ParsedMessage:
    """Decode and parse one message. Raises :class:`ParseError` with an HL7 location."""
    text, codec = decode(raw, default_charset)
    if len(text) < 8 or not _delimiter(text[3]):
        raise ParseError("MSH segment too short or without a field separator", location="MSH^1^1")
    if not _encoding_characters(text[4:].split(text[3], 1)[0], text[3]):
        raise ParseError("MSH-2 encoding characters unusable", location="MSH^1^2")
    try:
        message = hl7.parse(text)
        message.segment("MSH")
    except Exception as exc:  # python-hl7 raises assorted errors on broken input
        raise ParseError(f"message cannot be parsed: {type(exc).__name__}", location="MSH^1") from None
    return ParsedMessage(raw=raw, text=text, charset=codec, message=message)


# --- Headers and batches -------------------------------------------------
#
# A listener must answer frames it cannot parse, and frames that hold a whole
# batch. Both need the envelope's fields before (or without) a full parse;
# reading them is splitting one segment at its field separator, which is all
# this part does. Message content is always left to python-hl7.

_SEGMENT_START = re.compile(rb"(?:^|(?<=[\r\n]))(MSH|FHS|BHS|BTS|FTS)(?=[^A-Za-z0-9\r\n])")
_MSH_FIRST = re.compile(rb"MSH[^A-Za-z0-9\r\n]")
_ENVELOPE = re.compile(rb"FHS|BHS|BTS|FTS")


@dataclass(frozen=True, slots=True)
class Header:
    """The fields of one MSH, FHS or BHS segment, as text.

    ``fields[n]`` is SEG-n: ``fields[1]`` is the field separator and
    ``fields[2]`` the encoding characters, as in the standard's numbering.
    """

    segment: str
    fields: tuple[str, ...]
    charset: str
    """The Python codec the segment was decoded with (MSH-18 or the default)."""

    def field(self, n: int, component: int = 0) -> str:
        """SEG-n, or its *component* (1-based) of the first repetition; "" when absent."""
        value = self.fields[n] if n < len(self.fields) else ""
        if component and n > 2:
            value = value.split(self.repetition)[0].split(self.component)
            value = value[component - 1] if component <= len(value) else ""
        return value

    @property
    def separator(self) -> str:
        return self.fields[1]

    @property
    def encoding_characters(self) -> str:
        return self.fields[2]

    @property
    def component(self) -> str:
        return self.encoding_characters[0:1] or "^"

    @property
    def repetition(self) -> str:
        return self.encoding_characters[1:2] or "~"

    @property
    def escape(self) -> str:
        """The escape character, or "" when MSH-2 declares none (seen as ``^~&``)."""
        chars = self.encoding_characters
        return chars[2] if len(chars) > 3 or (len(chars) == 3 and chars[2] != "&") else ""

    @property
    def subcomponent(self) -> str:
        chars = self.encoding_characters
        return chars[3] if len(chars) >= 4 else "&"

    @property
    def control_id(self) -> str:
        """MSH-10 (or BHS-11/FHS-11 for an envelope)."""
        return self.field(10 if self.segment == "MSH" else 11).strip()

    @property
    def version(self) -> str:
        return self.field(12, 1).strip() if self.segment == "MSH" else ""

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgement mode: MSH-15 or MSH-16 is valued."""
        return self.segment == "MSH" and bool(self.field(15).strip() or self.field(16).strip())


_DEFAULT_HEADER_FIELDS = ("MSH", "|", "^~\\&")


def default_header(charset: str = "ascii") -> Header:
    """A header for answering a frame where no MSH can be read at all."""
    fields = _DEFAULT_HEADER_FIELDS + ("",) * 9 + ("2.5",)
    return Header(segment="MSH", fields=fields, charset=charset)


def read_header(raw: bytes, default_charset: str = "iso-8859-1") -> Header | None:
    """The first MSH of *raw*, read tolerantly (never raises), or None if there is none.

    Used to answer messages that cannot be parsed: bytes that the declared
    charset cannot decode are replaced, so MSH-3..MSH-12 can still be echoed.
    A field separator that cannot delimit anything gives None; unusable
    encoding characters are answered with the standard ``^~\\&``.
    """
    body = raw[len(_BOM):] if raw.startswith(_BOM) else raw
    match = re.search(rb"(?:^|[\r\n])MSH", body)
    if match is None:
        return None
    line = re.split(rb"[\r\n]", body[match.end() - 3:], maxsplit=1)[0]
    if len(line) < 4 or not _delimiter(line[3:4].decode("latin-1")):
        return None
    try:
        codec = charset_of(line, default_charset)
    except ParseError:
        codec = default_charset
    return _header("MSH", line.decode(codec, "replace"), codec)


def _header(segment: str, text: str, charset: str) -> Header:
    sep = text[3]
    parts = text.split(sep)
    if len(parts) < 2 or not _encoding_characters(parts[1], sep):
        parts[1:2] = ["^~\\&"]
    # parts[0] = the segment name, parts[1] = SEG-2; store with SEG-1 (the separator) in place.
    return Header(segment=segment, fields=(segment, sep) + tuple(parts[1:]), charset=charset)


def _header_of_segment(segment: bytes, charset: str) -> Header | None:
    if len(segment) < 4 or not _delimiter(segment[3:4].decode("latin-1")):
        return None
    return _header(segment[:3].decode("ascii"), segment.decode(charset, "replace"), charset)


@dataclass(frozen=True, slots=True)
class Batch:
    """One frame cut into its messages, with the batch envelope if it had one.

    A frame with one MSH and no envelope is a batch of one with no envelope.
    """

    messages: tuple[bytes, ...]
    """Each message's bytes, from its MSH up to the next MSH or envelope segment."""
    file_header: Header | None = None
    batch_header: Header | None = None
    leading: bytes = b""
    """Bytes before the first MSH/FHS/BHS (kept so that a frame without MSH can be answered)."""

    @property
    def enveloped(self) -> bool:
        return self.file_header is not None or self.batch_header is not None


def split_batch(frame: bytes, default_charset: str = "iso-8859-1") -> Batch:
    """Cut one MLLP frame at each MSH, FHS, BHS, BTS and FTS segment start.

    Segments may be ended by CR, LF or CRLF; a UTF-8 BOM is skipped. Trailer
    segments (BTS, FTS) are dropped: the answer counts messages itself.
    """
    body = frame[len(_BOM):] if frame.startswith(_BOM) else frame
    if _MSH_FIRST.match(body) and body.count(b"MSH") == 1 and not _ENVELOPE.search(body):
        return Batch(messages=(body,))   # the usual frame, without the segment scan below
    starts = [(m.start(), m.group(1)) for m in _SEGMENT_START.finditer(body)]
    if not starts:
        return Batch(messages=(), leading=body)
    leading = body[:starts[0][0]]
    messages: list[bytes] = []
    headers: dict[bytes, Header] = {}
    bounds = [pos for pos, _ in starts[1:]] + [len(body)]
    for (pos, name), end in zip(starts, bounds):
        chunk = body[pos:end]
        if name == b"MSH":
            messages.append(chunk)
        elif name in (b"FHS", b"BHS") and name not in headers:
            header = _header_of_segment(re.split(rb"[\r\n]", chunk, maxsplit=1)[0], default_charset)
            if header is not None:
                headers[name] = header
    return Batch(messages=tuple(messages), file_header=headers.get(b"FHS"),
                 batch_header=headers.get(b"BHS"), leading=leading)


def header_of(parsed: ParsedMessage) -> Header:
    """The MSH of a parsed message as a :class:`Header` (for answering it)."""
    return _header("MSH", parsed.text.split("\r", 1)[0], parsed.charset)
