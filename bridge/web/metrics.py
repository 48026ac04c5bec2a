"""``GET /metrics``: counts for Prometheus (text exposition format 0.0.4), from
:func:`bridge.journal.metrics.snapshot` in the thread pool, never on the reactor; 503 with a
comment line when the journal cannot be read."""

from __future__ import annotations

import logging
import time

from twisted.internet import defer, threads
from twisted.python import threadable
from twisted.python.failure import Failure
from twisted.web import resource

from bridge import __version__
from bridge.alerts import ALERTS, KINDS as ALERT_KINDS
from bridge.cda import validate
from bridge.journal import State, metrics
from bridge.service.context import ServiceContext
from bridge.web.answer import answer
from bridge.web.health import JOURNAL_PROBE_TIMEOUT_S, listening_port

log = logging.getLogger(__name__)

#: /metrics gives up on the journal's counts after this many seconds (Prometheus waits 10 s).
METRICS_TIMEOUT_S = 5.0

PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


@defer.inlineCallbacks
def journal_counts(ctx: ServiceContext, timeout_s: float = METRICS_TIMEOUT_S, finished=None):
    """``(counts, None)``: :func:`bridge.journal.metrics.snapshot` of the service's journal, run
    in the thread pool (never on the reactor) within *timeout_s*; ``(None, why)`` when it
    cannot be read. *finished*: called on the reactor once the pool's thread is done with
    the snapshot, which may be after the answer (a pool too busy to start it in time)."""
    path = getattr(ctx.journal, "path", None) if ctx.journal is not None else None
    if ctx.config.journal.backend != "sqlite" or not path or path == ":memory:":
        if finished is not None:
            finished()
        return None, "no journal file to read"
    deadline = time.monotonic() + timeout_s
    reactor = ctx.reactor

    def job():
        try:
            # The budget counts from the request: time spent waiting for a thread is spent.
            return metrics.snapshot(path, timeout_s=max(0.0, deadline - time.monotonic()))
        finally:
            if finished is not None:
                if threadable.isInIOThread():
                    finished()
                else:
                    reactor.callFromThread(finished)

    run = ctx.run_blocking or threads.deferToThread
    try:
        d = run(job)
        # The snapshot interrupts its own queries; this covers a pool too busy to start it.
        d.addTimeout(timeout_s, reactor)
        counts = yield d
    except (metrics.MetricsUnavailable, defer.TimeoutError) as exc:
        why = str(exc) if isinstance(exc, metrics.MetricsUnavailable) else "the journal's counts took too long"
        log.warning("/metrics: %s", why)
        return None, why
    return counts, None


@defer.inlineCallbacks
def journal_answers(ctx: ServiceContext):
    """Whether the service's own journal answers (a closed or stuck one does not)."""
    if ctx.journal is None:
        return False
    try:
        probe = ctx.journal.get(0)   # no such entry: the cheapest round trip through its queue
        probe.addTimeout(JOURNAL_PROBE_TIMEOUT_S, ctx.reactor)
        yield probe
    except Exception:   # closed (raises at once) or stuck: what this gauge is for
        return False
    return True


def metric_families(ctx: ServiceContext, listener, counts: dict | None, journal_open: bool) -> list[tuple]:
    """``(name, type, help, [(labels, value)])`` for each metric: the journal's *counts*
    (left out when None) and what the running service knows."""
    families = []
    if counts is not None:
        families += [
            ("fse_bridge_messages_total", "counter",
             "Messages journaled, by processing outcome (unfinished: none yet).",
             [({"outcome": k}, n) for k, n in counts["messages"].items()]),
            ("fse_bridge_messages_by_type_total", "counter", "Messages journaled, by message type (MSH-9).",
             [({"message_type": k}, n) for k, n in counts["messages_by_type"].items()]),
            ("fse_bridge_unfinished_messages", "gauge", "Messages journaled without an outcome, by state.",
             [({"state": k}, n) for k, n in ({State.RECEIVED: 0} | counts["unfinished"]).items()]),
            ("fse_bridge_gateway_calls_total", "counter",
             "Gateway calls, by operation and HTTP status class (none: no answer, or not yet).",
             [({"operation": op, "status_class": status}, n)
              for (op, status), n in counts["gateway_calls"].items()]),
            ("fse_bridge_documents", "gauge", "Documents in the registry, by state and type.",
             [({"state": state, "type": kind}, n) for (state, kind), n in counts["documents"].items()]),
            ("fse_bridge_set_aside_messages", "gauge",
             "Messages set aside: recovery will not try them again; an operator decides.",
             [({}, counts["set_aside"])]),
        ]
    port = listening_port(listener)
    factory = getattr(listener, "factory", None)
    connections = len(factory.connections) if factory is not None else 0
    publisher = getattr(ctx, "publisher", None)
    rules_on = (publisher.rules is not None if publisher is not None
                else validate.load_rules(ctx.config.validation.rules_dir) is not None)
    workers = getattr(ctx, "workers", None)
    status = workers.status() if workers is not None else {"processes": 0, "up": 0, "replaced": 0, "waiting": 0}
    families += [
        ("fse_bridge_journal_open", "gauge", "1 while the service's journal answers.", [({}, int(journal_open))]),
        ("fse_bridge_mllp_listening", "gauge", "1 while the MLLP listener is bound.", [({}, int(port is not None))]),
        ("fse_bridge_mllp_connections", "gauge", "MLLP connections open now.", [({}, connections)]),
        ("fse_bridge_validation_local", "gauge", "1 when local validation (XSD and schematron) is on.",
         [({}, int(rules_on))]),
        ("fse_bridge_worker_processes", "gauge", "Worker processes configured and running.",
         [({"state": "configured"}, status["processes"]), ({"state": "up"}, status["up"])]),
        ("fse_bridge_worker_replaced_total", "counter", "Worker processes started to replace one that ended.",
         [({}, status["replaced"])]),
        ("fse_bridge_worker_calls_waiting", "gauge", "Stage calls waiting for a worker process.",
         [({}, status["waiting"])]),
        ("fse_bridge_operator_alerts_total", "counter", "Operator alerts raised since the service started, by kind.",
         [({"kind": kind}, n) for kind, n in sorted(({k: 0 for k in ALERT_KINDS} | ALERTS.counts()).items())]),
        ("fse_bridge_build_info", "gauge", "The running version.", [({"version": __version__}, 1)]),
    ]
    return families


def render_exposition(families: list[tuple], comment: str | None = None) -> bytes:
    """The Prometheus text exposition format, version 0.0.4 (one ``# HELP``, one ``# TYPE``
    and the samples of each family), with *comment* first as a ``#`` line."""
    lines = [f"# {_one_line(comment)}"] if comment else []
    for name, kind, text, samples in families:
        lines += [f"# HELP {name} {_one_line(text)}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            pairs = ",".join(f'{key}="{_label_value(v)}"' for key, v in labels.items())
            lines.append(f"{name}{{{pairs}}} {value}" if pairs else f"{name} {value}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _label_value(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", " ").replace("\n", " ")


class MetricsResource(resource.Resource):
    """``GET /metrics``. Scrapes arriving while the journal is read share that read: a slow
    journal never has more than one snapshot in the thread pool."""

    isLeaf = True

    def __init__(self, ctx: ServiceContext, listener, timeout_s: float = METRICS_TIMEOUT_S):
        super().__init__()
        self.ctx, self.listener, self.timeout_s = ctx, listener, timeout_s
        self._waiting: list[defer.Deferred] = []
        self._in_pool = False
        """A snapshot is in the thread pool (queued or running), perhaps past its answer."""

    def render_GET(self, request):
        d = self._read()
        d.addCallback(self._exposition)
        return answer(request, d, what="/metrics")

    def _read(self) -> defer.Deferred:
        waiter: defer.Deferred = defer.Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            d = defer.gatherResults([self._counts(), journal_answers(self.ctx)], consumeErrors=True)
            d.addBoth(self._share)
        return waiter

    def _counts(self) -> defer.Deferred:
        if self._in_pool:
            # The last one outlived its answer: a busy pool or disk. Never a second one beside it.
            return defer.succeed((None, "the last read of the journal's counts has not finished"))
        self._in_pool = True
        return journal_counts(self.ctx, self.timeout_s, finished=self._pool_done)

    def _pool_done(self):
        self._in_pool = False

    def _share(self, result):
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _exposition(self, result):
        (counts, problem), journal_open = result
        families = metric_families(self.ctx, self.listener, counts, journal_open)
        if counts is None:
            # A failed scrape (Prometheus's up == 0): the reason for whoever reads it by hand.
            return 503, PROMETHEUS, render_exposition(families, f"journal unreadable: {problem}")
        return 200, PROMETHEUS, render_exposition(families)
