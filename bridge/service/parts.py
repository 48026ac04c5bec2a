"""The child services of the bridge's MultiService: the thread pool, the journal (with its
retention purge), the MLLP listener, and the top service that starts and stops them in order.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from bridge.journal import Journal
from bridge.journal.retention import cutoffs
from bridge.journal.sqlite import utc_now
from bridge.mllp.protocol import MllpFactory, tls_options
from bridge.service.context import ServiceContext
from bridge.service.receiver import Receiver

log = logging.getLogger(__name__)


class WorkerPoolService(service.Service):
    """The dedicated thread pool behind ``run_blocking``."""

    def __init__(self, reactor, size: int):
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=size, name="fse-bridge-worker")

    def run_blocking(self, fn, *args, **kwargs) -> Deferred:
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kwargs)

    def startService(self):
        super().startService()
        self.pool.start()

    def stopService(self):
        super().stopService()
        self.pool.stop()


class JournalService(service.Service):
    """Opens the journal on start, closes it on stop (after in-flight work); purges it.

    Retention (``journal.keep_artifacts_days``, ``keep_messages_days``): a purge at start,
    then every :attr:`purge_interval_s`, on *clock* (default the reactor). The journal
    runs it batch by batch where its writes run, so the reactor never waits for it.
    """

    purge_interval_s = 24 * 3600.0

    def __init__(self, ctx: ServiceContext, receiver: Receiver, open_journal: Callable[[], Journal], *,
                 clock=None, now: Callable[[], Any] | None = None):
        """*now*: the current time (an aware datetime) the retention counts from."""
        self.ctx = ctx
        self.receiver = receiver
        self.open_journal = open_journal
        self.clock = clock
        self.now = now or utc_now
        self.purging = None
        self.purges: Deferred | None = None
        """Fires when the purge loop ends (on stop)."""

    def startService(self):
        super().startService()
        self.ctx.journal = self.open_journal()
        log.info("journal at %s", getattr(self.ctx.journal, "path", "?"))
        settings = self.ctx.config.journal
        if settings.keep_artifacts_days or settings.keep_messages_days:
            self.purging = LoopingCall(self.purge)
            self.purging.clock = self.clock or self.ctx.reactor
            self.purges = self.purging.start(self.purge_interval_s, now=True)
        else:
            log.info("journal retention off (journal.keep_artifacts_days = keep_messages_days = 0)")

    @inlineCallbacks
    def purge(self):
        """One retention purge; logs its counts (never patient data). A failure is logged and
        the next run goes on (the loop must not stop)."""
        artifacts_before, messages_before = cutoffs(self.ctx.config.journal, self.now())
        try:
            report = yield self.ctx.journal.purge(artifacts_before=artifacts_before,
                                                  messages_before=messages_before)
        except Exception as error:
            log.error("journal purge failed: %s", error)
            return None
        log.info("journal retention: %s", report.summary())
        return report

    def stopService(self):
        super().stopService()
        if self.purging is not None and self.purging.running:
            self.purging.stop()   # a batch under way finishes; the journal's close ends the run
        self.receiver.cancel_retries()
        if self.ctx.journal is None:   # it never opened (a damaged file): nothing to close
            return None
        d = self.receiver.drain()
        d.addCallback(lambda _: self.ctx.journal.close())
        d.addCallback(lambda _: log.info("journal closed"))
        return d


class MllpService(service.Service):
    """The MLLP (or MLLPS) listener. Stopping it stops accepting and waits for in-flight work."""

    def __init__(self, ctx: ServiceContext, receiver: Receiver):
        settings = ctx.config.mllp
        self.ctx = ctx
        self.receiver = receiver
        self.factory = MllpFactory(receiver.handle_frame, receiver.handle_oversize,
                                   max_frame=settings.max_message_bytes,
                                   max_connections=settings.max_connections,
                                   idle_timeout=settings.idle_timeout_s or None,
                                   frame_timeout=settings.frame_timeout_s or None, clock=ctx.reactor)
        self.port = None

    def startService(self):
        super().startService()
        settings = self.ctx.config.mllp
        reactor = self.ctx.reactor
        if settings.tls_cert is not None:
            options = tls_options(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            self.port = reactor.listenSSL(settings.port, self.factory, options, interface=settings.host)
            kind = "MLLPS (TLS, client certificates required)" if settings.tls_client_ca else "MLLPS (TLS)"
        else:
            self.port = reactor.listenTCP(settings.port, self.factory, interface=settings.host)
            kind = "MLLP"
        address = self.port.getHost()
        log.info("reactor: %s", type(reactor).__name__)
        log.info("%s listening on %s:%d; journal at %s; ack mode %s", kind, address.host, address.port,
                 getattr(self.ctx.journal, "path", "?"), self.ctx.config.ack.mode)

    def stopService(self):
        super().stopService()
        d = defer.maybeDeferred(self.port.stopListening) if self.port else defer.succeed(None)
        self.receiver.stop_gateway_waits()
        d.addCallback(lambda _: self.receiver.drain())

        def close_connections(_):
            for connection in list(self.factory.connections):
                connection.transport.loseConnection()

        d.addCallback(close_connections)
        return d


class BridgeService(service.MultiService):
    """The top service; its children stop in reverse order: listener, journal, worker pool."""

    def __init__(self, reactor):
        super().__init__()
        self.reactor = reactor
        self.context: ServiceContext | None = None
        self.receiver: Receiver | None = None
        self.listener: MllpService | None = None

    def startService(self):
        super().startService()
        # Once every child has started (whatever the stages need is in place), the work
        # journaled but not finished before the last stop is processed.
        self.resumed = self.receiver.resume()
        self.resumed.addErrback(lambda f: log.error("resuming unfinished messages failed: %s",
                                                    f.getErrorMessage()))

    @property
    def mllp_port(self) -> int:
        """The port the MLLP listener is bound to (after start; useful with port 0)."""
        return self.listener.port.getHost().port

    @inlineCallbacks
    def stopService(self):
        # twist re-raises SIGTERM/SIGINT at exit (status -15); interface.md wants a graceful
        # stop to exit 0, so the remembered signal is dropped (a private attribute of the
        # reactor, hence the getattr).
        if getattr(self.reactor, "_exitSignal", None) is not None:
            self.reactor._exitSignal = None
        # One child after the other, last started first (MultiService stops them all at
        # once): the status page and the listener stop taking work and wait for the work in
        # flight, which still needs the journal, the gateway client and the workers.
        service.Service.stopService(self)
        for child in reversed(list(self)):
            try:
                yield defer.maybeDeferred(child.stopService)
            except Exception:  # one child's failure must not keep the others running
                log.exception("stopping %s failed", type(child).__name__)
