"""Soak: memory of the service and its workers over many messages, valid and fuzzed.

    python bench/soak.py [--messages 10000] [--fuzzed 0.3] [--connections 4]
                         [--ack-mode outcome] [--every 1000]

Starts ``fse-bridge serve`` on a temporary configuration (the embedded default,
as bench/fuzz_mllp.py does), then sends --messages messages: valid laboratory
reports (examples/lab.hl7, each with its own control id and accession, so each
is a new document published to the embedded simulator with its signed PDF) and,
a --fuzzed share of them, mutated corpus frames (bench/fuzz_mllp.py's
mutations). Every --every messages it prints the resident memory (VmRSS) of the
service and of each worker. The first block is the warm-up; the goal is less
than 30 MB of growth after it (issue 14, item 6). Exit status 1 when a message
went unanswered.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from fuzz_mllp import CHECKOUT, Mutator, Service, Tally, corpus_messages, drive, show_memory, warm_up

LAB = (CHECKOUT / "examples" / "lab.hl7").read_bytes()


def valid(n: int) -> bytes:
    """examples/lab.hl7 as a new report: its own control id and accession."""
    return LAB.replace(b"|LAB0001|", b"|SOAK%d|" % n).replace(b"A26-00412", b"S26-%06d" % n)


def messages(count: int, fuzzed: float, seed: int):
    choose = random.Random(seed)
    mutator = Mutator(seed, corpus_messages())
    for n in range(count):
        yield mutator.frame() if choose.random() < fuzzed else valid(n)


def total_mb(memory: dict[str, int]) -> float:
    return sum(memory.values()) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--fuzzed", type=float, default=0.3, help="share of mutated corpus frames")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--ack-mode", choices=("commit", "outcome"), default="outcome")
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-log", metavar="FILE", help="copy the service's log here")
    args = parser.parse_args()
    stream = messages(args.messages, args.fuzzed, args.seed)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, Service(Path(tmp), args.ack_mode) as service:
        warm_up(service.port)
        start = service.memory()
        print(show_memory("start", start), flush=True)
        began = time.monotonic()
        marks = []
        sent = 0
        while sent < args.messages:
            block = [next(stream) for _ in range(min(args.every, args.messages - sent))]
            part = asyncio.run(drive(service.port, iter(block), args.connections, 3600, 300))
            sent += len(block)
            for name in ("frames", "answers", "unanswered", "unreadable", "extra"):
                setattr(tally, name, getattr(tally, name) + getattr(part, name))
            tally.codes.update(part.codes)
            memory = service.memory()
            marks.append(memory)
            print(f"{sent:6d} messages, {time.monotonic() - began:6.0f} s, unanswered {tally.unanswered}: "
                  + show_memory("RSS", memory) + f" (total {total_mb(memory):.1f} MB)", flush=True)
        log = service.log()
    if args.keep_log:
        Path(args.keep_log).write_text(log)
    print(f"frames {tally.frames}, answers {tally.answers}, unanswered {tally.unanswered}, "
          f"unreadable {tally.unreadable}; ACK codes: "
          + ", ".join(f"{code} {n}" for code, n in tally.codes.most_common()))
    if len(marks) > 1:
        growth = total_mb(marks[-1]) - total_mb(marks[0])
        print(f"growth after warm-up (first {args.every} messages): {growth:+.1f} MB "
              f"(service {(marks[-1]['service'] - marks[0]['service']) / 1024:+.1f} MB)")
    return 1 if tally.unanswered or tally.unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
