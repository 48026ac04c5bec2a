"""MLLP: frames in, answers out, in order (architecture.md, step 1 "receive").

:class:`MllpDecoder` only cuts bytes into frames (``0x0B ... 0x1C 0x0D``); it
knows nothing of sockets or HL7. :class:`MllpProtocol` feeds it, hands each
frame to the factory's ``handle_frame`` (a Deferred of the answer bytes) and
writes the answers in the order the frames came, whatever order processing
finishes in. Policies are the factory's: maximum frame size, idle timeout,
a deadline for a whole frame, maximum number of connections (at the limit the
longest-idle one makes room for a new one). TLS (MLLPS) is Twisted's, see
:func:`tls_options`.

Limits under abuse: bytes outside a frame are not activity (a peer sending
noise is idle); a frame must be complete within ``frame_timeout`` of its start
byte (a peer dripping a byte a second is closed); a connection that has not
completed a frame or received an answer for the longest time, and waits for
none, is the one closed when the limit is reached, so a flood of idle or
dripping sockets cannot lock the real sender out: it gets in when it connects.

Decoder plan: one buffer per frame; bytes outside a frame (CR/LF after a
frame end, stray bytes) are dropped; the search for the end byte resumes
where the last one stopped, so a frame arriving in many pieces costs O(n).
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from typing import Callable, Iterator

from OpenSSL import crypto
from twisted.internet import protocol, ssl
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from bridge.errors import FrameTooLarge

log = logging.getLogger(__name__)

START = b"\x0b"
END = b"\x1c"
CR = b"\r"
#: How much of an oversized frame is kept, to read a header from it for the AR.
HEAD_BYTES = 8192


def frame(payload: bytes) -> bytes:
    """*payload* wrapped in MLLP framing."""
    return START + payload + END + CR


class MllpDecoder:
    """Cuts a byte stream into MLLP frame payloads.

    Feed it bytes with :meth:`feed`; it yields every payload completed by them.
    A frame larger than *max_frame* raises :class:`FrameTooLarge` (after the
    frames completed before it); its ``head`` attribute holds the first bytes,
    and the rest of that frame, up to its end byte, is skipped.
    A start byte inside a frame is data: payloads with a stray 0x0B exist
    in the field (the public corpus has two), and the end byte alone decides
    where a frame stops. If an oversized frame ends inside the data of the
    same :meth:`feed` call, the bytes after it in that call are dropped (the
    listener closes the connection anyway). Nothing else raises.
    """

    def __init__(self, max_frame: int = 4 * 1024 * 1024):
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._in_frame = False
        self._skipping = False   # inside an oversized frame, dropping up to its end
        self.dropped = 0
        """Bytes dropped outside frames (CR/LF between frames excepted), for diagnostics."""

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (0 between frames)."""
        return len(self._buffer) if self._in_frame else 0

    @property
    def in_frame(self) -> bool:
        """Is a frame started and not yet complete?"""
        return self._in_frame

    @property
    def skipping(self) -> bool:
        """Is the rest of an oversized frame, up to its end byte, still to come?"""
        return self._skipping

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        pos, size = 0, len(data)
        while pos < size:
            if self._skipping:
                end = data.find(END, pos)
                if end < 0:
                    return
                self._skipping = False
                pos = end + 1
                continue
            if not self._in_frame:
                start = data.find(START, pos)
                stray = data[pos:size if start < 0 else start]
                self.dropped += len(stray.strip(b"\r\n"))
                if start < 0:
                    return
                self._in_frame = True
                pos = start + 1
                continue
            end = data.find(END, pos)
            stop = size if end < 0 else end
            if len(self._buffer) + stop - pos > self.max_frame:
                head = bytes(self._buffer[:HEAD_BYTES])
                if len(head) < HEAD_BYTES:
                    head += bytes(view[pos:pos + HEAD_BYTES - len(head)])
                self._buffer.clear()
                self._in_frame = False
                self._skipping = end < 0
                error = FrameTooLarge(f"frame larger than {self.max_frame} bytes")
                error.head = head
                raise error
            self._buffer += view[pos:stop]
            if end < 0:
                return
            payload = bytes(self._buffer)
            self._buffer.clear()
            self._in_frame = False
            pos = end + 1
            yield payload


class MllpProtocol(protocol.Protocol):
    """One MLLP connection. Answers go out in the order frames came in."""

    def __init__(self):
        self._answers: deque[list] = deque()   # [Deferred, result or None, done]
        self._closing = False
        self._draining = False
        """After an oversized frame: its rest is read and dropped before the connection closes
        (closing with unread bytes sends a reset, which can destroy the answer on its way)."""
        self._paused = False
        self.peer = ""
        self.host = ""
        self.decoder: MllpDecoder | None = None
        self._clock = None
        self._idle_call = None
        self._active_at = 0.0
        """Last read inside a frame or write: the idle timer's reference."""
        self.progress_at = 0.0
        """Connection, last complete frame or answer: the longest-idle connection has the oldest."""
        self._frame_started: float | None = None
        self._frame_call = None

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.host = str(getattr(peer, "host", ""))
        self.peer = f"{self.host}:{getattr(peer, 'port', '')}"
        self._clock = self.factory.clock or _reactor()
        self.progress_at = self._clock.seconds()
        if not self.factory.connection_opened(self):
            log.warning("refusing MLLP connection from %s: %d connections open, all waiting for answers",
                        self.peer, self.factory.max_connections)
            self._closing = True
            self.transport.loseConnection()
            return
        self.decoder = MllpDecoder(self.factory.max_frame)
        self._active()
        if self.factory.idle_timeout:
            self._idle_call = self._clock.callLater(self.factory.idle_timeout, self._idle_check)

    def _active(self) -> None:
        # A time stamp per read or write; the one timer looks at it when it fires, rather
        # than a DelayedCall moved (cancelled and scheduled again) for every message.
        self._active_at = self._clock.seconds()

    def _progress(self) -> None:
        self.progress_at = self._active_at = self._clock.seconds()

    @property
    def waiting(self) -> bool:
        """Are frames of this connection waiting for their answers?"""
        return bool(self._answers)

    def dataReceived(self, data: bytes):
        if self._closing:
            if self._draining and END in data:
                self._draining = False
                self._flush()
            return
        was_in_frame = self.decoder.in_frame
        completed = 0
        try:
            for payload in self.decoder.feed(data):
                completed += 1
                self._queue(maybeDeferred(self.factory.handle_frame, payload, self.peer))
        except FrameTooLarge as error:
            log.warning("frame from %s over %d bytes: refused, closing", self.peer, self.factory.max_frame)
            self._queue(maybeDeferred(self.factory.handle_oversize, error.head, self.peer))
            self._closing = True
            self._draining = self.decoder.skipping
            if self._draining and self._frame_started is None:
                self._frame_begins()   # the rest must come within the frame deadline too
            self._flush()
            return
        if completed:
            self._progress()
        elif was_in_frame or self.decoder.in_frame:
            self._active()   # bytes outside any frame are noise, not activity
        if not self.decoder.in_frame:
            self._frame_started = None
        elif completed or not was_in_frame:
            self._frame_begins()

    def _frame_begins(self) -> None:
        self._frame_started = self._clock.seconds()
        if self.factory.frame_timeout and self._frame_call is None:
            self._frame_call = self._clock.callLater(self.factory.frame_timeout, self._frame_check)

    def _frame_check(self) -> None:
        # One timer per connection, looking at the frame under way when it fires.
        self._frame_call = None
        if self._frame_started is None or (self._closing and not self._draining):
            return
        timeout = self.factory.frame_timeout
        left = self._frame_started + timeout - self._clock.seconds()
        if left > 0:
            self._frame_call = self._clock.callLater(left, self._frame_check)
            return
        log.warning("MLLP connection from %s: frame not complete %ss after its start (%d bytes): closing",
                    self.peer, timeout, self.decoder.pending)
        self._closing = True
        self._draining = False
        self._flush()

    def evict(self) -> None:
        """Close this connection at once to make room for a new one (it waits for no answer)."""
        log.info("MLLP connection from %s closed to admit a new one (%d open, this one idle longest: %.0fs)",
                 self.peer, self.factory.max_connections, self._clock.seconds() - self.progress_at)
        self._closing = True
        self.transport.abortConnection()

    def _queue(self, d: Deferred) -> None:
        slot = [d, None, False]
        self._answers.append(slot)
        if len(self._answers) >= self.factory.max_pending and not self._paused:
            # A sender that pipelines faster than we answer waits in TCP, not in our memory.
            self._paused = True
            self.transport.pauseProducing()

        def done(result):
            slot[1], slot[2] = result, True
            self._flush()

        d.addBoth(done)

    def _flush(self) -> None:
        while self._answers and self._answers[0][2]:
            _, result, _ = self._answers.popleft()
            if isinstance(result, Failure):
                # handle_frame always answers; this is a bug, not bad input.
                log.error("no answer for a frame from %s: %s", self.peer, result.getErrorMessage())
                continue
            if self.transport is not None and result:
                self.transport.write(frame(result))
                self._progress()
        if self._paused and len(self._answers) <= self.factory.max_pending // 2 and self.transport is not None:
            self._paused = False
            self.transport.resumeProducing()
        if self._closing and not self._answers and not self._draining and self.transport is not None:
            self.transport.loseConnection()

    def _idle_check(self):
        timeout = self.factory.idle_timeout
        now = self._clock.seconds()
        if self._answers:
            # Waiting for our own answers is not the peer being idle.
            self._active_at = now
        if now - self._active_at < timeout:
            self._idle_call = self._clock.callLater(self._active_at + timeout - now, self._idle_check)
            return
        self._idle_call = None
        log.info("MLLP connection from %s idle for %ss: closing", self.peer, timeout)
        self.transport.loseConnection()

    def connectionLost(self, reason=protocol.connectionDone):
        for call in (self._idle_call, self._frame_call):
            if call is not None and call.active():
                call.cancel()
        self._idle_call = self._frame_call = None
        if self.decoder is not None and self.decoder.pending:
            log.warning("MLLP connection from %s closed in the middle of a frame (%d bytes dropped)",
                        self.peer, self.decoder.pending)
        self.factory.connection_closed(self)
        # Work under way goes on (it is journaled); its answers have nowhere to go.
        self._answers.clear()


class MllpFactory(protocol.Factory):
    """Creates :class:`MllpProtocol` connections and holds their policies.

    *handle_frame(payload, peer)* returns (a Deferred of) the answer bytes for
    one frame; *handle_oversize(head, peer)* the answer for a refused frame.
    """

    protocol = MllpProtocol
    noisy = False

    def __init__(self, handle_frame: Callable[[bytes, str], Deferred | bytes],
                 handle_oversize: Callable[[bytes, str], Deferred | bytes], *,
                 max_frame: int = 4 * 1024 * 1024, max_connections: int = 64,
                 idle_timeout: float | None = 600.0, frame_timeout: float | None = 60.0,
                 max_pending: int = 64, clock=None):
        self.handle_frame = handle_frame
        self.handle_oversize = handle_oversize
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        """Seconds from a frame's start byte to its end byte before the connection is closed."""
        self.max_pending = max_pending
        """Frames awaiting their answer on one connection before reading from it pauses."""
        self.clock = clock
        """IReactorTime of the idle timeouts (default: the global reactor)."""
        self.connections: set[MllpProtocol] = set()

    def connection_opened(self, p: MllpProtocol) -> bool:
        """Admit *p*; at the limit, by closing the longest-idle connection waiting for no answer,
        from the host holding the most connections (False, refused, when every one waits for
        answers). A sender alone on its host is thus the last one closed by a flood from another."""
        if len(self.connections) >= self.max_connections:
            idle = [c for c in self.connections if not c.waiting]
            if not idle:
                return False
            held = Counter(c.host for c in self.connections)
            victim = min(idle, key=lambda c: (-held[c.host], c.progress_at))
            self.connections.discard(victim)
            victim.evict()
        self.connections.add(p)
        return True

    def connection_closed(self, p: MllpProtocol) -> None:
        self.connections.discard(p)


def _reactor():
    from twisted.internet import reactor
    return reactor


def tls_options(cert_path, key_path, client_ca_path=None):
    """Twisted TLS server options for MLLPS; with *client_ca_path*, client certificates are required."""
    key_pem = key_path.read_bytes()
    cert_pem = cert_path.read_bytes()
    key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    cert = crypto.load_certificate(crypto.FILETYPE_PEM, cert_pem)
    chain = [crypto.load_certificate(crypto.FILETYPE_PEM, c)
             for c in _pem_blocks(cert_pem)[1:]]
    kwargs = {}
    if client_ca_path is not None:
        cas = [ssl.Certificate.loadPEM(block).original for block in _pem_blocks(client_ca_path.read_bytes())]
        kwargs = {"verify": True, "caCerts": cas, "requireCertificate": True}
    return ssl.CertificateOptions(privateKey=key, certificate=cert, extraCertChain=chain or None,
                                  raiseMinimumTo=ssl.TLSVersion.TLSv1_2, **kwargs)


def _pem_blocks(pem: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    blocks = [b + marker for b in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in b]
    return [b[b.index(b"-----BEGIN CERTIFICATE-----"):] for b in blocks]
