"""Build the HL7 ACK for a message from its :class:`~bridge.outcome.Outcome`.

The ACK contract of interface.md, section "ACK contract":

- MSH with sending and receiving application/facility swapped, a new MSH-10,
  MSH-11, MSH-12 and MSH-18 as received, and the message's own separators;
- MSA-1 the code, MSA-2 the message's MSH-10, MSA-3 a short text of at most 80
  characters once its delimiters are escaped;
- one ERR per problem: for v2.5 and later ERR-2 location, ERR-3 code (HL7
  table 0357), ERR-4 severity and ERR-8 text; for v2.2 to 2.4 ERR-1
  (segment^sequence^field^code&text&HL70357) instead;
- enhanced mode (MSH-15/16 valued): CA/CE/CR instead of AA/AE/AR;
- a batch is answered with one ACK per message, inside FHS/BHS ... BTS/FTS
  when the input had them.

Fields are joined with the received separators; nothing is parsed here.
"""

from __future__ import annotations

import datetime
import logging
import re
import uuid
from typing import Iterable

from bridge.hl7.message import Batch, Header, ParsedMessage, declared_charset, header_of
from bridge.model import AckCode
from bridge.outcome import Outcome

#: MSA-3 is at most this many characters once escaped (interface.md).
MSA3_MAX = 80
#: ERR-8 (and ERR-1's text) is cut at this length; the journal keeps the whole text.
ERR_TEXT_MAX = 250

log = logging.getLogger(__name__)

_ENHANCED = {AckCode.AA: AckCode.CA, AckCode.AE: AckCode.CE, AckCode.AR: AckCode.CR}


def new_control_id() -> str:
    """A fresh MSH-10 for an answer: 20 characters, the v2.3 maximum length."""
    return uuid.uuid4().hex[:20].upper()


def ack_code_for(header: Header, code: AckCode) -> AckCode:
    """The code as sent: enhanced-mode messages get CA/CE/CR."""
    return _ENHANCED.get(code, code) if header.enhanced else code


def build_ack(source: ParsedMessage | Header, outcome: Outcome, *, control_id: str | None = None,
              now: datetime.datetime | None = None) -> bytes:
    """The ACK for one message, segments ended by CR, in the message's charset.

    *source* is the parsed message, or only its header when the message could
    not be parsed (see :func:`bridge.hl7.message.read_header`).

    Never raises: a header it cannot answer in (a bug, whatever the bytes) gets
    :func:`fallback_ack`, an AR in ASCII, so that every frame is answered and every
    journaled entry can be closed.
    """
    try:
        return _build_ack(source, outcome, control_id=control_id, now=now)
    except Exception:  # the one broad catch: an ACK must always come out
        log.exception("building an ACK failed: answering AR 207 in ASCII")
        return fallback_ack(source, control_id=control_id, now=now)


def fallback_ack(source: ParsedMessage | Header | None = None, *, control_id: str | None = None,
                 now: datetime.datetime | None = None) -> bytes:
    """A minimal AR 207 in ASCII with the standard delimiters, echoing only the message's
    control id (when it is plain ASCII): an answer that cannot fail."""
    try:
        received = header_of(source).control_id if isinstance(source, ParsedMessage) else source.control_id
    except Exception:  # nothing of the message can be read: MSA-2 stays empty
        received = ""
    received = received if re.fullmatch(r"[A-Za-z0-9 .\-_]{1,199}", received or "") else ""
    segments = ["MSH|^~\\&|||||" + _timestamp(now) + "||ACK|" + (control_id or new_control_id()) + "|P|2.5",
                "MSA|AR|" + received + "|internal error",
                "ERR||MSH^1|207^Application internal error^HL70357|E||||internal error, see the service log"]
    return ("\r".join(segments) + "\r").encode("ascii", "replace")


def _build_ack(source: ParsedMessage | Header, outcome: Outcome, *, control_id: str | None,
               now: datetime.datetime | None) -> bytes:
    header = header_of(source) if isinstance(source, ParsedMessage) else source
    sep = header.separator
    code = ack_code_for(header, outcome.code)
    msh = _msh(header, control_id or new_control_id(), now)
    msa = sep.join(["MSA", code.value, _clean(header.control_id), _escape_limited(outcome.text, header, MSA3_MAX)])
    segments = [msh, msa]
    modern = _modern(header.version)
    for item in outcome.errors:
        if not modern and item.severity == "I":
            # ERR-1 has no severity: before v2.5 an informational item (the document
            # id) stays in the journal only (interface.md, ACK contract).
            continue
        text = _escape_limited(item.text, header, ERR_TEXT_MAX)
        location = _location(item.location, header)
        if modern:
            cwe = header.component.join([item.code, _escape_limited(_TABLE_0357.get(item.code, ""), header, 80),
                                         "HL70357"])
            segments.append(sep.join(["ERR", "", location, cwe, item.severity or "E", "", "", "", text]))
        else:
            parts = (location.split(header.component) + ["", "", ""])[:3] if location else ["", "", ""]
            coded = header.subcomponent.join([item.code, text, "HL70357"])
            segments.append(sep.join(["ERR", header.component.join(parts + [coded])]))
    return ("\r".join(segments) + "\r").encode(header.charset, "replace")


def build_batch_ack(batch: Batch, acks: Iterable[bytes], *, control_id: str | None = None,
                    now: datetime.datetime | None = None) -> bytes:
    """One frame's answer: the ACKs in order, inside BHS/BTS (and FHS/FTS) when *batch* had them."""
    acks = list(acks)
    if not batch.enveloped:
        return b"".join(acks)
    out: list[bytes] = []
    stamp = _timestamp(now)
    envelope = batch.file_header or batch.batch_header
    charset = envelope.charset
    if batch.file_header is not None:
        out.append(_envelope_segment(batch.file_header, control_id, stamp))
    if batch.batch_header is not None:
        out.append(_envelope_segment(batch.batch_header, control_id, stamp))
    body = b"".join(acks)
    tail = []
    if batch.batch_header is not None:
        tail.append(envelope.separator.join(["BTS", str(len(acks))]))
    if batch.file_header is not None:
        tail.append(envelope.separator.join(["FTS", "1"]))
    head = ("\r".join(out) + "\r").encode(charset, "replace")
    return head + body + ("\r".join(tail) + "\r").encode(charset, "replace")


def _envelope_segment(header: Header, control_id: str | None, stamp: str) -> str:
    # FHS/BHS-3..6 swapped, -7 time, -11 our control id, -12 the input's control id.
    fields = [header.segment, header.encoding_characters, header.field(5), header.field(6),
              header.field(3), header.field(4), stamp, "", "", "", control_id or new_control_id(),
              header.control_id]
    return _clean(header.separator.join(fields))


def _msh(header: Header, control_id: str, now: datetime.datetime | None) -> str:
    trigger = header.field(9, 2)
    version = header.version
    message_type = "ACK"
    if trigger:
        message_type = header.component.join(
            ["ACK", trigger] + (["ACK"] if _version_tuple(version) >= (2, 3, 1) else []))
    fields = [
        header.encoding_characters,      # MSH-2
        header.field(5), header.field(6),  # MSH-3, -4: the receiver answers
        header.field(3), header.field(4),  # MSH-5, -6: to the sender
        _timestamp(now),                 # MSH-7
        "",                              # MSH-8
        message_type,                    # MSH-9
        control_id,                      # MSH-10 new
        header.field(11),                # MSH-11 processing id as received
        header.field(12),                # MSH-12 as received
    ]
    charset = header.field(18)
    if charset and declared_charset(charset, header.component) == header.charset:
        # MSH-13..17 empty, MSH-18 as received; a value not accepted is not echoed: the ACK
        # is then in ASCII, which an empty MSH-18 says.
        fields += ["", "", "", "", "", charset]
    return _clean("MSH" + header.separator + header.separator.join(fields))


def _clean(text: str) -> str:
    """Fields echoed from the message, without control characters (0x0B or 0x1C would end the MLLP frame)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else " " for c in text)


def _timestamp(now: datetime.datetime | None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc).astimezone()
    return now.strftime("%Y%m%d%H%M%S") + (now.strftime("%z") if now.tzinfo else "")


def _version_tuple(version: str) -> tuple[int, ...]:
    # ASCII digits only: str.isdigit() accepts "²", which int() refuses.
    digits = []
    for part in version.split("."):
        if not re.fullmatch(r"[0-9]{1,4}", part):
            break
        digits.append(int(part))
    return tuple(digits)


def _modern(version: str) -> bool:
    """ERR-2/3/4/8 from v2.5; ERR-1 for v2.2 to 2.4. An unreadable version is answered as v2.5."""
    parsed = _version_tuple(version)
    return not parsed or parsed >= (2, 5)


def _location(location: str, header: Header) -> str:
    """``PID^1^3`` written with the message's component separator."""
    return header.component.join(_escape(part, header) for part in location.split("^")) if location else ""


def escape_text(text: str, header: Header) -> str:
    """*text* with the message's delimiters escaped (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\), control characters as spaces."""
    return "".join(_escape(ch, header) for ch in text)


def _special(text: str, header: Header) -> bool:
    """Does *text* hold one of the message's delimiters or its escape character?"""
    return any(ch in text for ch in header.encoding_characters) or header.separator in text


def _escape(text: str, header: Header) -> str:
    esc = header.escape
    table = {header.separator: "F", header.component: "S", header.subcomponent: "T",
             header.repetition: "R"}
    out = []
    for ch in text:
        if ch < " " or ch == "\x7f":
            # Line ends would split the segment, 0x0B/0x1C the MLLP frame.
            out.append(" ")
        elif esc and ch == esc:
            out.append(f"{esc}E{esc}")
        elif ch in table:
            # Without an escape character (MSH-2 "^~&") a delimiter cannot be written at all.
            out.append(f"{esc}{table[ch]}{esc}" if esc else " ")
        else:
            out.append(ch)
    return "".join(out)


def _escape_limited(text: str, header: Header, limit: int) -> str:
    """Escape *text* and cut it to at most *limit* characters without splitting an escape."""
    text = text or ""
    if len(text) <= limit and text.isprintable() and not _special(text, header):
        return text   # the usual case ("received", a document id): nothing to escape
    out: list[str] = []
    length = 0
    for ch in text:
        piece = _escape(ch, header)
        if length + len(piece) > limit:
            break
        out.append(piece)
        length += len(piece)
    return "".join(out)


#: HL7 table 0357 (message error condition codes) texts for ERR-3.2.
_TABLE_0357 = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
