"""Many generated Italian ORU^R01 through the product's stages: how many are published, and why not.

    python bench/bench_generated.py [--examples N] [--types LAB,RAD] [--without prt,blank_lines]
                                    [--no-package] [--out DIR] [--refusals N]

The messages come from tests/generated/strategies.py (the oracle of issue 13);
each goes through analyse → render → validate → package as a worker runs
them (tests/generated/pipeline.py), then every CDA through the reference
validator ../shared/tools/validate_cda.py in batches. Prints the count that
passed, the failures by stage and by first line of their reason, and for each
generator dimension the failure rate of the messages that use it against
those that do not: the dimension that triggers a failure stands out. With
--out, the first message of each distinct failure is written there. With
--refusals N, N more messages each with one field the CDA needs broken must
each get the AE naming that field.
Exit status 0 when every message passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(CHECKOUT), str(CHECKOUT / "tests")]     # tests.generated, and the shared_data it reads

from tests.generated.corruptions import misjudged, refused_messages  # noqa: E402
from tests.generated.pipeline import make_stages, run, validate_independently  # noqa: E402
from tests.generated.strategies import TYPES, Dimensions, messages  # noqa: E402

BATCH = 200


def _reason(stage: str, detail: str) -> str:
    """A failure's kind: its stage and reason without the values that vary per message."""
    first = detail.split("; ")[0]
    first = re.sub(r"\^\d+", "^n", first)           # OBX^12^5 -> OBX^n^5
    first = re.sub(r"^\d+ (\w+) not in the CDA, e\.g\. .*", r"\1 not in the CDA", first)
    return f"{stage}: {first[:160]}"


def generate(examples: int, strategy, on_example) -> None:
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(example):
        on_example(example)

    one()


def refusals(stages, examples: int, types: tuple[str, ...]) -> int:
    """Messages with one broken field: how many got the AE naming it, and what the others got."""
    kinds, wrong = collections.Counter(), collections.Counter()

    def on_case(case):
        _, refusal = case
        kinds[refusal.what] += 1
        verdict = misjudged(stages, refusal)
        if verdict:
            wrong[verdict[:160]] += 1

    generate(examples, refused_messages(types=types), on_case)
    print(f"refusals: {sum(kinds.values()) - sum(wrong.values())} of {sum(kinds.values())} AE naming the "
          f"broken field ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})")
    for verdict, count in wrong.most_common():
        print(f"  {count:5d}  {verdict}")
    return sum(wrong.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--without", default="", help="dimensions to switch off: " + ", ".join(Dimensions.names()))
    parser.add_argument("--no-package", action="store_true", help="stop at the CDA (no PDF, faster)")
    parser.add_argument("--out", type=Path, help="folder for one message per distinct failure")
    parser.add_argument("--refusals", type=int, default=0, metavar="N",
                        help="also N messages with one field the CDA needs broken: each must be AE naming it")
    args = parser.parse_args(argv)
    unknown = {n for n in args.without.split(",") if n} - set(Dimensions.names())
    if unknown:
        parser.error(f"unknown dimensions: {', '.join(sorted(unknown))}")
    dims = Dimensions().without(*[n for n in args.without.split(",") if n])
    types = tuple(t.strip().upper() for t in args.types.split(","))

    stages = make_stages(Path(tempfile.mkdtemp(prefix="bench-generated-pki-")))
    results = []          # (generated, stage, detail, cda)
    started = time.perf_counter()

    def on_message(generated):
        outcome = run(stages, generated, package=not args.no_package)
        results.append([generated, outcome.stage, outcome.detail, outcome.cda])
        if len(results) % 50 == 0:
            print(f"  {len(results)} messages, {time.perf_counter() - started:.0f} s", file=sys.stderr)

    generate(args.examples, messages(types=types, dims=dims), on_message)
    # The reference validator over every CDA the product itself found valid, in batches.
    checked = [r for r in results if r[3] is not None and r[1] in ("ok", "content", "package")]
    for start in range(0, len(checked), BATCH):
        batch = checked[start:start + BATCH]
        for row, verdict in zip(batch, validate_independently([r[3] for r in batch])):
            if verdict:
                row[1], row[2] = "validate_cda.py", verdict
    elapsed = time.perf_counter() - started

    passed = sum(1 for r in results if r[1] == "ok")
    print(f"generated {len(results)} messages ({', '.join(types)}; off: {args.without or 'none'}) "
          f"in {elapsed:.0f} s: {passed} passed, {len(results) - passed} failed")
    by_type = collections.Counter((r[0].doc_type, r[1] == "ok") for r in results)
    print("by type:  " + "  ".join(f"{t} {by_type[(t, True)]}/{by_type[(t, True)] + by_type[(t, False)]}"
                                   for t in types))
    by_version = collections.Counter((r[0].version, r[1] == "ok") for r in results)
    versions = sorted({r[0].version for r in results}, key=lambda v: tuple(map(int, v.split("."))))
    print("by HL7:   " + "  ".join(f"{v} {by_version[(v, True)]}/{by_version[(v, True)] + by_version[(v, False)]}"
                                   for v in versions))
    used = collections.Counter(f for r in results for f in r[0].features)
    print("messages using each dimension: " + ", ".join(f"{n} {used[n]}" for n in Dimensions.names()))
    failures = collections.Counter(_reason(r[1], r[2]) for r in results if r[1] != "ok")
    if failures:
        print("failures:")
        for reason, count in failures.most_common():
            print(f"  {count:5d}  {reason}")
        print("failure rate by dimension (messages using it / not using it):")
        for name in Dimensions.names():
            using = [r for r in results if name in r[0].features]
            other = [r for r in results if name not in r[0].features]
            rate = lambda rows: sum(r[1] != "ok" for r in rows) / len(rows) if rows else 0.0  # noqa: E731
            print(f"  {name:15s} {rate(using):6.1%} of {len(using):4d}   {rate(other):6.1%} of {len(other):4d}")
    if args.out and failures:
        args.out.mkdir(parents=True, exist_ok=True)
        seen = set()
        for r in results:
            reason = _reason(r[1], r[2])
            if r[1] == "ok" or reason in seen:
                continue
            seen.add(reason)
            name = f"{len(seen):02d}-{r[0].doc_type}-v{r[0].version}-{r[1]}.hl7"
            (args.out / name).write_bytes(r[0].raw)
            (args.out / (name + ".txt")).write_text(f"{r[0].describe()}\n{r[1]}: {r[2]}\n", "utf-8")
        print(f"one message per failure written to {args.out}")
    misjudged_count = refusals(stages, args.refusals, types) if args.refusals else 0
    return 0 if passed == len(results) and not misjudged_count else 1


if __name__ == "__main__":
    sys.exit(main())
