"""Operator alerts: what a person running the bridge must act on.

An operator alert is, everywhere, three things at once (issue 14): a log line
at ERROR beginning ``OPERATOR ALERT``, a count in ``/metrics``
(``fse_bridge_operator_alerts_total{kind}``) and an entry on the status page.
:func:`raise_alert` is the one way to make one; the web layer reads
:data:`ALERTS`.

The text names the message control id, the document id or the X-Cart-id, never
patient data (it is logged at ERROR and shown on the status page).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
from dataclasses import dataclass

log = logging.getLogger("bridge.alerts")

#: Alerts kept for the status page (the oldest go first).
RECENT = 50


class Kind:
    """The kinds of alert (the ``kind`` label of the counter)."""

    CREDENTIALS = "credentials"        # the gateway refused our certificates, tokens or clock
    WRONG_PATIENT = "wrong_patient"    # a correction moved a report to another citizen
    UNCERTAIN = "uncertain"            # a gateway answer that cannot be reconciled with our call
    SET_ASIDE = "set_aside"            # a message recovery will not try again by itself
    GATEWAY_DOWN = "gateway_down"      # an acknowledged message still not published after a bound
    STORAGE = "storage"                # the journal cannot be written


#: Every kind, so that /metrics shows each counter from the start (at 0).
KINDS = tuple(v for k, v in vars(Kind).items() if not k.startswith("_"))


@dataclass(frozen=True, slots=True)
class Alert:
    at: str
    kind: str
    text: str


class Alerts:
    """Counts by kind since start and the most recent alerts (thread-safe: the journal's
    writer thread and the reactor both raise them)."""

    def __init__(self, keep: int = RECENT):
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._recent: collections.deque[Alert] = collections.deque(maxlen=keep)

    def add(self, kind: str, text: str) -> Alert:
        alert = Alert(at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), kind=kind, text=text)
        with self._lock:
            self._counts[kind] += 1
            self._recent.append(alert)
        return alert

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def recent(self) -> list[Alert]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._recent))

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._recent.clear()


#: The process's alerts (the service is one process; worker processes raise none).
ALERTS = Alerts()


def raise_alert(kind: str, text: str) -> Alert:
    """Log ``OPERATOR ALERT [kind] text`` at ERROR and count it for /metrics and the status page."""
    log.error("OPERATOR ALERT [%s] %s", kind, text)
    return ALERTS.add(kind, text)
