"""``GET /healthz``: whether the service can take messages (journal open and writable, MLLP
bound, a worker up), and what it runs with (gateway, local validation ON or OFF)."""

from __future__ import annotations

import collections
import dataclasses
import logging
from dataclasses import dataclass

from twisted.internet import defer
from twisted.web import resource

from bridge import __version__
from bridge.alerts import ALERTS
from bridge.cda import validate
from bridge.journal import State
from bridge.service.context import ServiceContext
from bridge.web.answer import JSON, answer, to_json

log = logging.getLogger(__name__)

#: A journal that does not answer within this many seconds makes /healthz answer 503.
JOURNAL_PROBE_TIMEOUT_S = 5.0


#: What /healthz says when local validation is off.
VALIDATION_OFF_NOTICE = "local validation is OFF: install the rules with `fse-bridge rules install`"


@dataclass(frozen=True, slots=True)
class JournalHealth:
    open: bool
    writable: bool
    backend: str
    path: str


@dataclass(frozen=True, slots=True)
class GatewayHealth:
    embedded: bool
    url: str | None


@dataclass(frozen=True, slots=True)
class ValidationHealth:
    local: str
    """``ON`` or ``OFF``."""
    rules_dir: str
    notice: str | None = None
    """Said only when local validation is OFF."""


@dataclass(frozen=True, slots=True)
class MllpHealth:
    host: str
    port: int
    """The bound port; the configured one while not listening."""
    listening: bool
    tls: bool


@dataclass(frozen=True, slots=True)
class Unfinished:
    total: int | None
    """None: the journal did not answer."""
    by_state: dict[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    """What /healthz and the status page say of the running service."""

    healthy: bool
    version: str
    journal: JournalHealth
    gateway: GatewayHealth
    validation: ValidationHealth
    mllp: MllpHealth
    ack_mode: str
    workers: dict
    """:meth:`bridge.service.workers.WorkerPool.status` (``{"processes": 0}`` without workers)."""
    unfinished: Unfinished
    set_aside: int | None
    """One bad message does not make the service unhealthy: counted, for an operator."""
    operator_alerts: dict[str, int]

    def as_dict(self) -> dict:
        """The /healthz body: ``status`` first, the fields, ``validation.notice`` only when said."""
        body = {"status": "ok" if self.healthy else "unavailable"} | dataclasses.asdict(self)
        del body["healthy"]
        if body["validation"]["notice"] is None:
            del body["validation"]["notice"]
        return body


@defer.inlineCallbacks
def health(ctx: ServiceContext, listener=None):
    """The service's :class:`Health`. *listener*: the MLLP service, for its bound port."""
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
    port = listening_port(listener)
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
    return Health(
        healthy=healthy, version=__version__,
        journal=JournalHealth(open=journal_open, writable=not write_failing, backend=config.journal.backend,
                              path=str(getattr(ctx.journal, "path", config.journal.path))),
        gateway=GatewayHealth(embedded=config.embedded_gateway, url=gateway_url),
        validation=ValidationHealth(local="ON" if rules_on else "OFF", rules_dir=str(config.validation.rules_dir),
                                    notice=None if rules_on else VALIDATION_OFF_NOTICE),
        mllp=MllpHealth(host=config.mllp.host, port=port if port is not None else config.mllp.port,
                        listening=port is not None, tls=config.mllp.tls_cert is not None),
        ack_mode=config.ack.mode, workers=worker_status,
        unfinished=Unfinished(total=unfinished, by_state=by_state),
        set_aside=set_aside, operator_alerts=ALERTS.counts())


def listening_port(listener) -> int | None:
    port = getattr(listener, "port", None) if listener is not None else None
    if port is None or not getattr(listener, "running", True):
        return None
    return port.getHost().port


class HealthResource(resource.Resource):
    isLeaf = True

    def __init__(self, ctx: ServiceContext, listener):
        super().__init__()
        self.ctx, self.listener = ctx, listener

    def render_GET(self, request):
        d = health(self.ctx, self.listener)
        d.addCallback(lambda report: (200 if report.healthy else 503, JSON, to_json(report.as_dict())))
        return answer(request, d, what="/healthz")
