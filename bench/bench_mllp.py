"""MLLP throughput: fse-bridge (parse + durable journal + ACK) against python-hl7 and hl7apy.

    python bench/bench_mllp.py [--connections 8] [--messages 2000] [--runs 3] [--workers 1]

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
Figures are messages per second (best of --runs); ratios are against fse-bridge.

Recorded on the development machine (2 CPUs shared by the client, the server
and other work; SQLite fsync 0.2 to 1 ms), 800-byte ORU^R01, 2000 messages
(bench/RESULTS.md, "MLLP throughput", has the runs and where the CPU goes):

    8 connections        fse-bridge  python-hl7  hl7apy
      persistent               2335        2039       -
      per-message              1808        1684      70
    32 connections
      persistent               2130        1894       -
      per-message              2029        1583      66

python-hl7's server is bound by one CPU (about 490 us per message, its parse
about 400). fse-bridge parses in its worker process, on the other CPU (about
430 us there), while its reactor journals the message and answers (about 360
us: listener, durable journal, the pipe to the worker).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
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
    from bridge.service.tap import install_asyncio_reactor
    reactor = install_asyncio_reactor()
    from twisted.internet import defer

    from bridge import config as config_module
    from bridge.model import AckCode
    from bridge.outcome import Outcome
    from bridge.service.tap import makeService

    def received(ctx, entry, analysis):
        # The message was parsed (in the service's worker process) before this is called.
        return defer.succeed(Outcome(code=AckCode.AA, text="received"))

    top = makeService(config_module.load(config_path), reactor, handler=received)

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
            f'[certificates]\ndevelopment = true\n[logging]\nlevel = "WARNING"\n[web]\nport = 0\n'
            f'[workers]\nprocesses = {self.workers}\n'
            f'[mapping]\ndir = "{state / "mappings"}"\ntemplates = "{state / "templates"}"\npractitioners = ""\n')
        port_file = state / "mllp.port"
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", "fse-bridge", "--port-file",
                                      str(port_file), "--config", str(config)], cwd=CHECKOUT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = _wait_for_port(port_file, self.proc, self.name)

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM if self.name == "fse-bridge" else signal.SIGKILL)
        self.proc.wait(60)


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
    parser.add_argument("--runs", type=int, default=3)
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
          f" best of {args.runs}; {os.cpu_count()} CPUs; fse-bridge journal under {workdir}")
    scenarios = {"persistent": ["fse-bridge", "python-hl7"], "per-message": ["fse-bridge", "python-hl7", "hl7apy"]}
    for scenario, servers in scenarios.items():
        results = {}
        for name in servers:
            with Server(name, workdir, args.workers) as server:
                # a short warm-up, then the measured runs
                asyncio.run(drive(server.port, args.connections, min(200, args.messages), scenario != "persistent",
                                  f"w{name}"))
                runs = []
                for run in range(args.runs):
                    before = cpu_seconds(server.proc.pid)
                    rate = asyncio.run(drive(server.port, args.connections, args.messages,
                                             scenario != "persistent", f"r{run}{name}"))
                    after = cpu_seconds(server.proc.pid)
                    cpu = None if None in (before, after) else \
                        tuple((a - b) / args.messages for a, b in zip(after, before))
                    runs.append((rate, cpu))
            results[name] = max(runs, key=lambda r: r[0])
        print(f"\n{scenario} connections:")
        bridge = results["fse-bridge"][0]
        for name, (rate, cpu) in results.items():
            extra = "  (parse + durable journal + ACK)" if name == "fse-bridge" else "  (parse + ACK)"
            ratio = "" if name == "fse-bridge" else f"  fse-bridge/{name} = {bridge / rate:.2f}"
            used = ""
            if cpu is not None:
                used = f"  server CPU {sum(cpu) * 1e6:4.0f} us/msg"
                used += f" ({cpu[0] * 1e6:.0f} + workers {cpu[1] * 1e6:.0f})" if cpu[1] else ""
            print(f"  {name:<11} {rate:9.0f} msg/s{used}{ratio}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
