"""The status page's site: the resources wired under one root, and the WebService that listens.

interface.md, "Install and run": a status page on ``[web]`` host/port (127.0.0.1:8080 by
default; port 0 = any free port). Twisted Web, one module per resource:

- ``GET /`` (web.status): a small HTML page of the recent messages (``?before=ID`` pages on);
- ``GET /healthz`` (web.health): JSON, 200 when healthy, 503 otherwise; says whether local
  validation is ON or OFF;
- ``GET /messages/<id>`` (web.messages): one journal entry with its state transitions and
  gateway calls (``<id>`` may also be a control id, document id or X-Cart-id);
- ``GET /metrics`` (web.metrics): counts for Prometheus;
- ``POST /operator/metadata`` and ``/operator/resubmit`` (web.operator): ``journal
  update-metadata`` and ``journal resubmit`` run inside the service. At start the service
  writes a new random token to ``<state_dir>/operator.token`` (mode 0600, readable only by
  the service's user) and the page's address to ``<state_dir>/web.url``; both go at stop.

Only what the journal holds about processing is shown: never the raw message, the ACK
bytes, artifact contents or a gateway problem's free-text detail, so no patient data leaves
through this page.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from twisted.application import service
from twisted.internet import defer
from twisted.web import pages, resource, server

from bridge.service.context import ServiceContext
from bridge.web.answer import answer
from bridge.web.health import HealthResource
from bridge.web.messages import MessagesResource
from bridge.web.metrics import MetricsResource
from bridge.web.operator import (TOKEN_FILE, URL_FILE, MetadataResource, OperatorEndpoint,
                                 ResubmitResource)
from bridge.web.status import status_page

log = logging.getLogger(__name__)


class StatusPage(resource.Resource):
    """``/``: the HTML page; children ``healthz``, ``messages``, ``metrics`` and, given an *operator*
    endpoint, ``operator/metadata`` and ``operator/resubmit``."""

    def __init__(self, ctx: ServiceContext, listener=None, operator: OperatorEndpoint | None = None):
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
        return answer(request, status_page(self.ctx, self.listener, before), what="/")


def _int_arg(request, name: bytes) -> int | None:
    values = request.args.get(name) or []
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None


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

    def __init__(self, ctx: ServiceContext, listener=None):
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
