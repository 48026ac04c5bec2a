"""The service: MLLP listener + journal + worker pool, as one Twisted MultiService.

architecture.md, "The way a message travels": receive, journal, then the
processing hook, then answer. :class:`Receiver` is that hook's frame side: it
journals each message (durably, before any ACK that reports success),
applies the resend rules, hands ``(context, entry, analysis)`` to the handler
(a Deferred of an :class:`~bridge.outcome.Outcome`) and builds the ACK. The
message is parsed (and routed and mapped: :mod:`bridge.mapping.analysis`) in a
worker process (:mod:`bridge.service.workers`) while it is being journaled; the
reactor only reads its header.
``ack.mode = "commit"`` and enhanced-mode messages are answered once
journaled; processing continues and its outcome goes to the journal.

Threads are entered in one place only, :attr:`ServiceContext.run_blocking`;
worker processes in one place only, :attr:`ServiceContext.run_stage`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from bridge.alerts import Kind as AlertKind, raise_alert
from bridge.config import Config
from bridge.errors import (BridgeError, DuplicateControlId, FrameTooLarge, GatewayUnavailable,
                           InternalError)
from bridge.hl7 import ack as answer
from bridge.hl7.message import Header, default_header, read_header, split_batch
from bridge.journal import Admit, Entry, Journal, Received, State
from bridge.mapping import analysis as analysis_module
from bridge.mapping.analysis import Analysis, unsupported
from bridge.publish import pipeline
from bridge.journal.retention import cutoffs
from bridge.journal.sqlite import utc_now
from bridge.model import AckCode
from bridge.outcome import Outcome
from bridge.service.stages import Stages
from bridge.service import retry
from bridge.service.workers import WorkerFailed, WorkerLost, WorkerPool

log = logging.getLogger(__name__)

#: How long a stopping service waits for in-flight work before closing the journal
#: (the work is journaled; a restart resumes what did not finish).
STOP_GRACE_S = 20.0
#: An outcome the journal could not write is tried again this often, until it is.
RECORD_RETRY_S = 5.0


def install_asyncio_reactor():
    """Install Twisted's asyncio reactor on a loop that is also asyncio's current one.

    architecture.md, "Fixed choices": without set_event_loop, awaiting
    asyncio futures from Twisted hangs. Returns the installed reactor.
    """
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor
        return reactor
    from twisted.internet import asyncioreactor
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import reactor
    return reactor


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
    publisher: Any = None
    """The pipeline's loaded stages and gateway client (bridge.publish.pipeline.Publisher), set on start."""
    workers: WorkerPool | None = None
    """The worker processes behind ``run_stage`` (None: the stages run in threads)."""


Handler = Callable[[ServiceContext, Entry, Analysis], Deferred]


def route_message(ctx: ServiceContext, entry: Entry, analysis: Analysis) -> Deferred:
    """The default handler: supported types go to :func:`bridge.publish.pipeline.process`, others get AR."""
    refusal = unsupported(analysis)
    if refusal is not None:
        return defer.succeed(Outcome.from_error(refusal))
    return pipeline.process(ctx, entry, analysis)


class Receiver:
    """Turns frames into answers: journal, resend rules, handler, ACK (interface.md, ACK contract)."""

    def __init__(self, ctx: ServiceContext, handler: Handler = route_message, *, now=None, clock=None):
        self.ctx = ctx
        self.handler = handler
        self._now = now
        self._clock = clock or ctx.reactor
        """Schedules the retries of messages already acknowledged (IReactorTime)."""
        self._unrecorded: dict[int, tuple[Outcome, bytes]] = {}
        """Outcomes the journal could not write yet, by entry id (retried on the clock)."""
        self._attempts: dict[int, int] = {}
        """Attempts of acknowledged messages that did not succeed yet, by entry id."""
        self._failures: dict[int, str] = {}
        """The reason of each such message's last failure (the same twice: set aside)."""
        self._retries: dict[int, Any] = {}
        self._commit_mode = ctx.config.ack.mode == "commit"
        self._default_charset = ctx.config.mllp.default_charset
        self._waiters: dict[int, list[Deferred]] = {}
        self._in_flight: set[Deferred] = set()
        self._analyse = ctx.analyse or (lambda raw: defer.maybeDeferred(analysis_module.summarise, ctx, raw))

    # -- frames --------------------------------------------------------------

    def handle_frame(self, payload: bytes, peer: str) -> Deferred:
        """The answer bytes for one frame: one ACK per message, in order (a batch in BHS/BTS).

        Never fails: whatever the frame holds and whatever goes wrong, it gets an answer.
        """
        try:
            batch = split_batch(payload, self._default_charset)
        except Exception:  # a bug: still an answer, never silence
            log.exception("splitting a frame from %s failed: answering AR 207", peer)
            return defer.succeed(answer.fallback_ack(now=self._stamp()))
        if len(batch.messages) == 1 and not batch.enveloped:
            return self.handle_message(batch.messages[0], peer)   # the usual frame: its ACK alone
        return self._handle_batch(batch, peer)

    @inlineCallbacks
    def _handle_batch(self, batch, peer: str):
        messages = batch.messages or (batch.leading,)
        acks = []
        for raw in messages:
            # One after another: two copies of a control id in one batch see each other.
            acks.append((yield self.handle_message(raw, peer)))
        try:
            return answer.build_batch_ack(batch, acks, now=self._stamp())
        except Exception:  # a bug in the envelope: the members' ACKs still go
            log.exception("building a batch envelope failed: answering its ACKs without it")
            return b"".join(acks)

    def handle_oversize(self, head: bytes, peer: str) -> bytes:
        """AR 207 for a frame over ``mllp.max_message_bytes``, echoing its header if one can be read."""
        header = _header_or_none(head, self._default_charset) or default_header()
        error = FrameTooLarge(f"message over {self.ctx.config.mllp.max_message_bytes} bytes refused")
        return answer.build_ack(header, Outcome.from_error(error), now=self._stamp())

    def handle_message(self, raw: bytes, peer: str) -> Deferred:
        """The ACK for one message; in flight (a stop waits for it) from its arrival on.

        Never fails: an unexpected error (a bug, a journal that cannot be written) is
        answered AR 207; an entry journaled before it stays unfinished, so a restart
        resumes it.
        """
        d = self._track(self._handle_message(raw, peer))
        return d.addErrback(self._answer_failure, raw, peer)

    def _answer_failure(self, failure, raw: bytes, peer: str) -> bytes:
        log.error("handling a message from %s failed: answering AR 207", peer,
                  exc_info=(failure.type, failure.value, failure.getTracebackObject()))
        return answer.fallback_ack(_header_or_none(raw, self._default_charset), now=self._stamp())

    @inlineCallbacks
    def _handle_message(self, raw: bytes, peer: str):
        header = read_header(raw, self._default_charset) or default_header()
        # The analysis changes nothing, so it starts now, in a worker process, while the
        # message is journaled; nothing with an effect happens before the commit.
        pending = self._analyse(raw)
        analysis, error, accept_ack = None, None, None
        early = self._commit_mode or header.enhanced
        if early:
            # Answered once journaled: the ACK is stored by the same commit as the message,
            # so the analysis that decides it comes first.
            analysis, error = yield self._analysed(pending)
            if analysis is not None and unsupported(analysis) is None:
                accept_ack = answer.build_ack(header, Outcome(code=AckCode.AA, text="received"),
                                              now=self._stamp())
        received = Received(
            raw=raw, peer=peer, msh4=header.field(4), msh10=header.control_id,
            message_type=_message_type(analysis) if analysis else _header_type(header),
            charset=analysis.charset if analysis else header.charset, ack=accept_ack)
        admission = yield self.ctx.journal.admit(received)
        entry = admission.entry
        if admission.kind in (Admit.REPLAY, Admit.IN_FLIGHT):
            pending.addErrback(lambda _: None)  # unused: the earlier copy answers
        if admission.kind is Admit.REPLAY:
            log.info("message %s (entry %d) resent: stored ACK sent again", header.control_id, entry.id)
            return entry.ack
        if admission.kind is Admit.IN_FLIGHT:
            log.info("message %s resent while entry %d is processed: waiting for it", header.control_id,
                     entry.id)
            return (yield self._wait_for(entry.id))
        if not early:
            analysis, error = yield self._analysed(pending)
        if admission.kind is Admit.CONFLICT:
            # Its outcome is committed before the answer (below): a resumed entry would
            # otherwise be processed as a new message.
            error = DuplicateControlId("control id already received with different content",
                                       location="MSH^1^10")
        if error is not None:
            log.info("message %s (entry %d) refused: %s", header.control_id or "(no MSH-10)", entry.id, error)
            outcome = Outcome.from_error(error)
            ack = answer.build_ack(header, outcome, now=self._stamp())
            yield self.ctx.journal.finish(entry.id, outcome, ack)
            return ack
        log.debug("message %s (entry %d, %s) journaled", header.control_id or "(no MSH-10)", entry.id,
                 received.message_type)
        if accept_ack is not None:
            self.process(entry, analysis, header).addErrback(
                lambda f: log.error("entry %d: processing failed: %s", entry.id, f.getErrorMessage()))
            return accept_ack
        return (yield self.process(entry, analysis, header))

    @staticmethod
    def _analysed(pending: Deferred) -> Deferred:
        """A Deferred of ``(analysis, None)``, or ``(None, the error to answer with)``."""
        def failed(failure):
            if failure.check(BridgeError):
                return None, failure.value
            # Anything else is AR 207, logged (a worker's own traceback is in the worker's log).
            if failure.check(WorkerFailed):
                log.error("analysing a message failed: %s", failure.getErrorMessage())
            else:
                log.error("analysing a message failed",
                          exc_info=(failure.type, failure.value, failure.getTracebackObject()))
            return None, InternalError()

        return pending.addCallbacks(lambda analysis: (analysis, None), failed)

    # -- processing ------------------------------------------------------------

    def process(self, entry: Entry, analysis: Analysis, header: Header) -> Deferred:
        """Run the handler for a journaled entry; a Deferred of the ACK a resend would get."""
        return self._track(self._process(entry, analysis, header))

    def _track(self, d: Deferred) -> Deferred:
        """*d* is work in flight until it fires: a stop waits for it (:meth:`drain`)."""
        self._in_flight.add(d)
        d.addBoth(self._done, d)
        return d

    def _done(self, result, d):
        self._in_flight.discard(d)
        return result

    @inlineCallbacks
    def _process(self, entry: Entry, analysis: Analysis, header: Header):
        journal = self.ctx.journal
        # No "processing" state here: the stages record their own (routed, rendered...),
        # and "received" without an outcome already means "to be processed".
        temporary = False
        try:
            outcome = yield defer.maybeDeferred(self.handler, self.ctx, entry, analysis)
        except (defer.CancelledError, asyncio.CancelledError):
            # The service is stopping and cancelled a gateway call waiting to retry: the
            # entry stays unfinished (its call journaled as sent), and recovery resumes it.
            log.info("entry %d (control id %s): stopped while waiting for the gateway; left for "
                     "recovery at the next start", entry.id, entry.msh10)
            return entry.ack
        except BridgeError as exc:
            outcome = Outcome.from_error(exc)
            temporary = isinstance(exc, (GatewayUnavailable, WorkerLost))
        except Exception:  # the one broad catch: anything unexpected is AR 207, logged
            log.exception("processing entry %d (control id %s) failed", entry.id, entry.msh10)
            outcome = Outcome.from_error(InternalError())
        # An AR the gateway gave (it was called: operation set) is its "not now".
        temporary = temporary or (outcome.code is AckCode.AR and bool(outcome.operation))
        attempt = self._attempts.get(entry.id, 0) + 1
        decision = retry.after_processing(
            outcome, acknowledged=entry.ack is not None, temporary=temporary, attempt=attempt,
            previous_failure=self._failures.get(entry.id), requeue_s=self.ctx.config.gateway.requeue_s,
            requeue_max_s=self.ctx.config.gateway.requeue_max_s)
        if decision.next is retry.Next.RETRY:
            self._attempts[entry.id] = attempt
            self._failures[entry.id] = decision.reason
            self._retry_later(entry, analysis, header, decision, attempt)
            return entry.ack
        self._attempts.pop(entry.id, None)
        self._failures.pop(entry.id, None)
        if decision.next is retry.Next.SET_ASIDE:
            yield self._set_aside(entry, outcome, decision.reason)
            return entry.ack
        ack = answer.build_ack(header, outcome, now=self._stamp())
        # The ACK does not wait for this commit (one fsync per message, not two): the
        # message itself is already durable, the journal applies operations in order (a
        # resend is admitted after this), and a crash before the commit leaves the entry
        # unfinished, so it is processed again at the next start.
        self._record(entry.id, outcome, ack)
        log.info("message %s (entry %d) finished: %s %s", entry.msh10, entry.id, outcome.code.value,
                 outcome.text[:80])
        return entry.ack if entry.ack is not None else ack

    def _retry_later(self, entry: Entry, analysis: Analysis, header: Header, decision: retry.Decision,
                     attempt: int) -> None:
        """Try again later a message already acknowledged (commit or enhanced mode): its sender
        will not resend it, so the bridge must. The entry stays unfinished (state "waiting"), so
        a restart resumes it too."""
        delay = decision.delay_s
        self.ctx.journal.set_state(entry.id, State.WAITING,
                                   f"attempt {attempt}: {decision.reason}; next in {delay:.0f}s")
        log.warning("message %s (entry %d) not published (%s): trying again in %.0fs",
                    entry.msh10, entry.id, decision.reason[:120], delay)
        if decision.alert:
            raise_alert(AlertKind.GATEWAY_DOWN,
                        f"message {entry.msh10 or '-'} (entry {entry.id}) acknowledged to its sender and "
                        f"still not published after {attempt} attempts: {decision.reason[:200]}")

        def again():
            self._retries.pop(entry.id, None)
            self.process(entry, analysis, header)

        self._retries[entry.id] = self._clock.callLater(delay, again)

    @inlineCallbacks
    def _set_aside(self, entry: Entry, outcome: Outcome, reason: str):
        """Close *entry* for good (state ``set aside``) and tell the operator: recovery will not
        try it again, and the other entries go on."""
        raise_alert(AlertKind.SET_ASIDE, f"message {entry.msh10 or '-'} (entry {entry.id}) set aside: "
                                         f"{reason[:300]}; see `fse-bridge journal show {entry.id}`")
        try:
            yield self.ctx.journal.set_aside(entry.id, outcome, reason)
        except Exception as exc:  # the journal cannot be written: the entry stays unfinished
            log.error("entry %d: setting it aside failed: %s", entry.id, exc)
            return
        self._finished(entry.ack, entry.id)

    def _finished(self, stored_ack: bytes | None, entry_id: int) -> None:
        for waiter in self._waiters.pop(entry_id, []):
            waiter.callback(stored_ack)

    def _record(self, entry_id: int, outcome: Outcome, ack: bytes) -> None:
        self.ctx.journal.finish(entry_id, outcome, ack, urgent=False).addCallbacks(
            self._finished, self._not_recorded, callbackArgs=(entry_id,), errbackArgs=(entry_id, outcome, ack))

    def _not_recorded(self, failure, entry_id: int, outcome: Outcome, ack: bytes) -> None:
        """The outcome could not be written (a full disk): tried again every
        :data:`RECORD_RETRY_S` until it is, not only at the next start."""
        log.error("entry %d: recording its outcome failed: %s; trying again in %gs", entry_id,
                  failure.getErrorMessage(), RECORD_RETRY_S)
        for waiter in self._waiters.pop(entry_id, []):
            waiter.errback(failure)
        self._unrecorded[entry_id] = (outcome, ack)
        if entry_id not in self._retries:
            def again():
                self._retries.pop(entry_id, None)
                if self.ctx.journal is not None and entry_id in self._unrecorded:
                    self._record(entry_id, *self._unrecorded.pop(entry_id))

            self._retries[entry_id] = self._clock.callLater(RECORD_RETRY_S, again)

    @inlineCallbacks
    def _wait_for(self, entry_id: int):
        waiter: Deferred = Deferred()
        self._waiters.setdefault(entry_id, []).append(waiter)
        # It may have finished between admission and now.
        current = yield self.ctx.journal.get(entry_id)
        if current is not None and current.finished and waiter in self._waiters.get(entry_id, []):
            self._waiters[entry_id].remove(waiter)
            return current.ack
        return (yield waiter)

    @inlineCallbacks
    def resume(self):
        """Process the entries journaled but not finished before the last stop."""
        entries = yield self.ctx.journal.unfinished()
        if entries:
            log.info("resuming %d journaled message(s) not finished before the last stop", len(entries))
        for entry in entries:
            yield self._resume_one(entry)

    @inlineCallbacks
    def _resume_one(self, entry: Entry):
        """Resume one entry on its own: one that fails twice is set aside, and the rest go on."""
        # A crash may have come between journaling a conflicting copy and its AE 205.
        conflicts_before = entry.id if entry.resend_of is not None else None
        reason = ""
        for attempt in (1, 2):
            try:
                yield self._again(entry, conflicts_before=conflicts_before)
                return
            except Exception as exc:  # whatever it is, it must not stop the other entries
                reason = f"{type(exc).__name__}: {exc}"
                log.error("resuming entry %d failed (attempt %d): %s", entry.id, attempt, reason,
                          exc_info=(type(exc), exc, exc.__traceback__))
        yield self._set_aside(entry, Outcome.from_error(InternalError()), f"recovery failed twice: {reason}")

    @inlineCallbacks
    def _again(self, entry: Entry, *, conflicts_before: int | None):
        """Process a journaled entry outside its arrival (a restart, an operator's resubmit).

        *conflicts_before*: refuse it (AE 205) when other bytes under its control id were
        journaled before that entry id, as they were refused when they came.
        """
        header = read_header(entry.raw, self._default_charset) or default_header()
        analysis, error = yield self._analysed(self._analyse(entry.raw))
        if error is None and entry.msh10 and conflicts_before is not None:
            earlier = yield self.ctx.journal.find(entry.msh10)
            if any(e.id < conflicts_before and e.msh4 == entry.msh4 and e.msh10 == entry.msh10
                   and e.raw_sha256 != entry.raw_sha256 for e in earlier):
                error = DuplicateControlId("control id already received with different content",
                                           location="MSH^1^10")
        if error is not None:
            outcome = Outcome.from_error(error)
            yield self.ctx.journal.finish(entry.id, outcome, answer.build_ack(header, outcome, now=self._stamp()))
            return
        yield self.process(entry, analysis, header)

    def resubmit(self, entry_id: int) -> Deferred:
        """``journal resubmit`` through the running service: journal entry *entry_id*'s bytes
        again as a new entry (``resend_of`` it) and process it now, as :meth:`resume` would at
        the next start. A Deferred of the new entry as finished (outcome, ACK, document id).

        In flight from the call on, so a stop waits for it. Fails with KeyError (no such entry)
        or ValueError (its message was purged) before anything is journaled.
        """
        return self._track(self._resubmit(entry_id))

    @inlineCallbacks
    def _resubmit(self, entry_id: int):
        journal = self.ctx.journal
        entry = yield journal.resubmit(entry_id)
        log.info("entry %d journaled from entry %d by the operator: processing it", entry.id, entry_id)
        # A copy of bytes that came after others under the same control id (and got AE 205)
        # is refused the same way.
        yield self._again(entry, conflicts_before=entry_id)
        # Read after the outcome's write was queued: the journal applies operations in order.
        return (yield journal.get(entry.id))

    def stop_gateway_waits(self) -> None:
        """On stop: a gateway call waiting between attempts is not waited for; it stops
        waiting and its message is left for recovery (GatewayClient.stop_waiting)."""
        publisher = getattr(self.ctx, "publisher", None)
        if publisher is not None:
            publisher.client.stop_waiting()

    def cancel_retries(self) -> None:
        """On stop: the scheduled retries' entries stay unfinished; the next start resumes them."""
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()

    def drain(self, timeout: float = STOP_GRACE_S) -> Deferred:
        """Fires when in-flight processing is over, or after *timeout* seconds."""
        pending = list(self._in_flight)
        if not pending:
            return defer.succeed(None)
        log.info("waiting up to %ss for %d message(s) in processing", timeout, len(pending))
        d = defer.DeferredList(pending, consumeErrors=True)
        d.addTimeout(timeout, self.ctx.reactor, onTimeoutCancel=lambda *_: None)
        return d

    def _stamp(self):
        return self._now() if self._now else None


def _header_or_none(raw: bytes, default_charset: str) -> Header | None:
    """read_header that cannot fail (used where an answer must come out whatever the bytes)."""
    try:
        return read_header(raw, default_charset)
    except Exception:  # a bug in the tolerant reader: answer without the header
        log.exception("reading a message header failed")
        return None


def _message_type(analysis: Analysis) -> str:
    return "^".join(p for p in (analysis.message_type, analysis.trigger_event) if p)


def _header_type(header) -> str:
    """MSH-9.1^MSH-9.2 read from the header (the journal's column, before the parse)."""
    parts = (header.field(9, n).split(header.subcomponent)[0].strip() for n in (1, 2))
    return "^".join(p for p in parts if p)[:40]


# -- services -------------------------------------------------------------------


class WorkerPoolService(service.Service):
    """The dedicated thread pool behind ``run_blocking``."""

    def __init__(self, reactor, size: int):
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=size, name="fse-bridge-worker")

    def run_blocking(self, fn, *args, **kwargs) -> Deferred:
        return deferToThreadPool(self.reactor, self.pool, fn, *args, **kwargs)

    def startService(self):
        super().startService()
        self.pool.start()

    def stopService(self):
        super().stopService()
        self.pool.stop()


class JournalService(service.Service):
    """Opens the journal on start, closes it on stop (after in-flight work); purges it.

    Retention (``journal.keep_artifacts_days``, ``keep_messages_days``): a purge at start,
    then every :attr:`purge_interval_s`, on *clock* (default the reactor). The journal
    runs it batch by batch where its writes run, so the reactor never waits for it.
    """

    purge_interval_s = 24 * 3600.0

    def __init__(self, ctx: ServiceContext, receiver: Receiver, open_journal: Callable[[], Journal], *,
                 clock=None, now: Callable[[], Any] | None = None):
        """*now*: the current time (an aware datetime) the retention counts from."""
        self.ctx = ctx
        self.receiver = receiver
        self.open_journal = open_journal
        self.clock = clock
        self.now = now or utc_now
        self.purging = None
        self.purges: Deferred | None = None
        """Fires when the purge loop ends (on stop)."""

    def startService(self):
        super().startService()
        self.ctx.journal = self.open_journal()
        log.info("journal at %s", getattr(self.ctx.journal, "path", "?"))
        settings = self.ctx.config.journal
        if settings.keep_artifacts_days or settings.keep_messages_days:
            self.purging = LoopingCall(self.purge)
            self.purging.clock = self.clock or self.ctx.reactor
            self.purges = self.purging.start(self.purge_interval_s, now=True)
        else:
            log.info("journal retention off (journal.keep_artifacts_days = keep_messages_days = 0)")

    @inlineCallbacks
    def purge(self):
        """One retention purge; logs its counts (never patient data). A failure is logged and
        the next run goes on (the loop must not stop)."""
        artifacts_before, messages_before = cutoffs(self.ctx.config.journal, self.now())
        try:
            report = yield self.ctx.journal.purge(artifacts_before=artifacts_before,
                                                  messages_before=messages_before)
        except Exception as error:
            log.error("journal purge failed: %s", error)
            return None
        log.info("journal retention: %s", report.summary())
        return report

    def stopService(self):
        super().stopService()
        if self.purging is not None and self.purging.running:
            self.purging.stop()   # a batch under way finishes; the journal's close ends the run
        self.receiver.cancel_retries()
        if self.ctx.journal is None:   # it never opened (a damaged file): nothing to close
            return None
        d = self.receiver.drain()
        d.addCallback(lambda _: self.ctx.journal.close())
        d.addCallback(lambda _: log.info("journal closed"))
        return d


class MllpService(service.Service):
    """The MLLP (or MLLPS) listener. Stopping it stops accepting and waits for in-flight work."""

    def __init__(self, ctx: ServiceContext, receiver: Receiver):
        from bridge.mllp.protocol import MllpFactory
        settings = ctx.config.mllp
        self.ctx = ctx
        self.receiver = receiver
        self.factory = MllpFactory(receiver.handle_frame, receiver.handle_oversize,
                                   max_frame=settings.max_message_bytes,
                                   max_connections=settings.max_connections,
                                   idle_timeout=settings.idle_timeout_s or None,
                                   frame_timeout=settings.frame_timeout_s or None, clock=ctx.reactor)
        self.port = None

    def startService(self):
        super().startService()
        settings = self.ctx.config.mllp
        reactor = self.ctx.reactor
        if settings.tls_cert is not None:
            from bridge.mllp.protocol import tls_options
            options = tls_options(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            self.port = reactor.listenSSL(settings.port, self.factory, options, interface=settings.host)
            kind = "MLLPS (TLS, client certificates required)" if settings.tls_client_ca else "MLLPS (TLS)"
        else:
            self.port = reactor.listenTCP(settings.port, self.factory, interface=settings.host)
            kind = "MLLP"
        address = self.port.getHost()
        log.info("reactor: %s", type(reactor).__name__)
        log.info("%s listening on %s:%d; journal at %s; ack mode %s", kind, address.host, address.port,
                 getattr(self.ctx.journal, "path", "?"), self.ctx.config.ack.mode)

    def stopService(self):
        super().stopService()
        d = defer.maybeDeferred(self.port.stopListening) if self.port else defer.succeed(None)
        self.receiver.stop_gateway_waits()
        d.addCallback(lambda _: self.receiver.drain())

        def close_connections(_):
            for connection in list(self.factory.connections):
                connection.transport.loseConnection()

        d.addCallback(close_connections)
        return d


class BridgeService(service.MultiService):
    """The top service; its children stop in reverse order: listener, journal, worker pool."""

    def __init__(self, reactor):
        super().__init__()
        self.reactor = reactor
        self.context: ServiceContext | None = None
        self.receiver: Receiver | None = None
        self.listener: MllpService | None = None

    def startService(self):
        super().startService()
        # Once every child has started (whatever the stages need is in place), the work
        # journaled but not finished before the last stop is processed.
        self.resumed = self.receiver.resume()
        self.resumed.addErrback(lambda f: log.error("resuming unfinished messages failed: %s",
                                                    f.getErrorMessage()))

    @property
    def mllp_port(self) -> int:
        """The port the MLLP listener is bound to (after start; useful with port 0)."""
        return self.listener.port.getHost().port

    @inlineCallbacks
    def stopService(self):
        # twist re-raises SIGTERM/SIGINT at exit (status -15); interface.md wants a graceful
        # stop to exit 0, so the remembered signal is dropped (a private attribute of the
        # reactor, hence the getattr).
        if getattr(self.reactor, "_exitSignal", None) is not None:
            self.reactor._exitSignal = None
        # One child after the other, last started first (MultiService stops them all at
        # once): the status page and the listener stop taking work and wait for the work in
        # flight, which still needs the journal, the gateway client and the workers.
        service.Service.stopService(self)
        for child in reversed(list(self)):
            try:
                yield defer.maybeDeferred(child.stopService)
            except Exception:  # one child's failure must not keep the others running
                log.exception("stopping %s failed", type(child).__name__)


class Options(usage.Options):
    """``twist fse-bridge`` options."""

    optParameters = [["config", "c", None, "configuration file (default: ./etc/bridge.toml, else the checkout's)"]]

    def postOptions(self):
        # Before twist installs its default reactor: the bridge runs on asyncio's.
        install_asyncio_reactor()
        # Under twist the log is Twisted's: send the modules' logging records there.
        root = logging.getLogger()
        if not root.handlers:
            root.addHandler(_TwistedLogHandler())
            root.setLevel(logging.INFO)


class _TwistedLogHandler(logging.Handler):
    """Forwards stdlib logging records to twisted.logger (used under ``twist``)."""

    def emit(self, record):
        from twisted.logger import Logger, LogLevel
        level = (LogLevel.critical if record.levelno >= logging.CRITICAL else
                 LogLevel.error if record.levelno >= logging.ERROR else
                 LogLevel.warn if record.levelno >= logging.WARNING else
                 LogLevel.info if record.levelno >= logging.INFO else LogLevel.debug)
        Logger(namespace=record.name).emit(level, "{message}", message=self.format(record))


def makeService(config, reactor=None, *, handler: Handler = route_message,
                open_journal: Callable[[], Journal] | None = None) -> service.MultiService:
    """The bridge as a MultiService: worker threads, worker processes, publishing (stages,
    gateway), journal, MLLP listener, status page (started in that order).

    *config* is a :class:`Config`, or :class:`Options` (whose ``config`` names the file).
    A *handler* other than the pipeline's gets its messages parsed only, not routed and mapped.
    """
    if not isinstance(config, Config):
        from bridge import config as config_module
        config = config_module.load(config.get("config") if config else None)
    if reactor is None:
        from twisted.internet import reactor
    ctx = ServiceContext(config=config, reactor=reactor)
    top = BridgeService(reactor)
    pool = WorkerPoolService(reactor, size=max(2, min(8, os.cpu_count() or 2)))
    ctx.run_blocking = pool.run_blocking
    pool.setServiceParent(top)
    if config.workers.processes:
        processes = WorkerPool(reactor, config, count=config.workers.processes,
                               timeout_s=config.workers.timeout_s)
        processes.setServiceParent(top)
        ctx.workers = processes
        ctx.run_stage = processes.call
    else:
        # No worker processes: the same stages in threads (sharing the reactor's CPU), with
        # what the Publisher loaded at start (the parse alone needs only the configuration).
        fallback = Stages(config)
        ctx.run_stage = lambda fn, *args: pool.run_blocking(fn, ctx.publisher or fallback, *args)
    analyser = analysis_module.analyse if handler is route_message else analysis_module.summarise
    ctx.analyse = functools.partial(ctx.run_stage, analyser)
    if handler is route_message:
        # Before the journal: resumed messages need the pipeline's stages and gateway.
        from bridge.publish.context import PublishingService
        PublishingService(ctx).setServiceParent(top)
    receiver = Receiver(ctx, handler)
    if open_journal is None:
        def open_journal():
            from bridge.journal.sqlite import SqliteJournal
            # A quick integrity check first: a damaged journal stops the start (exit 4).
            return SqliteJournal(config.journal.path, reactor=reactor, check=True)
    JournalService(ctx, receiver, open_journal).setServiceParent(top)
    top.listener = MllpService(ctx, receiver)
    top.listener.setServiceParent(top)
    from bridge.web.site import WebService
    WebService(ctx, top.listener).setServiceParent(top)
    top.receiver = receiver
    top.context = ctx
    return top
