"""`fse-bridge send FILE...`: a real MLLP client (interface.md, "Commands").

Each file holds one message, several (sent one frame each, split at each
MSH) or a batch (FHS/BHS: sent as one frame). Each ACK's MSA-1, MSA-2, MSA-3
and ERR segments are printed; the exit status is 0 only if every ACK is AA or CA.
"""

from __future__ import annotations

import re
import socket
import ssl
import sys
from collections import deque
from pathlib import Path

from bridge.commands._common import load_config
from bridge.errors import BridgeError, ExitCode, ParseError
from bridge.hl7.message import parse_message, split_batch
from bridge.mllp.protocol import MllpDecoder, frame

_LINE_ENDS = re.compile(rb"\r\n|\n\r?")


def add_arguments(parser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="HL7 file(s)")
    parser.add_argument("--host", help="listener host (default: mllp.host of the configuration)")
    parser.add_argument("--port", type=int, help="listener port (default: mllp.port of the configuration)")
    parser.add_argument("--tls", action="store_true", help="MLLP over TLS")
    parser.add_argument("--ca", metavar="PEM", help="CA certificate(s) to verify the server (with --tls)")
    parser.add_argument("--cert", metavar="PEM", help="client certificate (with --tls)")
    parser.add_argument("--key", metavar="PEM", help="client key (default: in --cert)")
    parser.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each ACK")
    parser.add_argument("--raw", action="store_true",
                        help="send the bytes unchanged (default: LF and CRLF segment ends become CR)")


def frames_of(data: bytes, *, raw: bool = False) -> list[bytes]:
    """The frames to send for one file: the whole batch, or one per MSH."""
    if not raw:
        data = _LINE_ENDS.sub(b"\r", data)
    batch = split_batch(data)
    if batch.enveloped or not batch.messages:
        return [data.strip(b"\r\n") + b"\r"]
    return [m.rstrip(b"\r\n") + b"\r" for m in batch.messages]


def describe_ack(payload: bytes) -> tuple[list[str], bool]:
    """Printable lines for an answer frame, and whether every ACK in it is AA or CA."""
    lines, ok = [], True
    messages = split_batch(payload).messages
    if not messages:
        return [f"unreadable answer: {payload[:80]!r}"], False
    for message in messages:
        try:
            parsed = parse_message(message, "iso-8859-1")
        except ParseError as exc:
            lines.append(f"unreadable ACK: {exc}")
            ok = False
            continue
        code = parsed.get("MSA", 1)
        ok = ok and code in ("AA", "CA")
        lines.append(f"{code} {parsed.get('MSA', 2)} {parsed.get('MSA', 3)}".rstrip())
        for segment in _segments(parsed, "ERR"):
            fields = [str(segment[n]) if len(segment) > n else "" for n in range(9)]
            if fields[3] or fields[8]:
                # v2.5+: ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 text
                code = fields[3].split(parsed.encoding_characters[0])[0]
                lines.append(f"  ERR {fields[2]} {code} {fields[4]} {fields[8]}")
            else:
                lines.append(f"  ERR {fields[1]}")  # v2.2-2.4: ERR-1
    return lines, ok


def _segments(parsed, name: str) -> list:
    try:
        return parsed.message.segments(name)
    except KeyError:
        return []


def _connect(args, host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=args.timeout)
    if not args.tls:
        return sock
    context = ssl.create_default_context(cafile=args.ca)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    return context.wrap_socket(sock, server_hostname=host)


def run(args) -> int:
    host, port = args.host, args.port
    if host is None or port is None:
        settings = load_config(args).mllp
        host = host or settings.host
        port = port if port is not None else settings.port
    to_send = []
    for name in args.files:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise BridgeError(f"{name}: cannot read: {exc.strerror}") from None
        to_send += [(name, f) for f in frames_of(data, raw=args.raw)]
    all_ok = True
    try:
        sock = _connect(args, host, port)
    except (OSError, ssl.SSLError) as exc:
        raise BridgeError(f"cannot connect to {host}:{port}: {exc}") from None
    with sock:
        reader = FrameReader(sock)
        for name, payload in to_send:
            sock.sendall(frame(payload))
            answer = reader.next()
            if answer is None:
                print(f"{name}: connection closed without an ACK", file=sys.stderr)
                return ExitCode.FAILED
            lines, ok = describe_ack(answer)
            all_ok = all_ok and ok
            for line in lines:
                print(f"{name}: {line}" if not line.startswith("  ") else line)
    return ExitCode.DONE if all_ok else ExitCode.FAILED


class FrameReader:
    """Reads whole MLLP frames from a blocking socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.decoder = MllpDecoder(max_frame=64 * 1024 * 1024)
        self.frames: deque[bytes] = deque()

    def next(self) -> bytes | None:
        """The next frame, or None when the peer closes first."""
        while not self.frames:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise BridgeError("no ACK within the timeout") from None
            if not data:
                return None
            self.frames.extend(self.decoder.feed(data))
        return self.frames.popleft()
