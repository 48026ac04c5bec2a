"""Fuzz the real listener: mutated frames of ../shared/corpus/hl7-public over many connections.

    python bench/fuzz_mllp.py [--frames 5000] [--connections 48] [--seed 1]
                              [--ack-mode commit] [--max-seconds 1800]

Starts ``fse-bridge serve`` on a temporary configuration (the embedded default:
simulated gateway, development certificates, journal in a temporary folder,
MLLP on a free loopback port), then sends --frames frames, each a corpus message
(or a batch of them) mutated at random, over --connections connections, each
waiting for the answer to one frame before sending the next, as a sender does.
Every frame is well framed (no end byte inside it), so every one must get
exactly one answer, readable in the charset its own MSH-18 names.

Prints frames, answers, unanswered (must be 0), unreadable answers (must be 0),
the ACK codes, and the resident memory (VmRSS, kB) of the service and its worker
processes before (after a warm-up) and after the run. Exit status 1 when a
frame went unanswered or an answer was unreadable. Loopback only; bounded by
--frames and --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
CORPUS = CHECKOUT.parent / "shared" / "corpus" / "hl7-public"
sys.path.insert(0, str(CHECKOUT))

from bridge.hl7.message import declared_charset  # noqa: E402
from proctime import cpu_seconds  # noqa: E402
from bridge.mllp.protocol import END, MllpDecoder, frame  # noqa: E402

#: Small enough for oversize frames to be cheap to send.
MAX_MESSAGE_BYTES = 1024 * 1024
BAD_CHARSETS = [b"ROT13", b"HEX", b"BASE64", b"QUOPRI", b"UU", b"ZLIB", b"BZ2", b"IDNA", b"PUNYCODE",
                b"UTF-16", b"cp037", b"UTF-8\x00", b"UNDEFINED", b"\xff\xfe", b"8859/1~ROT13", b"UNICODE UTF-8",
                b"8859/15", b"ASCII"]
BAD_VERSIONS = ["².7".encode(), b"2.5\x00", b"\xb2.7", b"2..5", b"v2.5", b"", b"9" * 30, b"2.5^ITA"]


# -- the service ---------------------------------------------------------------------


def config_text(state_dir: Path, ack_mode: str) -> str:
    return f"""state_dir = "{state_dir}"
[mllp]
host = "127.0.0.1"
port = 0
max_message_bytes = {MAX_MESSAGE_BYTES}
[ack]
mode = "{ack_mode}"
[certificates]
development = true
[mapping]
dir = "{CHECKOUT / 'mappings'}"
templates = "{CHECKOUT / 'templates'}"
practitioners = "{CHECKOUT / 'mappings' / 'practitioners.csv'}"
[validation]
rules_dir = "{state_dir / 'rules'}"
[web]
port = 0
"""


class Service:
    """``fse-bridge serve`` in a subprocess on a temporary configuration; its log in the folder."""

    def __init__(self, folder: Path, ack_mode: str = "commit"):
        self.folder = folder
        self.config = folder / "bridge.toml"
        self.config.write_text(config_text(folder / "var", ack_mode))
        self.port_file = folder / "port"
        self.log_path = folder / "service.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> "Service":
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--config", str(self.config),
                                      "--port-file", str(self.port_file)],
                                     cwd=CHECKOUT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not self.port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the service did not start:\n" + self.log_path.read_text()[-3000:])
            time.sleep(0.1)
        self.port = int(self.port_file.read_text())
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def workers(self) -> list[int]:
        """The service's child processes (its workers) now running."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if stat[1] == str(self.proc.pid):
                    found.append(int(entry.name))
        return sorted(found)

    def memory(self) -> dict[str, int]:
        """VmRSS in kB: the service, then each worker (by pid)."""
        rss = {"service": rss_kb(self.proc.pid)}
        rss.update({f"worker {pid}": rss_kb(pid) for pid in self.workers()})
        return rss

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def settle(self, limit: float) -> float:
        """Wait (at most *limit* seconds) until the service and its workers are idle: in commit
        mode, processing goes on after the answers. The seconds waited."""
        began = time.monotonic()
        last = sum(cpu_seconds(self.proc.pid) or (0, 0))
        while time.monotonic() - began < limit:
            time.sleep(2)
            now = sum(cpu_seconds(self.proc.pid) or (0, 0))
            if now - last < 0.1:   # under 5 % of a CPU over 2 s
                break
            last = now
        return time.monotonic() - began


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def show_memory(label: str, memory: dict[str, int]) -> str:
    return f"{label}: " + ", ".join(f"{name} {kb / 1024:.1f} MB" for name, kb in memory.items())


# -- frames -------------------------------------------------------------------------


def corpus_messages() -> list[bytes]:
    """Each message of the corpus (batches cut at MSH), segments ended by CR."""
    messages = []
    for path in sorted(CORPUS.glob("*.hl7")):
        text = path.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        for part in re.split(rb"(?=MSH\|)", text):
            if part.startswith(b"MSH"):
                messages.append(part)
    return messages


def set_field(message: bytes, n: int, value: bytes) -> bytes:
    """*message* with MSH-n set to *value*."""
    head, sep, rest = message.partition(b"\r")
    fields = head.split(head[3:4]) if len(head) > 3 else [head]
    fields += [b""] * (n - len(fields))
    fields[n - 1] = value
    return head[3:4].join(fields) + sep + rest


class Mutator:
    """Mutated corpus frames, reproducible from a seed."""

    def __init__(self, seed: int, messages: list[bytes]):
        self.random = random.Random(seed)
        self.messages = messages
        self.count = 0

    def message(self) -> bytes:
        self.count += 1
        message = set_field(self.random.choice(self.messages), 10, b"FZ%d" % self.count)
        ops = [self.flip, self.insert, self.delete, self.charset, self.version, self.msh2, self.no_control_id,
               self.truncate, self.repeat_segment, self.many_fields, self.utf16, self.keep]
        for op in self.random.choices(ops, k=self.random.randint(1, 3)):
            message = op(message)
        return message

    def frame(self) -> bytes:
        roll = self.random.random()
        if roll < 0.08:
            members = b"".join(self.message() for _ in range(self.random.randint(1, 4)))
            payload = b"BHS|^~\\&|LIS|OSP|FSE|REG|20240101||||B%d\r" % self.count + members + b"BTS|1\r"
        elif roll < 0.09:
            payload = self.message() + b"NTE|1||" + b"x" * (MAX_MESSAGE_BYTES + 10) + b"\r"   # oversize
        else:
            payload = self.message()
        return payload.replace(END, b"")   # well framed: the end byte only at the end

    def _at(self, message: bytes) -> int:
        return self.random.randrange(len(message) or 1)

    def flip(self, m: bytes) -> bytes:
        data = bytearray(m)
        for _ in range(self.random.randint(1, 8)):
            if data:
                data[self._at(data)] = self.random.randrange(256)
        return bytes(data)

    def insert(self, m: bytes) -> bytes:
        at = self._at(m)
        return m[:at] + self.random.randbytes(self.random.randint(1, 64)) + m[at:]

    def delete(self, m: bytes) -> bytes:
        at = self._at(m)
        return m[:at] + m[at + self.random.randint(1, 200):]

    def charset(self, m: bytes) -> bytes:
        return set_field(m, 18, self.random.choice(BAD_CHARSETS))

    def version(self, m: bytes) -> bytes:
        return set_field(m, 12, self.random.choice(BAD_VERSIONS))

    def msh2(self, m: bytes) -> bytes:
        return set_field(m, 2, self.random.randbytes(self.random.randint(0, 5)))

    def no_control_id(self, m: bytes) -> bytes:
        return set_field(m, 10, b"")

    def truncate(self, m: bytes) -> bytes:
        return m[:self._at(m)]

    def _size(self, largest: int) -> int:
        """Mostly small, now and then up to *largest* (log-uniform)."""
        return int(10 ** self.random.uniform(0, math.log10(largest)))

    def repeat_segment(self, m: bytes) -> bytes:
        segments = m.split(b"\r")[1:] or [b"NTE|1||x"]   # not MSH: that would be a batch of thousands
        one = self.random.choice(segments) + b"\r"
        return m + one * self._size(20_000)

    def many_fields(self, m: bytes) -> bytes:
        delimiter = bytes([self.random.choice(b"|^~&")])
        return m + b"NTE|1||" + delimiter * self._size(300_000) + b"\r"

    def utf16(self, m: bytes) -> bytes:
        return set_field(m, 18, b"UTF-16").decode("latin-1").encode("utf-16")

    def keep(self, m: bytes) -> bytes:
        return m


# -- the senders ------------------------------------------------------------------


def readable(answer: bytes) -> bool:
    """Is each ACK of *answer* text in the charset its own MSH-18 names (none: the default,
    Latin-1), with an MSA? (A batch's members may each have their own charset.)"""
    acks = [b"MSH" + part for part in re.split(rb"(?:^|\r)MSH", answer)[1:]]
    return bool(acks) and all(_readable_ack(ack) for ack in acks)


def _readable_ack(ack: bytes) -> bool:
    sep = ack[3:4]
    if not sep:
        return False
    msh = ack.split(b"\r", 1)[0].split(sep)
    named = msh[17].decode("ascii", "replace") if len(msh) > 17 else ""
    codec = declared_charset(named) if named else "iso-8859-1"
    if codec is None:
        return False
    try:
        text = ack.decode(codec)
    except UnicodeDecodeError:
        return False
    return re.search(r"\rMSA" + re.escape(sep.decode("latin-1")) + r"(AA|AE|AR|CA|CE|CR)", text) is not None


class Tally:
    def __init__(self):
        self.frames = self.answers = self.unanswered = self.unreadable = self.extra = 0
        self.codes: collections.Counter = collections.Counter()
        self.lost: collections.Counter = collections.Counter()
        """Why frames went unanswered."""
        self.samples: list[bytes] = []
        """The first few unreadable answers, to show."""
        self.lost_frames: list[tuple[int, bytes]] = []
        """Size and head of the first few frames left unanswered, to show."""

    def answered(self, answer: bytes) -> None:
        self.answers += 1
        if not readable(answer):
            self.unreadable += 1
            if len(self.samples) < 3:
                self.samples.append(answer[:300])
        for code in re.findall(rb"(?:^|\r)MSA.(AA|AE|AR|CA|CE|CR)", answer):
            self.codes[code.decode()] += 1


async def sender(port: int, frames, tally: Tally, deadline: float, answer_timeout: float) -> None:
    reader = writer = None
    decoder = MllpDecoder(64 * 1024 * 1024)
    while time.monotonic() < deadline:
        payload = next(frames, None)
        if payload is None:
            break
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
            decoder = MllpDecoder(64 * 1024 * 1024)
        tally.frames += 1
        try:
            writer.write(frame(payload))
            await writer.drain()
            answers = []
            while not answers:
                data = await asyncio.wait_for(reader.read(1 << 20), answer_timeout)
                if not data:
                    raise ConnectionError("closed")
                answers.extend(decoder.feed(data))
            tally.answered(answers[0])
            tally.extra += len(answers) - 1
        except (ConnectionError, asyncio.TimeoutError, OSError) as exc:
            tally.unanswered += 1
            tally.lost[f"{type(exc).__name__} {exc}"[:80]] += 1
            if len(tally.lost_frames) < 3:
                tally.lost_frames.append((len(payload), payload[:120]))
            writer.close()
            writer = None
            continue
        if reader.at_eof() or len(payload) > MAX_MESSAGE_BYTES:
            # The listener closes after refusing an oversized frame: a sender starts a new connection.
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def drive(port: int, frames, connections: int, max_seconds: float, answer_timeout: float) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + max_seconds
    await asyncio.gather(*(sender(port, frames, tally, deadline, answer_timeout) for _ in range(connections)))
    return tally


def warm_up(port: int, count: int = 20) -> None:
    """A few corpus messages as they are: every stage loaded before the first figure."""
    messages = iter(set_field(m, 10, b"WARM%d" % n) for n, m in enumerate(corpus_messages()[:count]))
    asyncio.run(drive(port, messages, 4, 300, 120))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ack-mode", choices=("commit", "outcome"), default="commit")
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument("--answer-timeout", type=float, default=180,
                        help="seconds a sender waits for one answer before counting it unanswered")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the service's log here")
    parser.add_argument("--settle", type=float, default=180,
                        help="at most this many seconds to wait for the service to be idle after the run")
    args = parser.parse_args()
    mutator = Mutator(args.seed, corpus_messages())
    frames = (mutator.frame() for _ in range(args.frames))
    with tempfile.TemporaryDirectory(prefix="fuzz-mllp-") as tmp, Service(Path(tmp), args.ack_mode) as service:
        warm_up(service.port)
        before = service.memory()
        print(show_memory("RSS before", before), flush=True)
        started = time.monotonic()
        tally = asyncio.run(drive(service.port, frames, args.connections, args.max_seconds,
                                  args.answer_timeout))
        elapsed = time.monotonic() - started
        after = service.memory()
        waited = service.settle(args.settle)
        settled = service.memory()
        log = service.log()
    if args.keep_log:
        Path(args.keep_log).write_text(log)
    print(f"frames {tally.frames}, answers {tally.answers}, unanswered {tally.unanswered}, "
          f"unreadable {tally.unreadable}, extra answers {tally.extra} "
          f"({args.connections} connections, seed {args.seed}, ack mode {args.ack_mode}, {elapsed:.0f} s)")
    print("ACK codes (MSA segments): " + ", ".join(f"{code} {n}" for code, n in tally.codes.most_common()))
    for reason, n in tally.lost.most_common():
        print(f"  unanswered: {n} x {reason}")
    for size, head in tally.lost_frames:
        print(f"  unanswered frame of {size} bytes: {head!r}")
    for sample in tally.samples:
        print(f"  unreadable: {sample!r}")
    print(show_memory("RSS before", before))
    print(show_memory("RSS after ", after))
    print(show_memory(f"RSS settled ({waited:.0f} s later)", settled))
    ended = len(re.findall(r"worker \d+ ended", log))
    print(f"service log: {log.count('no answer for a frame')} 'no answer for a frame', "
          f"{log.count('Traceback')} tracebacks, {ended} workers ended, "
          f"{log.count('building an ACK failed')} fallback ACKs")
    return 1 if tally.unanswered or tally.unreadable or tally.extra else 0


if __name__ == "__main__":
    sys.exit(main())
