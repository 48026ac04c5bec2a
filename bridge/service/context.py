"""What the service's parts share: the configuration, the reactor, the journal once open, and
the one entry to each kind of concurrency.

Threads are entered in one place only, :attr:`ServiceContext.run_blocking`;
worker processes in one place only, :attr:`ServiceContext.run_stage`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import Deferred

from bridge.config import Config
from bridge.journal import Entry, Journal
from bridge.mapping.analysis import Analysis
from bridge.publish.pipeline import Publisher
from bridge.service.stages import Stages
from bridge.service.workers import WorkerPool


@dataclass(kw_only=True)
class ServiceContext:
    """What the processing stages get from the service (the end-to-end work adds fields)."""

    config: Config
    reactor: Any
    journal: Journal | None = None
    """Set when the journal opens (``startService``)."""
    run_blocking: Callable[..., Deferred] = field(default=None)
    """``run_blocking(fn, *args)``: run blocking work in the thread pool."""
    run_stage: Callable[..., Deferred] = field(default=None)
    """``run_stage(fn, *args)``: a Deferred of ``fn(stages, *args)`` (bridge.service.stages), run in a
    worker process (``workers.processes = 0``: in a thread)."""
    analyse: Callable[[bytes], Deferred] | None = None
    """``analyse(raw)``: a Deferred of the message's :class:`~bridge.mapping.analysis.Analysis`, made by
    ``run_stage`` (None: parsed in line, for tests of the service alone)."""
    stages: Stages | None = None
    """What the stages read (routing, mappings, templates, rules, signer): made from the
    configuration when not given, loaded at start (bridge.publish.context)."""
    publisher: Publisher | None = None
    """The pipeline's loaded stages and gateway client, set on start."""
    workers: WorkerPool | None = None
    """The worker processes behind ``run_stage`` (None: the stages run in threads)."""


    def __post_init__(self):
        if self.stages is None:
            self.stages = Stages(self.config)


Handler = Callable[[ServiceContext, Entry, Analysis], Deferred]
