"""MLLP throughput: fse-bridge (parse + durable journal + ACK) against python-hl7 and hl7apy.

    python bench/bench_mllp.py [--connections 8] [--messages 2000] [--runs 5] [--workers 1]

Each server runs in its own process; one asyncio client process drives it
with N concurrent connections, each sending its share of the messages and
waiting for every ACK before the next message (as an MLLP sender does).

- fse-bridge: the service of ``fse-bridge serve`` (``bridge.service.tap.makeService``)
  on a temporary SQLite journal (WAL, synchronous=FULL: every message is on
  disk before its ACK), each message parsed by python-hl7 in the service's
  worker process (``--workers``), with a handler that answers AA once it is
  parsed instead of the document pipeline (its stages have their own benchmarks).
- python-hl7: its asyncio MLLP server (``hl7.mllp.start_hl7_server``),
  ``hl7.parse`` + ``Message.create_ack``; nothing stored.
- hl7apy: its ``MLLPServer`` (a threading socketserver that closes the
  connection after each message), ``parse_message`` + an ACK built with
  hl7apy; nothing stored.

Two scenarios, because hl7apy answers one message per connection:
"persistent" (connections kept open: fse-bridge, python-hl7) and
"per-message" (a new connection for each message: all three).

As users run it: fse-bridge logs at its default level (INFO, to a file in its
state folder, as a service manager would keep it), like ``fse-bridge serve``.
The servers of a scenario run side by side and their runs are interleaved,
the first server rotating (A B, B A, A B ...), so a slower or busier moment
of the machine does not fall on one server only. Printed per server: the
median messages per second and the spread (lowest and highest run), and
beside it the median CPU per message of the server process and of its child
processes (fse-bridge's worker processes), with the ratios to fse-bridge's.
bench/RESULTS.md ("MLLP throughput") has the runs and where the CPU goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from proctime import cpu_seconds

CHECKOUT = Path(__file__).resolve().parents[1]

MESSAGE = (
    "MSH|^~\\&|LIS|OSPEDALE_TEST|FSE|REGIONE_TOSCANA|20240131101500||ORU^R01^ORU_R01|{id}|P|2.5|||||ITA|8859/1\r"
    "PID|1||RSSMRA80A01H501U^^^MEF^NNITA~123456^^^OSP^PI||ROSSI^MARIO||19800101|M|||VIA ROMA 1^^FIRENZE^^50100^ITA"
    "||055123456\r"
    "PV1|1|O|LAB^^^OSP||||12345^BIANCHI^LUCIA|||||||||||V{id}\r"
    "ORC|RE|ORD{id}|ACC{id}||CM\r"
    "OBR|1|ORD{id}|ACC{id}|24323-8^Pannello metabolico^LN|||20240131090000|||||||20240131091000||"
    "12345^BIANCHI^LUCIA||||||20240131100000|||F\r"
    "OBX|1|NM|2345-7^Glucosio^LN||95|mg/dL|70-99|N|||F|||20240131095000\r"
    "OBX|2|NM|2160-0^Creatinina^LN||0.9|mg/dL|0.6-1.2|N|||F|||20240131095000\r"
    "OBX|3|NM|2951-2^Sodio^LN||140|mmol/L|135-145|N|||F|||20240131095000\r"
    "OBX|4|NM|2823-3^Potassio^LN||4.2|mmol/L|3.5-5.1|N|||F|||20240131095000\r"
    "OBX|5|TX|48767-8^Commento^LN||Valori nella norma. Si consiglia controllo tra sei mesi.||||||F\r"
)


# -- servers under test (each run as `bench_mllp.py --serve NAME --port-file F`) ----------


def serve_bridge(port_file: Path, config_path: Path) -> None:
    """The fse-bridge service (MLLP listener, durable journal, ACK builder) with a handler that
    answers AA at once: the pipeline's stages have their own benchmarks."""
    from bridge.cli import _configure_logging
    from bridge.service.tap import install_asyncio_reactor
    reactor = install_asyncio_reactor()
    from twisted.internet import defer
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    from bridge import config as config_module
    from bridge.model import AckCode
    from bridge.outcome import Outcome
    from bridge.service.tap import makeService

    # The logging of `fse-bridge serve`: the configured level (INFO by default), Twisted's log too.
    config = config_module.load(config_path)
    _configure_logging(False)
    logging.getLogger().setLevel(config.logging.level)
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)

    def received(ctx, entry, analysis):
        # The message was parsed (in the service's worker process) before this is called.
        return defer.succeed(Outcome(code=AckCode.AA, text="received"))

    top = makeService(config, reactor, handler=received)

    def start():
        top.startService()
        port_file.write_text(str(top.mllp_port))

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()


def serve_python_hl7(port_file: Path) -> None:
    from hl7.mllp import start_hl7_server

    async def handle(reader, writer):
        try:
            while not writer.is_closing():
                message = await reader.readmessage()      # hl7.parse inside
                writer.writemessage(message.create_ack())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await start_hl7_server(handle, "127.0.0.1", 0, limit=4 * 1024 * 1024)
        port_file.write_text(str(server.sockets[0].getsockname()[1]))
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def serve_hl7apy(port_file: Path) -> None:
    from hl7apy.core import Message
    from hl7apy.mllp import AbstractHandler, MLLPServer
    from hl7apy.parser import parse_message

    class Handler(AbstractHandler):
        def reply(self):
            incoming = parse_message(self.incoming_message, find_groups=False)
            ack = Message("ACK", version=incoming.msh.msh_12.value)
            ack.msh.msh_3 = incoming.msh.msh_5.value
            ack.msh.msh_4 = incoming.msh.msh_6.value
            ack.msh.msh_5 = incoming.msh.msh_3.value
            ack.msh.msh_6 = incoming.msh.msh_4.value
            ack.msa.msa_1 = "AA"
            ack.msa.msa_2 = incoming.msh.msh_10.value
            return ack.to_mllp()

    server = MLLPServer("127.0.0.1", 0, {"ORU^R01^ORU_R01": (Handler,), "ORU^R01": (Handler,)})
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


# -- the client -------------------------------------------------------------------------


async def drive(port: int, connections: int, messages: int, per_message: bool, tag: str) -> float:
    """Send *messages* over *connections*; messages per second."""
    per_connection = [messages // connections + (i < messages % connections) for i in range(connections)]

    async def read_ack(reader):
        data = await reader.readuntil(b"\x1c\r")
        if b"MSA|AA|" not in data and b"MSA|CA|" not in data:
            raise RuntimeError(f"not an AA: {data[:200]!r}")

    async def worker(n: int, count: int):
        reader = writer = None
        for i in range(count):
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
            body = MESSAGE.format(id=f"{tag}{n}x{i}").encode("iso-8859-1")
            writer.write(b"\x0b" + body + b"\x1c\r")
            await writer.drain()
            await read_ack(reader)
            if per_message:
                writer.close()
                await writer.wait_closed()
                reader = writer = None
        if writer is not None:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(n, c) for n, c in enumerate(per_connection)))
    return messages / (time.perf_counter() - start)


# -- orchestration ------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, workdir: Path, workers: int):
        self.name = name
        self.workdir = workdir
        self.workers = workers
        self.proc = None
        self.port = 0

    def __enter__(self):
        if self.name == "fse-bridge":
            self._start_bridge()
        else:
            port_file = self.workdir / f"{self.name}.port"
            port_file.unlink(missing_ok=True)
            self.proc = subprocess.Popen([sys.executable, __file__, "--serve", self.name, "--port-file",
                                          str(port_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.port = _wait_for_port(port_file, self.proc, self.name)
        return self

    def _start_bridge(self):
        state = self.workdir / f"bridge-{time.monotonic_ns()}"
        for sub in ("mappings", "templates"):
            (state / sub).mkdir(parents=True)
        config = state / "bridge.toml"
        config.write_text(
            f'state_dir = "{state}"\n[mllp]\nport = 0\nmax_connections = 1024\n'
            f'[certificates]\ndevelopment = true\n[web]\nport = 0\n'
            f'[workers]\nprocesses = {self.workers}\n'
            f'[mapping]\ndir = "{state / "mappings"}"\ntemplates = "{state / "templates"}"\npractitioners = ""\n')
        port_file = state / "mllp.port"
        self._log = open(state / "server.log", "wb")
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", "fse-bridge", "--port-file",
                                      str(port_file), "--config", str(config)], cwd=CHECKOUT,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.port = _wait_for_port(port_file, self.proc, self.name)

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM if self.name == "fse-bridge" else signal.SIGKILL)
        self.proc.wait(60)
        if self.name == "fse-bridge":
            self._log.close()

    def measure(self, connections: int, messages: int, per_message: bool, tag: str) -> "Sample":
        """One run: messages per second, and the CPU per message of the server and its children."""
        before = cpu_seconds(self.proc.pid)
        rate = asyncio.run(drive(self.port, connections, messages, per_message, tag))
        after = cpu_seconds(self.proc.pid)
        if None in (before, after):
            return Sample(rate, None, None)
        return Sample(rate, (after[0] - before[0]) / messages, (after[1] - before[1]) / messages)


@dataclass(frozen=True)
class Sample:
    rate: float
    """Messages per second."""
    server_cpu: float | None
    """CPU seconds per message of the server process (all its threads), None without /proc."""
    children_cpu: float | None
    """CPU seconds per message of its child processes (fse-bridge's workers)."""

    @property
    def cpu(self) -> float | None:
        return None if self.server_cpu is None else self.server_cpu + self.children_cpu


def interleaved(servers: dict, runs: int, measure) -> dict[str, list[Sample]]:
    """*runs* samples of each server, their runs interleaved with the first server rotating."""
    names = list(servers)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for run in range(runs):
        for name in names[run % len(names):] + names[:run % len(names)]:
            samples[name].append(measure(servers[name], run))
    return samples


def report(samples: dict[str, list[Sample]]) -> None:
    """Median and spread of the throughput, and the median CPU per message beside it."""
    bridge = samples["fse-bridge"]
    bridge_rate = statistics.median(s.rate for s in bridge)
    bridge_cpu = _median_cpu(bridge)
    print(f"  {'server':<11} {'msg/s median':>12} {'[lowest-highest]':>17}   {'CPU us/msg':>10}"
          f" {'(server + children)':<22}")
    for name, runs in samples.items():
        rate = statistics.median(s.rate for s in runs)
        spread = f"[{min(s.rate for s in runs):.0f}-{max(s.rate for s in runs):.0f}]"
        cpu = _median_cpu(runs)
        used = "" if cpu is None else (f"{sum(cpu) * 1e6:10.0f} ({cpu[0] * 1e6:.0f} + {cpu[1] * 1e6:.0f})"
                                        if cpu[1] else f"{sum(cpu) * 1e6:10.0f} ({cpu[0] * 1e6:.0f})")
        what = "parse + durable journal + ACK, log INFO" if name == "fse-bridge" else "parse + ACK"
        ratio = ""
        if name != "fse-bridge":
            ratio = f"  fse-bridge/{name}: throughput {bridge_rate / rate:.2f}"
            if cpu is not None and bridge_cpu is not None:
                ratio += f", CPU per message {sum(bridge_cpu) / sum(cpu):.2f}"
        print(f"  {name:<11} {rate:12.0f} {spread:>17}   {used:<33} {what}{ratio}")


def _median_cpu(runs: list[Sample]) -> tuple[float, float] | None:
    """(server, children) CPU per message of the run with the median total."""
    measured = sorted((s for s in runs if s.cpu is not None), key=lambda s: s.cpu)
    if not measured:
        return None
    middle = measured[(len(measured) - 1) // 2]
    return middle.server_cpu, middle.children_cpu


def _wait_for_port(port_file: Path, proc: subprocess.Popen, name: str) -> int:
    """Bounded poll of the port file the server writes once it listens."""
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.05)
    return int(port_file.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5, help="measured runs per server, interleaved")
    parser.add_argument("--workers", type=int, default=1,
                        help="fse-bridge's worker processes (workers.processes; 0: parse in a thread)")
    parser.add_argument("--workdir", help="where fse-bridge keeps its journal (default: a temporary folder"
                                          " on the checkout's disk)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "fse-bridge":
        serve_bridge(Path(args.port_file), Path(args.config))
        return 0
    if args.serve:
        {"python-hl7": serve_python_hl7, "hl7apy": serve_hl7apy}[args.serve](Path(args.port_file))
        return 0

    base = Path(args.workdir) if args.workdir else CHECKOUT / "var"
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-mllp-", dir=base))
    print(f"{args.messages} messages of {len(MESSAGE.format(id='x'))} bytes, {args.connections} connections,"
          f" {args.runs} runs per server, interleaved; {os.cpu_count()} CPUs; fse-bridge journal and log"
          f" under {workdir}")
    scenarios = {"persistent": ["fse-bridge", "python-hl7"], "per-message": ["fse-bridge", "python-hl7", "hl7apy"]}
    for scenario, names in scenarios.items():
        per_message = scenario != "persistent"
        with contextlib.ExitStack() as stack:
            servers = {name: stack.enter_context(Server(name, workdir, args.workers)) for name in names}
            for name, server in servers.items():   # a short warm-up, not measured
                server.measure(args.connections, min(200, args.messages), per_message, f"w{name}")
            samples = interleaved(servers, args.runs, lambda server, run: server.measure(
                args.connections, args.messages, per_message, f"r{run}{server.name}"))
        print(f"\n{scenario} connections ({args.runs} runs each, interleaved):")
        report(samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
