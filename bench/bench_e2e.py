"""End to end: MLLP in, FSE publication, ACK out, with a prompt and a slow gateway.

    python bench/bench_e2e.py [--senders 16] [--window 1] [--messages 320] [--delay 0.5] [--repeat 3]
                              [--gateway embedded|external|both] [--cpu-docs 100]
                              [--no-rules] [--workers 1] [--workdir DIR] [--skip-e2e] [--skip-cpu]

issue 6, "Benchmark". Two parts:

1. Throughput. ``fse-bridge serve`` runs as a subprocess (temporary state
   folder, the reference rules installed from ../shared/reference unless
   --no-rules, ack mode "outcome"), with the gateway simulator embedded (the
   default profile) and, as a remote gateway would be, in its own process
   (``fse-bridge simulator``). N senders each keep one MLLP connection and send
   their share of the messages one at a time, waiting for each ACK (as a sender
   does). Messages are the examples/ ORU^R01 of the five types with fresh
   control ids and accessions, so each one is a new publication. The service
   logs at its default level (INFO, to server.log). Each setup runs with the
   simulator answering at once and with it holding every answer *--delay*
   seconds (``POST /_sim/faults``), on a fresh server each time, *--repeat*
   times, the runs of all setups interleaved (A B C D, B C D A, ...). Prints
   each run: messages/s over the whole run and "steady" (between the 10th and
   90th percent of the ACKs: without the start, where every sender's first
   answer waits for the gateway, and the drain), ACK latency, the CPU per
   message of the service, of its worker processes and of an external
   simulator; then per setup the median and the spread (lowest, highest) of
   the throughput beside the median CPU per message, the ratio of the two
   throughputs (goal: at least 0.9), and from the journal's timestamps where
   a message's time goes.

2. CPU per document, in this process, one stage after the other as the
   pipeline calls them: parse, route, map, render, validate (the installed
   reference rules), package = pdf (PDF/A-3 with the CDA embedded) + sign
   (PAdES). Process CPU time and wall time, median and p95 per stage and in
   total (goal: 25 ms median in total).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from proctime import cpu_seconds

CHECKOUT = Path(__file__).resolve().parents[1]
REFERENCE = CHECKOUT / ".." / "shared" / "reference"
EXAMPLES = ("lab", "rad", "rsa", "rap", "ldo")
START_TIMEOUT_S = 60.0
STAGES = ("parse", "route", "map", "render", "validate", "pdf", "sign", "package", "total")


# -- messages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One example message and the values replaced to make it a new message."""

    name: str
    raw: bytes
    control_id: bytes
    accession: bytes


def load_templates() -> list[Template]:
    from bridge.hl7.message import parse_message

    templates = []
    for name in EXAMPLES:
        raw = (CHECKOUT / "examples" / f"{name}.hl7").read_bytes()
        parsed = parse_message(raw, "iso-8859-1")
        accession = parsed.get("OBR", 3) or parsed.get("ORC", 3)
        templates.append(Template(name, raw, parsed.control_id.encode(), accession.encode()))
    return templates


def fresh(template: Template, tag: str) -> bytes:
    """*template* with control id and accession made unique by *tag* (ASCII, same in any charset)."""
    raw = template.raw.replace(b"|" + template.control_id + b"|", f"|{tag}|".encode(), 1)
    return re.sub(rb"(?<=[|^])" + re.escape(template.accession) + rb"(?=[|^\r\n])",
                  template.accession + b"-" + tag.encode(), raw)


# -- the processes ------------------------------------------------------------------------


def write_config(workdir: Path, rules_dir: Path | None, name: str, *, gateway_url: str = "embedded",
                 workers: int = 1) -> Path:
    """A configuration file: state in *workdir*, development certificates there, the checkout's
    mappings; *gateway_url*: an external gateway instead of the embedded one. The external
    simulator (``name="simulator"``) gets the development server certificate."""
    rules = rules_dir or workdir / "no-rules"
    mappings = CHECKOUT / "mappings"
    certs = workdir / "certs"
    path = workdir / f"{name}.toml"
    text = (f'state_dir = "{workdir}"\n'
            f'[mllp]\nhost = "127.0.0.1"\nport = 0\nmax_connections = 256\n'
            f'[ack]\nmode = "outcome"\n'
            f'[certificates]\ndevelopment = true\n'
            f'[mapping]\ndir = "{mappings}"\ntemplates = "{CHECKOUT / "templates"}"\n'
            f'practitioners = "{mappings / "practitioners.csv"}"\n'
            f'[validation]\nrules_dir = "{rules}"\n'
            f'[web]\nport = 0\n'
            f'[workers]\nprocesses = {workers}\n')
    if gateway_url != "embedded":
        text += f'[gateway]\nbase_url = "{gateway_url}"\n'
    if name == "simulator":
        text += (f'[simulator]\nhost = "127.0.0.1"\nport = 0\ntls_cert = "{certs / "server.pem"}"\n'
                 f'tls_key = "{certs / "server.key"}"\ntls_client_ca = "{certs / "ca.pem"}"\n')
    path.write_text(text)
    return path


class Process:
    """A ``python -m bridge COMMAND --config FILE`` subprocess, its log in the state folder."""

    def __init__(self, workdir: Path, name: str, argv: list[str]):
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.argv = argv
        self.proc: subprocess.Popen | None = None

    def start(self, ready) -> None:
        """Start, then wait until ``ready()`` returns true (it is polled)."""
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", *self.argv], cwd=CHECKOUT,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise SystemExit(f"{self.argv[0]} did not start:\n{self.log_path.read_text(errors='replace')}")
            time.sleep(0.1)   # polling a child process's start, not synchronising a test

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def cpu_seconds(self) -> tuple[float, float]:
        """User + system CPU time so far of the process and of its worker processes (Linux /proc)."""
        return cpu_seconds(self.proc.pid)


class Setup:
    """``fse-bridge serve`` on a fresh state folder; with *external*, the gateway simulator runs
    as its own process (``fse-bridge simulator``) as a remote gateway would, else embedded."""

    def __init__(self, workdir: Path, rules_dir: Path | None, *, external: bool, workers: int = 1):
        self.workdir = workdir
        self.workers = workers
        self.rules_dir = rules_dir
        self.external = external
        self.simulator: Process | None = None
        self.server: Process | None = None
        self.port = 0
        self.gateway_url = ""

    def __enter__(self) -> "Setup":
        from bridge import certs, config as config_module

        config = write_config(self.workdir, self.rules_dir, "bridge", workers=self.workers)
        # Both processes use the same development PKI, made here first.
        certs.ensure_development_certificates(config_module.load(config))
        if self.external:
            sim_config = write_config(self.workdir, self.rules_dir, "simulator")
            self.simulator = Process(self.workdir, "simulator", ["simulator", "--config", str(sim_config)])
            self.simulator.start(lambda: "listening on" in self.simulator.log_path.read_text(errors="replace"))
            log = self.simulator.log_path.read_text(errors="replace")
            self.gateway_url = re.search(r"listening on (\S+)", log).group(1)
            config = write_config(self.workdir, self.rules_dir, "bridge", gateway_url=self.gateway_url,
                                  workers=self.workers)
        port_file = self.workdir / "mllp.port"
        self.server = Process(self.workdir, "server", ["serve", "--config", str(config),
                                                        "--port-file", str(port_file)])
        try:
            self.server.start(port_file.exists)
        except BaseException:
            if self.simulator:
                self.simulator.stop()
            raise
        self.port = int(port_file.read_text())
        if not self.external:
            self.gateway_url = (self.workdir / "gateway.url").read_text().strip()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()
        if self.simulator:
            self.simulator.stop()

    def cpu_seconds(self) -> tuple[float, float, float]:
        """(service, its worker processes, external simulator) CPU seconds so far."""
        return (*self.server.cpu_seconds(), sum(self.simulator.cpu_seconds()) if self.simulator else 0.0)

    def simulator_hook(self, method: str, hook: str, payload=None):
        """Call the simulator's /_sim/ hook over its mutual TLS (the development client certificate)."""
        import httpx

        certs = self.workdir / "certs"
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        context.load_cert_chain(str(certs / "auth.pem"), str(certs / "auth.key"))
        base = self.gateway_url.split("/gateway/")[0]
        with httpx.Client(verify=context, timeout=30) as client:
            response = client.request(method, f"{base}/_sim/{hook}", json=payload)
            response.raise_for_status()
            return response.json()


# -- the senders --------------------------------------------------------------------------


@dataclass
class RunResult:
    label: str
    messages: int
    seconds: float
    latencies: list[float]
    completions: list[float]
    """When each ACK arrived, seconds from the start of the run, sorted."""
    service_cpu_s: float
    workers_cpu_s: float
    simulator_cpu_s: float
    not_aa: dict[str, int]
    unloaded_s: float
    """Median latency of a message sent alone (the gateway answering at once)."""
    stages: dict[str, float]
    """Median seconds between consecutive journaled states (see STATES)."""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def steady_rate(self) -> float:
        """ACKs per second between the 10th and the 90th percent of them: the run without its
        start (every sender's first answer waits for the gateway) and its drain."""
        first, last = int(0.1 * len(self.completions)), int(0.9 * len(self.completions))
        return (last - first) / (self.completions[last] - self.completions[first])


async def send_all(port: int, batches: list[list[bytes]], window: int = 1
                   ) -> tuple[list[float], list[float], dict[str, int]]:
    """Each batch on its own connection, at most *window* messages awaiting their ACK (1: the next
    message after the ACK); ACK latencies, ACK times (from the start) and non-AA codes."""
    from bridge.mllp.protocol import MllpDecoder, frame

    begin = time.perf_counter()
    latencies: list[float] = []
    completions: list[float] = []
    not_aa: dict[str, int] = {}

    async def sender(batch: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        decoder = MllpDecoder(16 * 1024 * 1024)
        sent: collections.deque[float] = collections.deque()
        answers: collections.deque[bytes] = collections.deque()
        pending = list(reversed(batch))
        try:
            while pending or sent:
                while pending and len(sent) < window:
                    sent.append(time.perf_counter())
                    writer.write(frame(pending.pop()))
                await writer.drain()
                while not answers:
                    data = await reader.read(65536)
                    if not data:
                        raise RuntimeError("the server closed the connection")
                    answers.extend(decoder.feed(data))
                now = time.perf_counter()
                latencies.append(now - sent.popleft())
                completions.append(now - begin)
                code = _msa1(answers.popleft())
                if code != "AA":
                    not_aa[code] = not_aa.get(code, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(sender(batch) for batch in batches))
    return latencies, sorted(completions), not_aa


def _msa1(ack: bytes) -> str:
    for segment in ack.split(b"\r"):
        if segment.startswith(b"MSA"):
            return segment.split(b"|")[1].decode("ascii", "replace")
    return "?"


def run_e2e(label: str, workdir: Path, rules_dir: Path | None, templates: list[Template], *,
            senders: int, messages: int, delay_s: float, external: bool, window: int = 1,
            workers: int = 1) -> RunResult:
    with Setup(workdir, rules_dir, external=external, workers=workers) as setup:
        tag = f"{'X' if external else 'E'}{int(delay_s * 1000)}"
        # Warm-up, untimed: each type once (first-use costs: fonts, code tables, TLS session), then
        # each type once more alone on the server: the latency of a message nothing competes with.
        for round_ in range(2):
            warm = [[fresh(t, f"W{tag}x{round_}x{i}") for i, t in enumerate(templates)]]
            unloaded, _, not_aa = asyncio.run(send_all(setup.port, warm))
            if not_aa:
                raise SystemExit(f"warm-up not AA ({not_aa}): see {setup.server.log_path}")
        if delay_s > 0:
            setup.simulator_hook("POST", "faults", [{"delay_s": delay_s, "times": 10 ** 9}])
        batches = [[fresh(templates[i % len(templates)], f"{tag}x{i:05d}") for i in range(s, messages, senders)]
                   for s in range(senders)]
        cpu_before = setup.cpu_seconds()
        started = time.perf_counter()
        latencies, completions, not_aa = asyncio.run(send_all(setup.port, batches, window))
        seconds = time.perf_counter() - started
        cpu_after = setup.cpu_seconds()
    stages = stage_latencies(workdir / "journal.sqlite", f"{tag}x")
    used = [after - before for after, before in zip(cpu_after, cpu_before)]
    return RunResult(label, messages, seconds, latencies, completions, *used, not_aa, statistics.median(unloaded),
                     stages)


#: Where a message's time goes: the states the pipeline journals, in order ("answered": the
#: gateway call's answer recorded; "validated" is absent when local validation is OFF).
STATES = ("received", "routed", "rendered", "validated", "packaged", "submitting", "answered")


def interval_labels(results) -> list[str]:
    """The intervals some run measured, in pipeline order."""
    seen = {label for r in results for label in r.stages}
    order = [f"{a}>{b}" for i, a in enumerate(STATES) for b in STATES[i + 1:]]
    return [label for label in order if label in seen]


def stage_latencies(journal: Path, prefix: str) -> dict[str, float]:
    """Median seconds between the recorded states of the timed messages (control id *prefix*...)."""
    import datetime
    import sqlite3

    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    when: dict[int, dict[str, float]] = {}
    for message_id, state, at in db.execute(
            "SELECT t.message_id, t.state, t.at FROM transitions t JOIN messages m ON m.id = t.message_id"
            " WHERE m.msh10 LIKE ? UNION ALL SELECT g.message_id, 'answered', g.at FROM gateway_calls g"
            " JOIN messages m ON m.id = g.message_id WHERE m.msh10 LIKE ?", (prefix + "%", prefix + "%")):
        when.setdefault(message_id, {})[state] = datetime.datetime.fromisoformat(at).timestamp()
    db.close()
    spans: dict[str, list[float]] = {}
    for times in when.values():
        present = [state for state in STATES if state in times]
        for start, end in zip(present, present[1:]):
            spans.setdefault(f"{start}>{end}", []).append(times[end] - times[start])
    return {label: statistics.median(values) for label, values in spans.items()}


RUN_HEADER = (f"{'run':<28}{'msgs':>6}{'s':>7}{'msgs/s':>8}{'steady':>8}{'p50 ms':>8}{'p95 ms':>8}{'min ms':>8}"
              f"{'CPU ms/msg: service':>21}{'workers':>9}{'sim':>14}  ACKs")


def print_run(result: RunResult) -> None:
    lat = sorted(result.latencies)
    per = 1e3 / result.messages
    sim = f"{result.simulator_cpu_s * per:>14.1f}" if result.simulator_cpu_s else f"{'(in service)':>14}"
    print(f"{result.label:<28}{result.messages:>6}{result.seconds:>7.1f}{result.rate:>8.1f}{result.steady_rate:>8.1f}"
          f"{statistics.median(lat) * 1e3:>8.0f}{percentile(lat, 0.95) * 1e3:>8.0f}{lat[0] * 1e3:>8.0f}"
          f"{result.service_cpu_s * per:>21.1f}{result.workers_cpu_s * per:>9.1f}{sim}"
          f"  {', '.join(f'{k} {v}' for k, v in result.not_aa.items()) or 'all AA'}")


def print_summary(label: str, runs: list[RunResult]) -> None:
    """Median and spread of a setup's throughput, the median CPU per message beside it."""
    rates = [r.rate for r in runs]
    per = [1e3 / r.messages for r in runs]
    service = statistics.median(r.service_cpu_s * p for r, p in zip(runs, per))
    workers = statistics.median(r.workers_cpu_s * p for r, p in zip(runs, per))
    sim = statistics.median(r.simulator_cpu_s * p for r, p in zip(runs, per))
    print(f"{label:<28}{statistics.median(rates):>8.1f} msgs/s [{min(rates):.1f}-{max(rates):.1f}], steady "
          f"{statistics.median(r.steady_rate for r in runs):.1f}; CPU ms/msg {service + workers:.1f} "
          f"(service {service:.1f} + workers {workers:.1f})" + (f", simulator {sim:.1f}" if sim else ""))


# -- CPU per document, in process ---------------------------------------------------------


def cpu_per_document(templates: list[Template], rules_dir: Path | None, workdir: Path,
                     docs: int) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    """(document type, {stage: (CPU s, wall s)}) for *docs* documents (the examples, cycled)."""
    from bridge import certs, config as config_module
    from bridge.cda import validate
    from bridge.publish.plan import decide
    from bridge.hl7.message import parse_message
    from bridge.mapping.mapper import map_report
    from bridge.mapping.tables import load_mappings
    from bridge.model import Action
    from bridge.pdf.package import build_unsigned_pdf
    from bridge.cda.render import make_environment, render_cda
    from bridge.mapping.route import load_routing, route
    from bridge.pdf.sign import PdfSigner

    mappings_dir = CHECKOUT / "mappings"
    config = config_module.from_dict({
        "state_dir": str(workdir), "certificates": {"development": True},
        "mapping": {"dir": str(mappings_dir), "templates": str(CHECKOUT / "templates"),
                    "practitioners": str(mappings_dir / "practitioners.csv")},
        "validation": {"rules_dir": str(rules_dir or workdir / "no-rules")}}, base_dir=workdir)
    routing = load_routing(config.mapping.dir)
    mappings = load_mappings(config.mapping.dir, config.mapping.practitioners)
    env = make_environment(config.mapping.templates)
    rules = validate.load_rules(config.validation.rules_dir)
    if rules is not None:
        rules.warm()
    _, sign = certs.load_credentials(config)
    signer = PdfSigner.from_credential(sign)
    structure = config.structure

    def one(raw: bytes) -> tuple[str, dict[str, tuple[float, float]]]:
        """The document type and (process CPU, wall) seconds per stage: process CPU counts the
        helper threads some libraries use (the schematron engine's runtime), thread CPU would not."""
        times: dict[str, tuple[float, float]] = {}
        marks = [(time.process_time(), time.perf_counter())]

        def lap(stage: str) -> None:
            now = (time.process_time(), time.perf_counter())
            times[stage] = (now[0] - marks[-1][0], now[1] - marks[-1][1])
            marks.append(now)

        parsed = parse_message(raw, config.mllp.default_charset)
        lap("parse")
        routed = route(parsed, routing)
        lap("route")
        assert routed.action is Action.PUBLISH, routed.reason
        plan = decide(routed.action, [], structure_cf=structure.fiscal_code, doc_type=routed.doc_type.name,
                      repository=structure.repository, accession=routed.accession)
        report = map_report(parsed, routed, mappings, structure)
        lap("map")
        cda = render_cda(report, env, plan.ids)
        lap("render")
        if rules is not None:
            outcome = validate.validate_cda(cda, rules, routed.doc_type)
            if not outcome.ok:
                raise SystemExit(f"{routed.doc_type.name} does not validate: {outcome.summary()}")
        lap("validate")
        # package_pdf split in its two halves: PDF/A-3 with the CDA embedded, PAdES signature.
        unsigned = build_unsigned_pdf(cda, signer_name=signer.display_name)
        lap("pdf")
        signer.sign(unsigned)
        lap("sign")
        times["package"] = tuple(a + b for a, b in zip(times["pdf"], times["sign"]))
        times["total"] = (marks[-1][0] - marks[0][0], marks[-1][1] - marks[0][1])
        return routed.doc_type.name, times

    for i, template in enumerate(templates):   # warm-up, not counted
        one(fresh(template, f"CW{i}"))
    return [one(fresh(templates[i % len(templates)], f"C{i:05d}")) for i in range(docs)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- main ---------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=16, help="MLLP connections sending at once (default 16)")
    parser.add_argument("--window", type=int, default=1,
                        help="messages a sender sends before waiting for the first ACK (default 1: "
                             "the next message after the ACK; more: a pipelining sender)")
    parser.add_argument("--messages", type=int, default=320, help="messages per run (default 320)")
    parser.add_argument("--delay", type=float, default=0.5, help="gateway delay of the second run, seconds")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each setup (gateway x delay), interleaved, on a fresh server each (default 3)")
    parser.add_argument("--cpu-docs", type=int, default=100, help="documents for the in-process CPU figures")
    parser.add_argument("--no-rules", action="store_true", help="local validation OFF (no rules installed)")
    parser.add_argument("--workers", type=int, default=1,
                        help="the service's worker processes (workers.processes; 0: stages in threads)")
    parser.add_argument("--gateway", choices=("embedded", "external", "both"), default="both",
                        help="the simulator in the bridge's process (the embedded default), in its own "
                             "process (as a remote gateway), or both (default)")
    parser.add_argument("--workdir", type=Path,
                        help="keep the state folders (journals, logs) under this folder instead of deleting them")
    parser.add_argument("--skip-e2e", action="store_true", help="only the in-process CPU figures")
    parser.add_argument("--skip-cpu", action="store_true", help="only the throughput runs")
    args = parser.parse_args(argv)

    from bridge.cda.rules import install_rules

    templates = load_templates()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(str(tempfile.mkdtemp(prefix="fse-bridge-bench-", dir=args.workdir)))
          if args.workdir else tempfile.TemporaryDirectory(prefix="fse-bridge-bench-")) as tmp:
        tmp = Path(tmp)
        rules_dir = None
        if not args.no_rules:
            rules_dir = tmp / "rules"
            install_rules(str(REFERENCE.resolve()), rules_dir)
        print(f"fse-bridge end to end, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
              f"validation {'ON (reference rules)' if rules_dir else 'OFF'}; examples {', '.join(EXAMPLES)}")

        if not args.skip_e2e:
            pace = ("next message after the ACK" if args.window == 1
                    else f"up to {args.window} messages awaiting their ACK")
            print(f"\nthroughput: {args.senders} senders (one connection each, {pace}), "
                  f"ack mode outcome, {args.messages} messages per run")
            print(RUN_HEADER)
            gateways = {"embedded": [False], "external": [True], "both": [False, True]}[args.gateway]
            setups = [(external, delay) for external in gateways for delay in (0.0, args.delay)]
            runs: dict[tuple[bool, float], list[RunResult]] = {setup: [] for setup in setups}
            all_runs = []
            for repeat in range(args.repeat):
                for external, delay in setups[repeat % len(setups):] + setups[:repeat % len(setups)]:
                    where = "external simulator" if external else "embedded simulator"
                    workdir = tmp / f"run-{len(all_runs)}"
                    workdir.mkdir()
                    result = run_e2e(f"{where}, {delay * 1e3:.0f} ms", workdir, rules_dir, templates,
                                     senders=args.senders, messages=args.messages, delay_s=delay,
                                     window=args.window, external=external, workers=args.workers)
                    print_run(result)
                    runs[(external, delay)].append(result)
                    all_runs.append(result)
            print(f"\nper setup, {args.repeat} runs each: median [lowest-highest]")
            for external in gateways:
                prompt, slow = runs[(external, 0.0)], runs[(external, args.delay)]
                where = "external simulator" if external else "embedded simulator"
                for delay, results in ((0.0, prompt), (args.delay, slow)):
                    print_summary(f"{where}, {delay * 1e3:.0f} ms", results)
                ratio = statistics.median(r.rate for r in slow) / statistics.median(r.rate for r in prompt)
                steady = (statistics.median(r.steady_rate for r in slow)
                          / statistics.median(r.steady_rate for r in prompt))
                unloaded = statistics.median(r.unloaded_s for r in prompt)
                # Each sender has *window* messages in flight: at most that many per (delay + latency).
                ceiling = args.senders * args.window / (args.delay + unloaded)
                print(f"{'':<28}ratio {args.delay * 1e3:.0f} ms / 0 ms: {ratio:.2f}, steady {steady:.2f} "
                      f"(goal >= 0.9); one message alone: {unloaded * 1e3:.0f} ms; senders' "
                      f"ceiling at {args.delay * 1e3:.0f} ms: {args.senders * args.window} / ({args.delay:.2f} s + "
                      f"{unloaded:.3f} s) = {ceiling:.1f} msgs/s")
            if any(r.not_aa for r in all_runs):
                print("some ACKs were not AA: see server.log in the state folders (--workdir keeps them)")
            print("\nwhere a message's time goes (median ms between the states the journal recorded)")
            labels = interval_labels(all_runs)
            print(f"{'run':<28}" + "".join(f"{label:>21}" for label in labels))
            for result in all_runs:
                print(f"{result.label:<28}" + "".join(
                    f"{result.stages[label] * 1e3:>21.1f}" if label in result.stages else f"{'-':>21}"
                    for label in labels))

        if not args.skip_cpu:
            workdir = tmp / "cpu"
            workdir.mkdir()
            samples = cpu_per_document(templates, rules_dir, workdir, args.cpu_docs)
            print(f"\nCPU per document, in process, one thread ({args.cpu_docs} documents, examples cycled; "
                  f"process CPU time and wall time)")
            print(f"{'stage':<10}{'CPU p50 ms':>12}{'CPU p95 ms':>12}{'wall p50 ms':>13}{'wall p95 ms':>13}")
            for stage in STAGES:
                cpu = [t[stage][0] for _, t in samples]
                wall = [t[stage][1] for _, t in samples]
                print(f"{stage:<10}{statistics.median(cpu) * 1e3:>12.2f}{percentile(cpu, 0.95) * 1e3:>12.2f}"
                      f"{statistics.median(wall) * 1e3:>13.2f}{percentile(wall, 0.95) * 1e3:>13.2f}")
            print("total CPU median by type: " + ", ".join(
                f"{kind} {statistics.median(t['total'][0] for k, t in samples if k == kind) * 1e3:.1f} ms"
                for kind in dict.fromkeys(k for k, _ in samples)))
            median_total = statistics.median(t["total"][0] for _, t in samples)
            print(f"goal: total CPU median <= 25 ms: {'met' if median_total <= 0.025 else 'not met'} "
                  f"({median_total * 1e3:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
