"""Time per document of the four packaging steps: render, PDF/A, embed, sign.

    python bench/bench_package.py [--docs 200] [--warmup 3] [--sample LAB|all] [--cda FILE.xml ...]

Documents are the official samples (../shared/reference/cda/samples), cycled,
or the CDAs given with --cda (e.g. long reports rendered from the corpus).
Steps as the service runs them (bridge.pdf.package): render = parse the CDA and
draw the report (reportlab); pdfa = open it with pikepdf and prepare PDF/A-3b;
embed = attach cda.xml and write the PDF/A file; sign = PAdES B-B (pyHanko;
RSA-2048 development key parsed once, the CMS from the signer's template built
by the warm-ups). Prints median and p95 in ms, wall clock and CPU time of the
thread (steadier on a shared machine), and the peak RSS of the process (pdf.md section 7 measured 41.1 ms median in total).
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import tempfile
import time
from pathlib import Path

import pikepdf

from bridge import certs
from bridge.pdf import package
from bridge.pdf.sign import PdfSigner

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "cda" / "samples"
STEPS = ("render", "pdfa", "embed", "sign", "total")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def now() -> tuple[float, float]:
    """Wall and CPU time (the CPU time of this thread: the signer may use a helper thread
    only when a loop is running, which is not the case here)."""
    return time.perf_counter(), time.thread_time()


def one(cda: bytes, signer: PdfSigner) -> dict[str, tuple[float, float]]:
    t0 = now()
    report = package.render(cda, signer_name=signer.display_name)
    t1 = now()
    with pikepdf.open(io.BytesIO(report)) as pdf:
        package.make_pdfa(pdf)
        t2 = now()
        package.embed_cda(pdf, cda)
        unsigned = package.save_pdfa(pdf)
    t3 = now()
    signer.sign(unsigned)
    t4 = now()

    def span(a, b):
        return b[0] - a[0], b[1] - a[1]

    return {"render": span(t0, t1), "pdfa": span(t1, t2), "embed": span(t2, t3),
            "sign": span(t3, t4), "total": span(t0, t4)}


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sample", default="all", help="LAB, RAD, RSA, RAP, LDO or all")
    parser.add_argument("--cda", nargs="+", type=Path, metavar="FILE.xml",
                        help="these CDA documents instead of the samples")
    args = parser.parse_args(argv)

    if args.cda:
        names = [p.name for p in args.cda]
        documents = [p.read_bytes() for p in args.cda]
    else:
        names = ["LAB", "RAD", "RSA", "RAP", "LDO"] if args.sample == "all" else [args.sample]
        documents = [(SAMPLES / f"{n}.xml").read_bytes() for n in names]
    with tempfile.TemporaryDirectory() as tmp:
        pki = certs.generate_development_pki(Path(tmp), fiscal_code="01386030488", vendor="BENCH")
        signer = PdfSigner.from_credential(certs.load_credential(pki.sign_cert, pki.sign_key))
    after_imports = rss_mib()
    for i in range(args.warmup):
        one(documents[i % len(documents)], signer)
    times: dict[str, list[float]] = {s: [] for s in STEPS}
    cpu: dict[str, list[float]] = {s: [] for s in STEPS}
    for i in range(args.docs):
        for step, (wall, used) in one(documents[i % len(documents)], signer).items():
            times[step].append(wall * 1000)
            cpu[step].append(used * 1000)
    print(f"{args.docs} documents ({', '.join(names)}), after {args.warmup} warm-ups")
    print(f"{'step':<8}{'median ms':>11}{'p95 ms':>9}{'CPU median ms':>15}{'CPU p95 ms':>12}")
    for step in STEPS:
        print(f"{step:<8}{statistics.median(times[step]):>11.1f}{p95(times[step]):>9.1f}"
              f"{statistics.median(cpu[step]):>15.1f}{p95(cpu[step]):>12.1f}")
    print(f"peak RSS {rss_mib():.0f} MiB (after imports and key generation {after_imports:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
