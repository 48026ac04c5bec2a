"""`fse-bridge serve`: run the service until SIGTERM or SIGINT (interface.md, "Install and run")."""

from __future__ import annotations

import logging
import os
import signal

from twisted.logger import STDLibLogObserver, globalLogBeginner

from bridge.commands._common import describe_failure, load_config
from bridge.errors import ExitCode
from bridge.service.tap import check_identities, install_asyncio_reactor, makeService

log = logging.getLogger("bridge.serve")


def add_arguments(parser) -> None:
    parser.add_argument("--port-file", metavar="FILE",
                        help="write the MLLP port here once listening (useful with mllp.port = 0)")


def run(args) -> int:
    config = load_config(args)
    if not getattr(args, "debug", False):
        logging.getLogger().setLevel(config.logging.level)
    check_identities(config)
    reactor = install_asyncio_reactor()
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)

    top = makeService(config, reactor)
    failed = []

    def start():
        try:
            top.startService()
            if args.port_file:
                _write_atomically(args.port_file, f"{top.mllp_port}\n")
        except Exception as exc:  # a port in use, an unreadable certificate, a damaged journal: say so and stop
            code, line = describe_failure(exc, args)
            log.debug("cannot start", exc_info=True)
            log.error("cannot start: %s", line)
            failed.append(code)
            reactor.stop()

    reactor.callWhenRunning(_stop_on_signals, reactor)
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: top.stopService() if top.running else None)
    reactor.run()
    log.info("stopped")
    return failed[0] if failed else ExitCode.DONE


def _stop_on_signals(reactor) -> None:
    """SIGTERM/SIGINT stop the service once; another one while it stops is only logged.

    Twisted's own handlers call reactor.stop() for every signal, and the second (a service
    manager and a terminal, a Ctrl-C pressed twice) ends in a ReactorNotRunning traceback.
    """
    stopping = []

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if stopping:
            log.info("%s: already stopping (work in flight is finishing)", name)
            return
        stopping.append(signum)
        log.info("%s: stopping", name)
        reactor.callFromThread(reactor.stop)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def _write_atomically(path: str, text: str) -> None:
    # Readers poll for the file: it must never be seen half written.
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
