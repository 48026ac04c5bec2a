"""Work in flight that a stopping service waits for, up to a grace period.

The receiver (messages in processing) and the operator endpoints (updates and resubmissions)
both track their Deferreds here; their stopService drains them.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred


class InFlight:
    """A set of Deferreds, each forgotten when it fires."""

    def __init__(self):
        self._pending: set[Deferred] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def track(self, d: Deferred) -> Deferred:
        """*d* is in flight until it fires; returns *d*."""
        self._pending.add(d)
        d.addBoth(self._done, d)
        return d

    def _done(self, result, d):
        self._pending.discard(d)
        return result

    def drain(self, reactor, timeout: float) -> Deferred:
        """Fires when everything tracked now has fired, or after *timeout* seconds."""
        if not self._pending:
            return defer.succeed(None)
        d = defer.DeferredList(list(self._pending), consumeErrors=True)
        d.addTimeout(timeout, reactor, onTimeoutCancel=lambda *_: None)
        return d
