"""The one bridge from asyncio to Twisted.

The gateway client is asyncio (httpx); the service is Twisted, on the asyncio reactor.
:func:`as_deferred` runs an asyncio awaitable as a task of that loop and gives its result as
a Deferred. A coroutine that awaits Deferreds (the pipeline's) goes through Twisted's own
``defer.ensureDeferred`` instead: an asyncio task cannot await a Deferred.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


def as_deferred(awaitable: Awaitable[T]) -> Deferred:
    """A Deferred of *awaitable*'s result, run on the reactor's asyncio loop."""
    return Deferred.fromFuture(asyncio.ensure_future(awaitable))
