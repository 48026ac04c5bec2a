"""The processing pipeline: route, map, render, validate, package, submit.

architecture.md, "The way a message travels", steps 3 to 8. For now only
the entry point exists; the stages are filled in by the end-to-end work.
"""

from __future__ import annotations

from twisted.internet import defer

from bridge.model import AckCode
from bridge.outcome import Outcome


def process(ctx, entry, parsed) -> defer.Deferred:
    """Process one journaled message; a Deferred of its :class:`Outcome`."""
    return defer.succeed(Outcome(code=AckCode.AA, text="received"))
