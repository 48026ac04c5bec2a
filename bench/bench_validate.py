"""Cold and warm local validation time per official sample (XSD + schematron).

    python bench/bench_validate.py [RULES_DIR] [--rounds N]

RULES_DIR defaults to the reference pack next to the checkout (../shared/reference).
Cold = first document of a type (loads the XSD, translates and compiles the
schematron); warm = the median of the following rounds, which is what the
service pays per document. Also shows how warm time splits between the XSD
and the schematron, and the throughput with four worker threads sharing one Rules.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lxml import etree

from bridge.cda.validate import load_rules, select_type, validate_cda

CHECKOUT = Path(__file__).resolve().parents[1]
DEFAULT_RULES = CHECKOUT / ".." / "shared" / "reference"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rules_dir", nargs="?", type=Path, default=DEFAULT_RULES)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args(argv)

    rules = load_rules(args.rules_dir)
    if rules is None:
        print(f"no rules installed in {args.rules_dir}", file=sys.stderr)
        return 2
    samples = sorted((args.rules_dir / "cda" / "samples").glob("*.xml"))
    if not samples:
        samples = sorted((DEFAULT_RULES / "cda" / "samples").glob("*.xml"))

    print(f"{'sample':<10}{'KiB':>7}{'cold ms':>10}{'warm ms':>10}{'xsd ms':>9}{'sch ms':>9}  result")
    documents = []
    for path in samples:
        xml = path.read_bytes()
        documents.append(xml)
        start = time.perf_counter()
        report = validate_cda(xml, rules)
        cold = time.perf_counter() - start
        warm = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            validate_cda(xml, rules)
            warm.append(time.perf_counter() - start)
        xsd, sch = split(xml, rules, args.rounds)
        print(f"{path.name:<10}{len(xml) / 1024:>7.0f}{cold * 1e3:>10.1f}{statistics.median(warm) * 1e3:>10.2f}"
              f"{xsd * 1e3:>9.2f}{sch * 1e3:>9.2f}  {report.summary()}")

    jobs = documents * args.rounds
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(r.ok for r in pool.map(lambda xml: validate_cda(xml, rules), jobs))
    elapsed = time.perf_counter() - start
    print(f"4 threads, one Rules: {len(jobs)} documents in {elapsed:.2f} s "
          f"({len(jobs) / elapsed:.0f} documents/s; calls into lxml/saxon are serialised)")
    return 0


def split(xml: bytes, rules, rounds: int) -> tuple[float, float]:
    """Median time of the XSD step and of the schematron step alone."""
    doc = etree.ElementTree(etree.fromstring(xml))
    doc_type, _ = select_type(doc.getroot())
    text = etree.tostring(doc, encoding="unicode")
    xsd, sch = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        rules.check_xsd(doc)
        middle = time.perf_counter()
        rules.check_schematron(text, doc_type)
        sch.append(time.perf_counter() - middle)
        xsd.append(middle - start)
    return statistics.median(xsd), statistics.median(sch)


if __name__ == "__main__":
    sys.exit(main())
