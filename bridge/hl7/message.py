"""Decode and parse one HL7 v2 message, once, into a :class:`ParsedMessage`.

Parsing is python-hl7's (tolerant of v2.2 to v2.8, Z-segments, empty and
repeated fields). This module adds what a listener needs before parsing:
the charset from MSH-18 (or the configured default), a stray UTF-8 BOM, and
segments ended by CR, LF or CRLF.
"""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass
from pathlib import Path

import hl7

from bridge.errors import FrameTooLarge, NotProcessable, ParseError

#: The accepted MSH-18 values and their codecs (HL7 table 0211, ASCII-compatible ones only).
CHARSETS_CSV = Path(__file__).resolve().parents[2] / "mappings" / "charsets.csv"


def ascii_compatible(codec: str) -> bool:
    """Does *codec* decode every ASCII byte as itself (so delimiters, MSH and an ACK read as ASCII)?"""
    try:
        return bytes(range(128)).decode(codec) == "".join(map(chr, range(128)))
    except (LookupError, UnicodeError, TypeError, ValueError):
        return False


def load_charsets(path: Path = CHARSETS_CSV) -> dict[str, str]:
    """MSH-18 value (upper case) → Python codec, from *path*; a codec that is not an
    ASCII-compatible text encoding is an error naming the file and the row."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    table = {}
    for row in rows:
        name, codec = (row.get("msh18") or "").strip().upper(), (row.get("codec") or "").strip()
        if not name or not ascii_compatible(codec):
            raise ValueError(f"{path}: {row!r} is not an MSH-18 value with an ASCII-compatible codec")
        table[name] = codec
    return table


CHARSETS = load_charsets()

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


def declared_charset(value: str, component: str = "^") -> str | None:
    """The codec for an MSH-18 value (first repetition, first component), None when the
    value is not in :data:`CHARSETS`."""
    first = value.split(component or "^")[0].split("~")[0].strip().upper()
    return CHARSETS.get(first)


def charset_of(raw: bytes, default: str) -> str:
    """The Python codec for MSH-18 of *raw*, read from the bytes before decoding.

    MSH-18 may repeat (first repetition wins). A value not in mappings/charsets.csv
    raises :class:`ParseError` (AE 102) at ``MSH^1^18``.
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
    codec = declared_charset(declared, head[4:5].decode("ascii", "replace"))
    if codec is None:
        shown = declared.encode("ascii", "backslashreplace").decode("ascii")[:40]
        raise ParseError(f"character set {shown!r} in MSH-18 not accepted (mappings/charsets.csv)",
                         location="MSH^1^18", code="102")
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


def delimiters(encoding_characters: str) -> tuple[str, str, str]:
    """MSH-2's component, repetition and subcomponent separators, HL7's defaults (``^ ~ &``) for
    those it leaves out (1 to 5 characters are accepted), as python-hl7 reads them too."""
    chars = encoding_characters
    return chars[0:1] or "^", chars[1:2] or "~", chars[3:4] or "&"


def _encoding_characters(chars: str, separator: str) -> bool:
    """MSH-2 as seen in the field: 1 to 5 distinct delimiters, none the field separator."""
    return (1 <= len(chars) <= 5 and all(_delimiter(c) for c in chars) and separator not in chars
            and len(set(chars)) == len(chars))


#: Default caps on one message's size in parts (configuration: mllp.max_segments, mllp.max_fields):
#: a parse tree costs some hundred bytes per part, so a frame of a million tiny fields would
#: take hundreds of MB in the worker.
MAX_SEGMENTS = 10_000
MAX_FIELDS = 200_000

_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def parse_message(raw: bytes, default_charset: str = "iso-8859-1", *, max_segments: int = MAX_SEGMENTS,
                  max_fields: int = MAX_FIELDS) -> ParsedMessage:
    """Decode and parse one message. Raises :class:`ParseError` with an HL7 location.

    Unusable MSH-2, an unreadable MSH-12 or no MSH-10 is refused (AR naming the field):
    nothing in the message can be read, answered in its version, or told apart. A message of more
    than *max_segments* segments or *max_fields* delimited parts (fields, repetitions,
    components, subcomponents) is refused before it is parsed, as an oversize frame is.
    """
    text, codec = decode(raw, default_charset)
    if len(text) < 8 or not _delimiter(text[3]):
        raise ParseError("MSH segment too short or without a field separator", location="MSH^1^1")
    encoding_characters = text[4:].split(text[3], 1)[0]
    if not _encoding_characters(encoding_characters, text[3]):
        raise NotProcessable("MSH-2 encoding characters unusable", location="MSH^1^2", code="102")
    _check_size(text, text[3] + encoding_characters[:2] + encoding_characters[3:4], max_segments, max_fields)
    try:
        message = hl7.parse(text)
        message.segment("MSH")
    except Exception as exc:  # python-hl7 raises assorted errors on broken input
        raise ParseError(f"message cannot be parsed: {type(exc).__name__}", location="MSH^1") from None
    parsed = ParsedMessage(raw=raw, text=text, charset=codec, message=message)
    version = parsed.version.strip()
    if version and not _VERSION.fullmatch(version):
        raise NotProcessable("MSH-12 version unreadable", location="MSH^1^12", code="203")
    if not parsed.control_id.strip():
        # Without it the sender cannot tell which message an answer is for (MSA-2 stays empty).
        raise NotProcessable("MSH-10 message control id missing", location="MSH^1^10", code="101")
    return parsed


def parse_configured(raw: bytes, mllp) -> ParsedMessage:
    """:func:`parse_message` with the ``[mllp]`` settings' charset and caps."""
    return parse_message(raw, mllp.default_charset, max_segments=mllp.max_segments, max_fields=mllp.max_fields)


def _check_size(text: str, delimiters: str, max_segments: int, max_fields: int) -> None:
    segments = text.count("\r") + 1
    if segments > max_segments:
        raise FrameTooLarge(f"message of {segments} segments refused (at most {max_segments})",
                            location="MSH^1")
    parts = sum(text.count(d) for d in delimiters)
    if parts > max_fields:
        raise FrameTooLarge(f"message of {parts} fields and components refused (at most {max_fields})",
                            location="MSH^1")


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
        return delimiters(self.encoding_characters)[0]

    @property
    def repetition(self) -> str:
        return delimiters(self.encoding_characters)[1]

    @property
    def escape(self) -> str:
        """The escape character, or "" when MSH-2 declares none (seen as ``^~&``)."""
        chars = self.encoding_characters
        return chars[2] if len(chars) > 3 or (len(chars) == 3 and chars[2] != "&") else ""

    @property
    def subcomponent(self) -> str:
        return delimiters(self.encoding_characters)[2]

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
    An MSH-18 not in mappings/charsets.csv gives a header in ASCII.
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
        codec = "ascii"   # MSH-18 not accepted: the answer must be readable whatever the sender meant
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
