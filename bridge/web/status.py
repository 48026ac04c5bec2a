"""``GET /``: the HTML page (health in a line or two, operator alerts, the recent messages),
rendered from templates/status.html.j2 with autoescape on: what senders wrote is escaped."""

from __future__ import annotations

import jinja2
from twisted.internet import defer

from bridge.alerts import ALERTS
from bridge.service.context import ServiceContext
from bridge.web.health import Health, health

#: Messages listed on the page (newest first).
PAGE_SIZE = 50

_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("bridge.web", "templates"), autoescape=True,
                                undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_page(status: Health, entries: list) -> bytes:
    """The status page: health in a line or two, then the recent messages."""
    page = _TEMPLATES.get_template("status.html.j2").render(
        status=status, entries=entries, alerts=ALERTS.recent(),
        more=len(entries) == PAGE_SIZE)
    return page.encode("utf-8")


@defer.inlineCallbacks
def status_page(ctx: ServiceContext, listener, before: int | None):
    """``(200, content type, page)``: the page of the *before* older messages (newest first)."""
    status = yield health(ctx, listener)
    entries = []
    if ctx.journal is not None and status.journal.open:
        entries = yield ctx.journal.entries(PAGE_SIZE, before)
    return 200, b"text/html; charset=utf-8", render_page(status, entries)
