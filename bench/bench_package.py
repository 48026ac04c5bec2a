"""Time per document of the four packaging steps: render, PDF/A, embed, sign.

    python bench/bench_package.py [--docs 200] [--warmup 3] [--sample LAB|all]

Documents are the official samples (../shared/reference/cda/samples), cycled.
Steps as the service runs them (bridge.package): render = parse the CDA and
draw the report (reportlab); pdfa = open it with pikepdf and prepare PDF/A-3b;
embed = attach cda.xml and write the PDF/A file; sign = PAdES B-B (pyHanko,
RSA-2048 development key parsed once). Prints median and p95 in ms and the
peak RSS of the process (pdf.md section 7 measured 41.1 ms median in total).
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

from bridge import certs, package
from bridge.sign import PdfSigner

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "cda" / "samples"
STEPS = ("render", "pdfa", "embed", "sign", "total")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(cda: bytes, signer: PdfSigner) -> dict[str, float]:
    t0 = time.perf_counter()
    report = package.render(cda, signer_name=signer.display_name)
    t1 = time.perf_counter()
    with pikepdf.open(io.BytesIO(report)) as pdf:
        package.make_pdfa(pdf)
        t2 = time.perf_counter()
        package.embed_cda(pdf, cda)
        unsigned = package.save_pdfa(pdf)
    t3 = time.perf_counter()
    signer.sign(unsigned)
    t4 = time.perf_counter()
    return {"render": t1 - t0, "pdfa": t2 - t1, "embed": t3 - t2, "sign": t4 - t3, "total": t4 - t0}


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sample", default="all", help="LAB, RAD, RSA, RAP, LDO or all")
    args = parser.parse_args(argv)

    names = ["LAB", "RAD", "RSA", "RAP", "LDO"] if args.sample == "all" else [args.sample]
    documents = [(SAMPLES / f"{n}.xml").read_bytes() for n in names]
    with tempfile.TemporaryDirectory() as tmp:
        pki = certs.generate_development_pki(Path(tmp), fiscal_code="01386030488", vendor="BENCH")
        signer = PdfSigner.from_credential(certs.load_credential(pki.sign_cert, pki.sign_key))
    after_imports = rss_mib()
    for i in range(args.warmup):
        one(documents[i % len(documents)], signer)
    times: dict[str, list[float]] = {s: [] for s in STEPS}
    for i in range(args.docs):
        for step, seconds in one(documents[i % len(documents)], signer).items():
            times[step].append(seconds * 1000)
    print(f"{args.docs} documents ({', '.join(names)}), after {args.warmup} warm-ups")
    print(f"{'step':<8}{'median ms':>11}{'p95 ms':>9}")
    for step in STEPS:
        print(f"{step:<8}{statistics.median(times[step]):>11.1f}{p95(times[step]):>9.1f}")
    print(f"peak RSS {rss_mib():.0f} MiB (after imports and key generation {after_imports:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
