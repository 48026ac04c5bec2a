"""The status page: health, recent messages, one message explained.

interface.md, "Install and run": a status page on ``[web]`` host/port
(127.0.0.1:8080 by default; port 0 = any free port) and ``/healthz``, which
says whether local validation is ON or OFF. Three resources, Twisted Web:

- ``GET /healthz``: JSON (journal open, gateway, validation, MLLP port,
  unfinished messages); 200 when healthy, 503 otherwise;
- ``GET /``: a small HTML page of the recent messages (``?before=ID`` pages on);
- ``GET /messages/<id>``: JSON of one journal entry with its state
  transitions and gateway calls (``<id>`` may also be a control id, document
  id or X-Cart-id);
- ``GET /metrics``: counts for Prometheus (text exposition format 0.0.4), from
  :func:`bridge.journal.metrics.snapshot` in the thread pool, never on the
  reactor; 503 with a comment line when the journal cannot be read.

Only what the journal holds about processing is shown: never the raw message,
the ACK bytes, artifact contents or a gateway problem's free-text detail, so
no patient data leaves through this page.

One operator endpoint, for ``fse-bridge journal update-metadata`` (interface.md,
"Commands"): ``POST /operator/metadata`` with a JSON body ``{"target": ID,
"settings": ["KEY=VALUE", ...]}`` runs the update inside the service
(:func:`bridge.publish.pipeline.update_metadata`), under the accession's lock, so it never
races a correction or cancellation the service is processing. It needs
``Authorization: Bearer <token>``: at start the service writes a new random token
to ``<state_dir>/operator.token`` (mode 0600, readable only by the service's
user) and the page's address to ``<state_dir>/web.url``; both go at stop.

A second one, for ``fse-bridge journal resubmit``: ``POST /operator/resubmit`` with
``{"target": ID}`` journals the entry's bytes again as a new entry and has the service's
Receiver process it at once (:meth:`bridge.service.tap.Receiver.resubmit`); it answers once
processed with the new entry, its outcome, the ACK's MSA-1/MSA-3 and what was published.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
import html
import json
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, threads
from twisted.python import threadable
from twisted.python.failure import Failure
from twisted.web import pages, resource, server

from bridge import __version__
from bridge.alerts import ALERTS, KINDS as ALERT_KINDS
from bridge.publish import pipeline
from bridge.cda import validate
from bridge.errors import BridgeError, InvalidValue
from bridge.journal import State, metrics
from bridge.publish.metadata import UnknownTarget

log = logging.getLogger(__name__)

#: Messages listed on the page (newest first).
PAGE_SIZE = 50
#: A journal that does not answer within this many seconds makes /healthz answer 503.
JOURNAL_PROBE_TIMEOUT_S = 5.0
#: /metrics gives up on the journal's counts after this many seconds (Prometheus waits 10 s).
METRICS_TIMEOUT_S = 5.0
#: Fields of a gateway problem body shown; "detail" may quote the document, so it is left out.
PROBLEM_FIELDS = ("type", "title", "status")
#: A fiscal code (or any 16-character code of capitals and digits with both): some official
#: schematron messages quote it (ERRORE-46 "codice fiscale '...'"), and those messages are
#: in an entry's error text.
_FISCAL_CODE = re.compile(r"\b(?=[A-Z0-9]{0,15}[0-9])(?=[A-Z0-9]{0,15}[A-Z])[A-Z0-9]{16}\b")
#: Files in state_dir telling `journal update-metadata` where the running service is.
TOKEN_FILE = "operator.token"
URL_FILE = "web.url"
#: An operator request body larger than this is refused (a target and a few settings).
MAX_OPERATOR_BODY = 64 * 1024
#: How long a stopping service waits for operator updates in flight.
OPERATOR_GRACE_S = 20.0


def redact(text: str | None) -> str | None:
    """*text* with fiscal codes masked."""
    return _FISCAL_CODE.sub("[redacted]", text) if text else text


# -- what the resources say ---------------------------------------------------------------


@defer.inlineCallbacks
def health(ctx, listener=None):
    """``(healthy, body)`` for /healthz. *listener*: the MLLP service, for its bound port."""
    config = ctx.config
    journal_open, unfinished, by_state, set_aside = False, None, {}, None
    if ctx.journal is not None:
        try:
            probe = ctx.journal.unfinished()
            probe.addTimeout(JOURNAL_PROBE_TIMEOUT_S, ctx.reactor)
            entries = yield probe
        except Exception as exc:  # a closed or stuck journal is what this check is for
            log.warning("health: the journal did not answer: %s", exc)
        else:
            journal_open = True
            unfinished = len(entries)
            by_state = dict(sorted(collections.Counter(e.state for e in entries).items()))
            set_aside = yield ctx.journal.count_state(State.SET_ASIDE)
    port = _listening_port(listener)
    publisher = getattr(ctx, "publisher", None)
    if publisher is not None:
        gateway_url = publisher.client.base_url
        rules_on = publisher.rules is not None
    else:
        gateway_url = None if config.embedded_gateway else config.gateway.base_url
        rules_on = validate.load_rules(config.validation.rules_dir) is not None
    workers = getattr(ctx, "workers", None)
    worker_status = workers.status() if workers is not None else {"processes": 0}
    # Workers all down (dying at start, say): messages would only wait, then get AR.
    # A journal that cannot be written (disk full) answers AR to every message: not healthy.
    write_failing = getattr(ctx.journal, "write_failing", None) if ctx.journal is not None else None
    healthy = journal_open and not write_failing and (listener is None or port is not None) and (
        workers is None or worker_status["up"] > 0)
    body = {
        "status": "ok" if healthy else "unavailable",
        "version": __version__,
        "journal": {"open": journal_open, "writable": not write_failing, "backend": config.journal.backend,
                    "path": str(getattr(ctx.journal, "path", config.journal.path))},
        "gateway": {"embedded": config.embedded_gateway, "url": gateway_url},
        "validation": {"local": "ON" if rules_on else "OFF", "rules_dir": str(config.validation.rules_dir)},
        "mllp": {"host": config.mllp.host, "port": port if port is not None else config.mllp.port,
                 "listening": port is not None, "tls": config.mllp.tls_cert is not None},
        "ack_mode": config.ack.mode,
        "workers": worker_status,
        "unfinished": {"total": unfinished, "by_state": by_state},
        # One bad message does not make the service unhealthy: counted, for an operator.
        "set_aside": set_aside,
        "operator_alerts": ALERTS.counts(),
    }
    if not rules_on:
        body["validation"]["notice"] = "local validation is OFF: install the rules with `fse-bridge rules install`"
    return healthy, body


def _listening_port(listener) -> int | None:
    port = getattr(listener, "port", None) if listener is not None else None
    if port is None or not getattr(listener, "running", True):
        return None
    return port.getHost().port


def entry_summary(entry) -> dict[str, Any]:
    """The fields of a journal entry that say how it was processed (no message content)."""
    return {
        "id": entry.id, "received_at": entry.received_at, "updated_at": entry.updated_at,
        "peer": entry.peer, "facility": entry.msh4, "control_id": entry.msh10,
        "message_type": entry.message_type, "charset": entry.charset, "state": entry.state,
        "outcome": entry.outcome, "ack_code": entry.ack_code, "resend_of": entry.resend_of,
        "operation": entry.operation, "document_id": entry.document_id, "x_cart_id": entry.x_cart_id,
        "trace_id": entry.trace_id, "workflow_instance_id": entry.workflow_instance_id,
        "error": redact(entry.error), "purged_at": entry.purged_at,
    }


#: In place of the gateway's warning text for a reader without the operator token.
WARNING_WITHHELD = ("withheld: the gateway's text may name the patient; read it with the operator token "
                    f"(Authorization: Bearer <state_dir/{TOKEN_FILE}>) from this host, or `fse-bridge journal show`")


def call_summary(call, *, operator: bool = False) -> dict[str, Any]:
    """One gateway call; its warning text verbatim only for the *operator* (it may name the patient)."""
    return {
        "id": call.id, "operation": call.operation, "document_id": call.document_id, "state": call.state,
        "at": call.at, "http_status": call.http_status, "x_cart_id": call.x_cart_id,
        "trace_id": call.trace_id, "span_id": call.span_id, "workflow_instance_id": call.workflow_instance_id,
        "warning": call.warning if operator or not call.warning else WARNING_WITHHELD,
        "problem": _problem(call.problem),
    }


def _problem(text: str | None) -> dict | str | None:
    """The gateway's problem type/title/status; a network error text as it is (it names no patient)."""
    if not text:
        return None
    try:
        problem = json.loads(text)
    except ValueError:
        return redact(text)
    if not isinstance(problem, dict):
        return None
    return {k: problem[k] for k in PROBLEM_FIELDS if k in problem}


@defer.inlineCallbacks
def message_detail(journal, key: str, *, operator: bool = False):
    """``(status, body)`` for /messages/<key>: the entry, its transitions, gateway calls and
    the names of the artifacts recorded for it (the gateway's warnings only for the *operator*)."""
    if key.isdigit():
        entry = yield journal.get(int(key))
        entries = [entry] if entry is not None else []
    else:
        entries = yield journal.find(key)
    if not entries:
        return 404, {"error": f"no journal entry {key}"}
    if len(entries) > 1:
        return 300, {"error": f"{len(entries)} journal entries match {key}",
                     "matches": [entry_summary(e) for e in entries]}
    entry = entries[0]
    transitions = yield journal.transitions(entry.id)
    calls = yield journal.gateway_calls(entry.id)
    artifacts = yield journal.artifacts(entry.id)
    body = entry_summary(entry)
    body["transitions"] = [{"state": t.state, "at": t.at, "detail": redact(t.detail)} for t in transitions]
    body["gateway_calls"] = [call_summary(c, operator=operator) for c in calls]
    # Retention (bridge.journal.retention) empties contents, never the rows: say so.
    body["artifacts"] = [{"stage": a.stage, "name": a.name, "at": a.at,
                          **({"purged": f"purged on {a.purged_at[:10]}"} if a.purged_at else
                             {"bytes": len(a.content)})}
                         for a in artifacts]
    if entry.purged_at:
        body["message"] = f"purged on {entry.purged_at[:10]}"
    return 200, body


# -- HTML ---------------------------------------------------------------------------------

_COLUMNS = ("id", "received", "state", "facility", "control id", "type", "outcome", "document id",
            "X-Cart-id")

_STYLE = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:90%}"
          "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}th{background:#eee}"
          ".AA{color:#060}.AE{color:#a60}.AR{color:#a00}.off{color:#a00;font-weight:bold}")


def render_page(healthy: bool, status: dict, entries: list) -> bytes:
    """The status page: health in a line or two, then the recent messages."""
    e = html.escape
    validation = status["validation"]
    gateway = status["gateway"]
    unfinished = status["unfinished"]["total"]
    rows = []
    for entry in entries:
        cells = [f'<a href="messages/{entry.id}">{entry.id}</a>', e(entry.received_at[:19].replace("T", " ")),
                 e(entry.state), e(entry.msh4), e(entry.msh10), e(entry.message_type),
                 f'<span class="{e(entry.outcome or "")}">{e(entry.outcome or "…")}</span>',
                 e(entry.document_id or ""), e(entry.x_cart_id or "")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    more = (f'<p><a href="?before={entries[-1].id}">older messages</a></p>'
            if len(entries) == PAGE_SIZE else "")
    validation_text = (f'local validation ON ({e(validation["rules_dir"])})' if validation["local"] == "ON"
                       else f'<span class="off">local validation OFF</span>: no rules in '
                            f'{e(validation["rules_dir"])} (<code>fse-bridge rules install</code>)')
    gateway_text = ("embedded simulator" if gateway["embedded"] else "gateway") + (
        f' {e(gateway["url"])}' if gateway["url"] else "")
    recent = ALERTS.recent()
    alerts = ("<h2>Operator alerts</h2><ul>" + "".join(
        f'<li>{e(a.at[:19].replace("T", " "))} <b>{e(a.kind)}</b> {e(a.text)}</li>' for a in recent)
        + "</ul>") if recent else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="15">
<title>fse-bridge status</title><style>{_STYLE}</style></head><body>
<h1>fse-bridge</h1>
<p>Status: <b>{"ok" if healthy else '<span class="off">unavailable</span>'}</b>;
MLLP port {status["mllp"]["port"]}; ack mode {e(status["ack_mode"])};
{gateway_text}; {validation_text};
unfinished messages: {"?" if unfinished is None else unfinished};
set aside: {"?" if status["set_aside"] is None else status["set_aside"]}.
<a href="healthz">/healthz</a></p>
{alerts}
<h2>Recent messages</h2>
<table><tr>{"".join(f"<th>{c}</th>" for c in _COLUMNS)}</tr>
{chr(10).join(rows) or f'<tr><td colspan="{len(_COLUMNS)}">none yet</td></tr>'}
</table>{more}
</body></html>
"""
    return page.encode("utf-8")


# -- Twisted Web ----------------------------------------------------------------------------


def _answer(request, d: defer.Deferred, *, what: str):
    """Finish *request* with the ``(status, content_type, bytes)`` *d* fires with."""
    gone: list = []
    # Fires with an error if the client goes away first: then there is nobody to answer.
    request.notifyFinish().addErrback(gone.append)

    def write(result):
        status, content_type, data = result
        if gone or request.finished:
            return
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        request.write(data)
        request.finish()

    def failed(failure):
        log.error("status page: %s failed: %s", what, failure.getErrorMessage())
        return 500, b"application/json", _json({"error": "internal error, see the service log"})

    d.addErrback(failed).addCallback(write)
    d.addErrback(lambda f: log.error("status page: answering failed: %s", f.getErrorMessage()))
    return server.NOT_DONE_YET


def _json(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8")


JSON = b"application/json; charset=utf-8"


class HealthResource(resource.Resource):
    isLeaf = True

    def __init__(self, ctx, listener):
        super().__init__()
        self.ctx, self.listener = ctx, listener

    def render_GET(self, request):
        d = health(self.ctx, self.listener)
        d.addCallback(lambda r: (200 if r[0] else 503, JSON, _json(r[1])))
        return _answer(request, d, what="/healthz")


class MessageResource(resource.Resource):
    isLeaf = True

    def __init__(self, ctx, key: str, operator: OperatorEndpoint | None = None):
        super().__init__()
        self.ctx, self.key, self.operator = ctx, key, operator

    def render_GET(self, request):
        if self.ctx.journal is None:
            return _answer(request, defer.succeed((503, JSON, _json({"error": "journal not open"}))),
                           what="/messages")
        operator = self.operator is not None and self.operator.from_operator(request)
        d = message_detail(self.ctx.journal, self.key, operator=operator)
        d.addCallback(lambda r: (r[0], JSON, _json(r[1])))
        return _answer(request, d, what="/messages")


class MessagesResource(resource.Resource):
    def __init__(self, ctx, operator: OperatorEndpoint | None = None):
        super().__init__()
        self.ctx, self.operator = ctx, operator

    def getChild(self, path: bytes, request):
        key = path.decode("utf-8", "replace").strip()
        if not key:
            return pages.notFound(detail="give a message id: /messages/<id>")
        return MessageResource(self.ctx, key, self.operator)


class StatusPage(resource.Resource):
    """``/``: the HTML page; children ``healthz``, ``messages``, ``metrics`` and, given an *operator*
    endpoint, ``operator/metadata`` and ``operator/resubmit``."""

    def __init__(self, ctx, listener=None, operator: OperatorEndpoint | None = None):
        super().__init__()
        self.ctx, self.listener = ctx, listener
        self.putChild(b"healthz", HealthResource(ctx, listener))
        self.putChild(b"messages", MessagesResource(ctx, operator))
        self.putChild(b"metrics", MetricsResource(ctx, listener))
        if operator is not None:
            folder = resource.Resource()
            folder.putChild(b"metadata", MetadataResource(ctx, operator))
            folder.putChild(b"resubmit", ResubmitResource(ctx, operator, listener))
            self.putChild(b"operator", folder)

    def getChild(self, path: bytes, request):
        if path == b"":
            return self
        return pages.notFound()

    def render_GET(self, request):
        before = _int_arg(request, b"before")
        d = self._page(before)
        return _answer(request, d, what="/")

    @defer.inlineCallbacks
    def _page(self, before):
        healthy, status = yield health(self.ctx, self.listener)
        entries = []
        if self.ctx.journal is not None and status["journal"]["open"]:
            entries = yield self.ctx.journal.entries(PAGE_SIZE, before)
        return 200, b"text/html; charset=utf-8", render_page(healthy, status, entries)


def _int_arg(request, name: bytes) -> int | None:
    values = request.args.get(name) or []
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None


# -- /metrics (Prometheus) ------------------------------------------------------------------

PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


@defer.inlineCallbacks
def journal_counts(ctx, timeout_s: float = METRICS_TIMEOUT_S, finished=None):
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
def journal_answers(ctx):
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


def metric_families(ctx, listener, counts: dict | None, journal_open: bool) -> list[tuple]:
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
             [({"state": k}, n) for k, n in ({"received": 0} | counts["unfinished"]).items()]),
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
    port = _listening_port(listener)
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

    def __init__(self, ctx, listener, timeout_s: float = METRICS_TIMEOUT_S):
        super().__init__()
        self.ctx, self.listener, self.timeout_s = ctx, listener, timeout_s
        self._waiting: list[defer.Deferred] = []
        self._in_pool = False
        """A snapshot is in the thread pool (queued or running), perhaps past its answer."""

    def render_GET(self, request):
        d = self._read()
        d.addCallback(self._exposition)
        return _answer(request, d, what="/metrics")

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


# -- the operator endpoint ----------------------------------------------------------------


class OperatorEndpoint:
    """The operator token and the updates in flight (a stop waits for them)."""

    def __init__(self, token: str):
        self.token = token
        self.in_flight: set[defer.Deferred] = set()

    def authorised(self, request) -> bool:
        given = request.getHeader("authorization") or ""
        scheme, _, value = given.partition(" ")
        # Constant time: the answer's timing must not reveal how much of a guess matched.
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    def from_operator(self, request) -> bool:
        """From this host with the token: the token never crosses the network (plain HTTP)."""
        client = getattr(request.getClientAddress(), "host", "")
        return same_host(client, getattr(request.getHost(), "host", "")) and self.authorised(request)

    def track(self, d: defer.Deferred) -> defer.Deferred:
        self.in_flight.add(d)
        d.addBoth(self._done, d)
        return d

    def _done(self, result, d):
        self.in_flight.discard(d)
        return result

    def drain(self, reactor, timeout: float = OPERATOR_GRACE_S) -> defer.Deferred:
        pending = list(self.in_flight)
        if not pending:
            return defer.succeed(None)
        d = defer.DeferredList(pending, consumeErrors=True)
        d.addTimeout(timeout, reactor, onTimeoutCancel=lambda *_: None)
        return d


def read_operator_body(body: bytes, content_type: str | None, fields: tuple[str, ...]) -> dict:
    """The JSON object of an operator request whose fields are among *fields*, with a valid
    ``target``; InvalidValue naming the field (``body`` when it is not such an object)."""
    names = " and ".join(fields)
    if not (content_type or "").split(";")[0].strip().lower() == "application/json":
        raise InvalidValue("body: expected JSON (Content-Type: application/json)")
    if len(body) > MAX_OPERATOR_BODY:
        raise InvalidValue(f"body: over {MAX_OPERATOR_BODY} bytes")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidValue("body: not JSON") from None
    if not isinstance(data, dict):
        raise InvalidValue(f"body: expected a JSON object with {names}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InvalidValue(f"{unknown[0]}: unknown field (expected {names})")
    target = data.get("target")
    if not isinstance(target, (str, int)) or isinstance(target, bool) or not str(target).strip():
        raise InvalidValue("target: expected a journal entry id, control id, document id or X-Cart-id")
    return data | {"target": str(target).strip()}


def read_operator_request(body: bytes, content_type: str | None) -> tuple[str, list[str]]:
    """``(target, settings)`` of a ``POST /operator/metadata`` body; InvalidValue naming the field."""
    data = read_operator_body(body, content_type, ("target", "settings"))
    settings = data.get("settings")
    if not isinstance(settings, list) or not settings or not all(isinstance(v, str) for v in settings):
        raise InvalidValue('settings: expected a non-empty list of "KEY=VALUE" strings')
    return data["target"], settings


def read_resubmit_request(body: bytes, content_type: str | None) -> str:
    """The target of a ``POST /operator/resubmit`` body; InvalidValue naming the field."""
    return read_operator_body(body, content_type, ("target",))["target"]


def metadata_answer(call: pipeline.MetadataCall) -> tuple[int, dict]:
    """``(HTTP status, body)`` for a metadata call made: 200 when the gateway took it, 502 otherwise."""
    result = call.result
    error = result.to_error()
    body = {"operation": result.operation, "document_id": result.document_id, "entry": call.entry_id,
            "ok": result.published, "http_status": result.status, "x_cart_id": result.x_cart_id,
            "warning": result.warning, "summary": result.summary(),
            "error": error.message if error is not None else None}
    return (200 if result.published else 502), body


def _refusal(failure) -> tuple[int, dict]:
    """The answer for an update refused before (or without) a gateway call."""
    if not failure.check(BridgeError):
        log.error("operator metadata update failed:\n%s", failure.getTraceback())
        return failure
    error = failure.value
    # A bad setting; no such entry; a document not the current version (or without its submission).
    status = 400 if isinstance(error, InvalidValue) else 404 if isinstance(error, UnknownTarget) else 409
    log.info("operator metadata update refused (HTTP %d): %s", status, error.message)
    return status, {"error": error.message} | ({"field": "settings"} if status == 400 else {})


class OperatorResource(resource.Resource):
    """An operator action: ``POST`` only, with the operator token (403 without it, checked
    first so that nothing is said to a caller without it; 405 for another method)."""

    isLeaf = True
    what = "/operator"
    """The resource, as the log names it."""

    def __init__(self, ctx, operator: OperatorEndpoint):
        super().__init__()
        self.ctx, self.operator = ctx, operator

    def render(self, request):
        client = getattr(request.getClientAddress(), "host", "")
        if not same_host(client, getattr(request.getHost(), "host", "")):
            # The token is read from state_dir, so the CLI runs on this host; the page may
            # listen beyond it (for /metrics), over plain HTTP: operator actions never do.
            log.warning("operator endpoint: a request from another host (%s) refused", client)
            return self._now(request, 403, {"error": "forbidden: operator actions are taken from this "
                                                     "host only"})
        if not self.operator.authorised(request):
            log.warning("operator endpoint: a request from %s without the operator token refused",
                        getattr(request.getClientAddress(), "host", "?"))
            return self._now(request, 403, {"error": "forbidden: give Authorization: Bearer <the token in "
                                                     f"state_dir/{TOKEN_FILE}>"})
        if request.method != b"POST":
            request.setHeader(b"Allow", b"POST")
            return self._now(request, 405, {"error": "method: only POST"})
        request.content.seek(0)
        try:
            d = self.act(request.content.read(MAX_OPERATOR_BODY + 1), request.getHeader("content-type"))
        except InvalidValue as error:
            return self._now(request, 400, {"error": error.message, "field": error.message.split(":")[0]})
        if isinstance(d, tuple):
            return self._now(request, *d)
        d = self.operator.track(d)
        d.addCallback(lambda answer: (answer[0], JSON, _json(answer[1])))
        return _answer(request, d, what=self.what)

    def act(self, body: bytes, content_type: str | None) -> defer.Deferred | tuple[int, dict]:
        """A Deferred of ``(HTTP status, body)``, or at once ``(status, body)``; InvalidValue: 400."""
        raise NotImplementedError

    def _now(self, request, status: int, body: dict):
        return _answer(request, defer.succeed((status, JSON, _json(body))), what=self.what)


class MetadataResource(OperatorResource):
    """``POST /operator/metadata``: one metadata update through the running service."""

    what = "/operator/metadata"

    def act(self, body, content_type):
        target, settings = read_operator_request(body, content_type)
        if getattr(self.ctx, "publisher", None) is None or self.ctx.journal is None:
            return 503, {"error": "this service publishes no documents"}
        return pipeline.update_metadata(self.ctx, target, settings).addCallbacks(metadata_answer, _refusal)


class ResubmitResource(OperatorResource):
    """``POST /operator/resubmit``: ``journal resubmit`` through the running service, which
    journals the entry's bytes again and processes the new entry at once (its Receiver)."""

    what = "/operator/resubmit"

    def __init__(self, ctx, operator: OperatorEndpoint, listener):
        super().__init__(ctx, operator)
        self.listener = listener

    def act(self, body, content_type):
        target = read_resubmit_request(body, content_type)
        receiver = getattr(self.listener, "receiver", None)
        if receiver is None or self.ctx.journal is None:
            return 503, {"error": "this service processes no messages"}
        return resubmit(self.ctx.journal, receiver, target)


@defer.inlineCallbacks
def resubmit(journal, receiver, target: str):
    """``(HTTP status, body)`` of an operator's resubmit of the entry *target* names (id,
    control id, document id or X-Cart-id): 200 once the new entry is processed, whatever its
    outcome (the body says it); 404 no such entry; 409 several entries, a purged message, or an
    entry not finished yet (the service is processing it: a copy would run beside it)."""
    found = yield journal.find(target)
    if not found:
        return _refused(404, f"no journal entry matches {target!r}")
    if len(found) > 1:
        ids = [e.id for e in found]
        return _refused(409, f"{target!r} matches entries {', '.join(map(str, ids))}: give the id",
                        matches=ids)
    entry = found[0]
    if entry.purged:
        return _refused(409, f"entry {entry.id}: the message was purged on {entry.purged_at[:10]}; "
                             "ask the sender to send it again")
    if not entry.finished:
        return _refused(409, f"entry {entry.id} is not finished yet (state {entry.state}): "
                             "the service is processing it")
    try:
        new = yield receiver.resubmit(entry.id)
    except KeyError:      # gone or purged since it was found
        return _refused(404, f"no journal entry {entry.id}")
    except ValueError as error:
        return _refused(409, str(error))
    status, body = resubmit_answer(new)
    log.info("operator resubmit of entry %d: entry %d, outcome %s, ACK %s", entry.id, new.id,
             new.outcome or "none (see above)", body["ack_code"] or "none")
    return status, body


def _refused(status: int, error: str, **extra) -> tuple[int, dict]:
    log.info("operator resubmit refused (HTTP %d): %s", status, error)
    return status, {"error": error, **extra}


def resubmit_answer(entry) -> tuple[int, dict]:
    """``(200, body)`` for an entry resubmitted and processed: its outcome, the ACK's MSA-1 and
    MSA-3, and what was published (never the message itself; fiscal codes masked)."""
    code, text = ack_fields(entry.ack, entry.charset)
    text = redact(text)
    summary = f"entry {entry.id} (resubmitted from entry {entry.resend_of}): " + (
        f"{entry.outcome} {text or ''}".rstrip() if entry.outcome else "not finished (see the service log)")
    if entry.document_id:
        summary += f"; document {entry.document_id}"
        if entry.operation:
            summary += f" ({entry.operation})"
    if entry.x_cart_id:
        summary += f"; X-Cart-id {entry.x_cart_id}"
    return 200, {"entry": entry.id, "resend_of": entry.resend_of, "state": entry.state,
                 "outcome": entry.outcome, "ack_code": code, "ack_text": text,
                 "document_id": entry.document_id, "operation": entry.operation,
                 "x_cart_id": entry.x_cart_id, "summary": summary}


def ack_fields(ack: bytes | None, charset: str | None) -> tuple[str | None, str | None]:
    """MSA-1 and MSA-3 of an ACK (None when there is none)."""
    if not ack:
        return None, None
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA") and len(segment) > 4:
            try:
                text = segment.decode(charset or "iso-8859-1", "replace")
            except LookupError:   # a codec this Python does not know: the ASCII parts still read
                text = segment.decode("iso-8859-1")
            fields = text.split(segment[3:4].decode("latin-1"))
            return (fields[1] or None), (fields[3] if len(fields) > 3 else "") or None
    return None, None


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """*text* to *path*, replacing it whole, created with *mode* (never readable by others, even briefly)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)   # whatever the umask
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _remove_if(path: Path, text: str) -> None:
    """Remove *path* if it still holds *text* (another start may have replaced it)."""
    try:
        if path.read_text() == text:
            path.unlink()
    except OSError:
        pass


def same_host(client: str, server: str) -> bool:
    """Is a connection from *client* to our *server* address one from this host (loopback, or
    from the very address it reached)?"""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback) or client == server


def local_url(address) -> str:
    """The page's URL for a client on this host (a wildcard interface is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{address.port}/"


class _QuietSite(server.Site):
    """No access log: health probes every few seconds would drown the service log."""

    def log(self, request):
        pass


class WebService(service.Service):
    """The status page on ``[web]`` host/port. *listener*: the MLLP service (for /healthz; its
    ``receiver`` processes ``/operator/resubmit``).

    In makeService, after the MLLP listener: ``WebService(ctx, top.listener).setServiceParent(top)``.
    """

    def __init__(self, ctx, listener=None):
        self.ctx = ctx
        self.listener = listener
        self.port = None
        self.operator: OperatorEndpoint | None = None
        self._written: list[tuple[Path, str]] = []

    @property
    def url(self) -> str:
        address = self.port.getHost()
        return f"http://{address.host}:{address.port}/"

    def startService(self):
        super().startService()
        settings = self.ctx.config.web
        self.operator = OperatorEndpoint(secrets.token_urlsafe(32))
        site = _QuietSite(StatusPage(self.ctx, self.listener, self.operator))
        site.displayTracebacks = False
        site.noisy = False
        self.port = self.ctx.reactor.listenTCP(settings.port, site, interface=settings.host)
        self._write_files()
        log.info("status page on %s", self.url)

    def _write_files(self):
        """The token, then the URL: a CLI that finds the URL finds the token too."""
        folder = self.ctx.config.state_dir
        folder.mkdir(parents=True, exist_ok=True)
        url = local_url(self.port.getHost()) + "\n"
        for path, text in ((folder / TOKEN_FILE, self.operator.token + "\n"), (folder / URL_FILE, url)):
            write_private(path, text)
            self._written.append((path, text))

    def stopService(self):
        super().stopService()
        # The files first: from now on `journal update-metadata` finds no service to ask.
        for path, text in reversed(self._written):
            _remove_if(path, text)
        self._written.clear()
        port, self.port = self.port, None
        d = defer.maybeDeferred(port.stopListening) if port is not None else defer.succeed(None)
        if self.operator is not None:
            d.addCallback(lambda _: self.operator.drain(self.ctx.reactor))
        return d
