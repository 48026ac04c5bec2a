"""Memory of the worker's stages run in one process, many times: does any of them keep what it made?

    python bench/memory_stages.py [--stage analyse|package|validate|all] [--count N] [--every K]

analyse: the parse, routing and mapping of fuzzed frames (bench/fuzz_mllp.py's Mutator over
../shared/corpus/hl7-public, seed 1); package: the unsigned PDF/A of the five official CDA
samples, cycled; validate: XSD + official schematron (../shared/reference) of the same samples.
Every K runs, after a garbage collection, prints the process's resident memory (VmRSS, MB) and,
for analyse and package, the Python memory still allocated (tracemalloc, KB): a leak grows the
second; allocator high-water marks and the Saxon (GraalVM) heap move only the first.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
SHARED = CHECKOUT.parent / "shared"
SAMPLES = SHARED / "reference" / "cda" / "samples"
TYPES = ("LAB", "RAD", "RSA", "RAP", "LDO")
sys.path.insert(0, str(CHECKOUT))

from bridge.config import from_dict  # noqa: E402
from bridge.errors import BridgeError  # noqa: E402
from bridge.mapping.analysis import analyse  # noqa: E402
from bridge.model import DocumentType  # noqa: E402
from bridge.pdf import package  # noqa: E402
from bridge.service import stages as worker  # noqa: E402
from fuzz_mllp import Mutator, corpus_messages  # noqa: E402


def rss_mb() -> int:
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) // 1024


def runner(stage: str, stages: worker.Stages):
    """A function of the run number that runs *stage* once."""
    samples = [(SAMPLES / f"{t}.xml").read_bytes() for t in TYPES]
    if stage == "analyse":
        mutator = Mutator(1, corpus_messages())

        def run(_n: int) -> None:
            try:
                analyse(stages, mutator.message())
            except BridgeError:
                pass
        return run
    if stage == "package":
        return lambda n: package.build_unsigned_pdf(samples[n % len(samples)])
    return lambda n: worker.validate(stages, samples[n % len(samples)], DocumentType[TYPES[n % len(TYPES)]])


def measure(stage: str, count: int, every: int) -> None:
    config = from_dict({"certificates": {"development": True},
                        "validation": {"rules_dir": str((SHARED / "reference").resolve())}},
                       base_dir=CHECKOUT / "etc")
    run = runner(stage, worker.Stages(config))
    traced = stage != "validate"   # Saxon's objects live in the GraalVM heap, not Python's
    for n in range(min(every, 100)):  # warm-up: first-use caches and imports
        run(n)
    if traced:
        tracemalloc.start(1)
    start = time.monotonic()
    print(f"{stage}: runs, RSS MB" + (", Python KB still allocated" if traced else ""))
    for n in range(1, count + 1):
        run(n)
        if n % every == 0:
            gc.collect()
            python = f", {tracemalloc.get_traced_memory()[0] // 1024}" if traced else ""
            print(f"  {n}, {rss_mb()}{python}  ({time.monotonic() - start:.0f} s)", flush=True)
    if traced:
        tracemalloc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=("analyse", "package", "validate", "all"), default="all")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--every", type=int, default=500)
    args = parser.parse_args()
    for stage in (("analyse", "package", "validate") if args.stage == "all" else (args.stage,)):
        measure(stage, args.count, args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
