"""bridge.aio.as_deferred: an asyncio awaitable (the gateway client's calls) as a Deferred,
its result and its failure, on the reactor's asyncio loop."""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted

from bridge.aio import as_deferred


async def later(value, *, fail: bool = False):
    await asyncio.sleep(0.01)   # a real suspension on the asyncio loop
    if fail:
        raise ValueError(value)
    return value


@pytest_twisted.ensureDeferred
async def test_the_result_and_the_failure_of_an_asyncio_coroutine_arrive_as_a_deferred():
    assert await as_deferred(later("done")) == "done"
    with pytest.raises(ValueError, match="boom"):
        await as_deferred(later("boom", fail=True))
