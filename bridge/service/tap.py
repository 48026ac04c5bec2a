"""The service as a Twisted application: ``twist fse-bridge`` options, :func:`makeService`
(the wiring of the parts) and the asyncio reactor's installation.

The parts: :mod:`bridge.service.receiver` (frames to answers), :mod:`bridge.service.parts`
(thread pool, journal, MLLP listener, the top service), :mod:`bridge.service.workers`
(worker processes), :mod:`bridge.publish.context` (stages and gateway),
:mod:`bridge.web.site` (the status page).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from typing import Callable

from twisted.application import service
from twisted.logger import Logger, LogLevel
from twisted.python import usage

from bridge import certs
from bridge import config as config_module
from bridge.config import Config
from bridge.errors import BridgeError, ConfigError, ExitCode
from bridge.journal import Journal
from bridge.journal.sqlite import SqliteJournal
from bridge.mapping import analysis as analysis_module
from bridge.publish.context import PublishingService
from bridge.service.context import Handler, ServiceContext
from bridge.service.parts import BridgeService, JournalService, MllpService, WorkerPoolService
from bridge.service.receiver import Receiver, route_message
from bridge.service.workers import WorkerPool
from bridge.web.site import WebService

log = logging.getLogger("bridge.serve")


def install_asyncio_reactor():
    """Install Twisted's asyncio reactor on a loop that is also asyncio's current one.

    architecture.md, "Fixed choices": without set_event_loop, awaiting
    asyncio futures from Twisted hangs. Returns the installed reactor.
    """
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor
        return reactor
    from twisted.internet import asyncioreactor
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import reactor
    return reactor


def check_identities(config: Config) -> None:
    """The A1/S1 certificates must be the structure's: refused against the production gateway
    (ConfigError from bridge.certs.bind_identities), said loudly anywhere else. Before anything
    starts, under `fse-bridge serve` and `twist fse-bridge` alike."""
    auth, sign = certs.load_credentials(config, check=False)
    for problem in certs.bind_identities(config, auth, sign):
        log.warning("CERTIFICATES DO NOT MATCH THE STRUCTURE: %s; the gateway files documents under the "
                    "certificates' structure or refuses them (against the production gateway the service "
                    "would not start)", problem)


class Options(usage.Options):
    """``twist fse-bridge`` options."""

    optParameters = [["config", "c", None, "configuration file (default: ./etc/bridge.toml, else the checkout's)"]]

    loaded: Config | None = None

    def postOptions(self):
        # Before twist installs its default reactor: the bridge runs on asyncio's.
        install_asyncio_reactor()
        # Under twist the log is Twisted's: send the modules' logging records there.
        root = logging.getLogger()
        if not root.handlers:
            root.addHandler(_TwistedLogHandler())
            root.setLevel(logging.INFO)
        # What `fse-bridge serve` checks before it starts, with its one line and exit status
        # instead of twist's traceback.
        try:
            self.loaded = config_module.load(self["config"])
            check_identities(self.loaded)
        except BridgeError as exc:
            configuration = isinstance(exc, ConfigError)
            sys.stderr.write(f"fse-bridge: cannot start: {'configuration error: ' if configuration else ''}"
                             f"{exc}\n")
            raise SystemExit(ExitCode.USAGE if configuration else ExitCode.FAILED) from None


class _TwistedLogHandler(logging.Handler):
    """Forwards stdlib logging records to twisted.logger (used under ``twist``)."""

    def emit(self, record):
        level = (LogLevel.critical if record.levelno >= logging.CRITICAL else
                 LogLevel.error if record.levelno >= logging.ERROR else
                 LogLevel.warn if record.levelno >= logging.WARNING else
                 LogLevel.info if record.levelno >= logging.INFO else LogLevel.debug)
        Logger(namespace=record.name).emit(level, "{message}", message=self.format(record))


def makeService(config, reactor=None, *, handler: Handler = route_message,
                open_journal: Callable[[], Journal] | None = None) -> service.MultiService:
    """The bridge as a MultiService: worker threads, worker processes, publishing (stages,
    gateway), journal, MLLP listener, status page (started in that order).

    *config* is a :class:`Config`, or :class:`Options` (whose ``config`` names the file).
    A *handler* other than the pipeline's gets its messages parsed only, not routed and mapped.
    """
    if isinstance(config, Options) and config.loaded is not None:
        config = config.loaded
    elif not isinstance(config, Config):
        config = config_module.load(config.get("config") if config else None)
    if reactor is None:
        from twisted.internet import reactor
    ctx = ServiceContext(config=config, reactor=reactor)
    top = BridgeService(reactor)
    pool = WorkerPoolService(reactor, size=max(2, min(8, os.cpu_count() or 2)))
    ctx.run_blocking = pool.run_blocking
    pool.setServiceParent(top)
    if config.workers.processes:
        processes = WorkerPool(reactor, config, count=config.workers.processes,
                               timeout_s=config.workers.timeout_s)
        processes.setServiceParent(top)
        ctx.workers = processes
        ctx.run_stage = processes.call
    else:
        # No worker processes: the same stages in threads (sharing the reactor's CPU), with
        # the service's own, loaded at start.
        ctx.run_stage = lambda fn, *args: pool.run_blocking(fn, ctx.stages, *args)
    analyser = analysis_module.analyse if handler is route_message else analysis_module.summarise
    ctx.analyse = functools.partial(ctx.run_stage, analyser)
    if handler is route_message:
        # Before the journal: resumed messages need the pipeline's stages and gateway.
        PublishingService(ctx).setServiceParent(top)
    receiver = Receiver(ctx, handler)
    if open_journal is None:
        def open_journal():
            # A quick integrity check first: a damaged journal stops the start (exit 4).
            return SqliteJournal(config.journal.path, reactor=reactor, check=True)
    JournalService(ctx, receiver, open_journal).setServiceParent(top)
    top.listener = MllpService(ctx, receiver)
    top.listener.setServiceParent(top)
    WebService(ctx, top.listener).setServiceParent(top)
    top.receiver = receiver
    top.context = ctx
    return top
