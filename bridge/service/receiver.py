"""The Receiver: frames in, answers out (interface.md, ACK contract).

architecture.md, "The way a message travels": receive, journal, then the processing hook,
then answer. :class:`Receiver` is that hook's frame side: it journals each message
(durably, before any ACK that reports success), applies the resend rules, hands
``(context, entry, analysis)`` to the handler (a Deferred of an
:class:`~bridge.outcome.Outcome`) and builds the ACK. The message is parsed (and routed and
mapped: :mod:`bridge.mapping.analysis`) in a worker process (:mod:`bridge.service.workers`)
while it is being journaled; the reactor only reads its header. ``ack.mode = "commit"`` and
enhanced-mode messages are answered once journaled; processing continues and its outcome
goes to the journal.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, inlineCallbacks

from bridge.alerts import Kind as AlertKind, raise_alert
from bridge.errors import BridgeError, DuplicateControlId, FrameTooLarge, InternalError
from bridge.hl7 import ack as answer
from bridge.hl7.message import Header, default_header, read_header, split_batch
from bridge.inflight import InFlight
from bridge.journal import Admit, Entry, Received, State
from bridge.mapping import analysis as analysis_module
from bridge.mapping.analysis import Analysis, unsupported
from bridge.model import AckCode
from bridge.outcome import Outcome
from bridge.publish import pipeline
from bridge.publish.record import classify, temporary
from bridge.service import retry
from bridge.service.context import Handler, ServiceContext
from bridge.service.workers import WorkerFailed

log = logging.getLogger(__name__)


#: How long a stopping service waits for in-flight work before closing the journal
#: (the work is journaled; a restart resumes what did not finish).
STOP_GRACE_S = 20.0
#: An outcome the journal could not write is tried again this often, until it is.
RECORD_RETRY_S = 5.0


def route_message(ctx: ServiceContext, entry: Entry, analysis: Analysis) -> Deferred:
    """The default handler: supported types go to :func:`bridge.publish.pipeline.process`, others get AR."""
    refusal = unsupported(analysis)
    if refusal is not None:
        return defer.succeed(classify(refusal))
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
        self._publish_retries: dict[int, Any] = {}
        """The scheduled next attempt of each acknowledged message not published yet."""
        self._record_retries: dict[int, Any] = {}
        """The scheduled next write of each outcome in _unrecorded."""
        self._commit_mode = ctx.config.ack.mode == "commit"
        self._default_charset = ctx.config.mllp.default_charset
        self._waiters: dict[int, list[Deferred]] = {}
        self._in_flight = InFlight()
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
        return answer.build_ack(header, classify(error), now=self._stamp())

    def handle_message(self, raw: bytes, peer: str) -> Deferred:
        """The ACK for one message; in flight (a stop waits for it) from its arrival on.

        Never fails: an unexpected error (a bug, a journal that cannot be written) is
        answered AR 207; an entry journaled before it stays unfinished, so a restart
        resumes it.
        """
        d = self._in_flight.track(self._handle_message(raw, peer))
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
            outcome = classify(error)
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
        return self._in_flight.track(self._process(entry, analysis, header))

    @inlineCallbacks
    def _process(self, entry: Entry, analysis: Analysis, header: Header):
        # No "processing" state here: the stages record their own (routed, rendered...),
        # and "received" without an outcome already means "to be processed".
        failure = None
        try:
            outcome = yield defer.maybeDeferred(self.handler, self.ctx, entry, analysis)
        except (defer.CancelledError, asyncio.CancelledError):
            # The service is stopping and cancelled a gateway call waiting to retry: the
            # entry stays unfinished (its call journaled as sent), and recovery resumes it.
            log.info("entry %d (control id %s): stopped while waiting for the gateway; left for "
                     "recovery at the next start", entry.id, entry.msh10)
            return entry.ack
        except Exception as exc:  # the one broad catch: classified; anything unexpected is AR 207, logged
            if not isinstance(exc, BridgeError):
                log.exception("processing entry %d (control id %s) failed", entry.id, entry.msh10)
            failure, outcome = exc, classify(exc)
        attempt = self._attempts.get(entry.id, 0) + 1
        decision = retry.after_processing(
            outcome, acknowledged=entry.ack is not None, temporary=temporary(failure, outcome), attempt=attempt,
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
            self._publish_retries.pop(entry.id, None)
            self.process(entry, analysis, header)

        self._publish_retries[entry.id] = self._clock.callLater(delay, again)

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
        if entry_id not in self._record_retries:
            def again():
                self._record_retries.pop(entry_id, None)
                if self.ctx.journal is not None and entry_id in self._unrecorded:
                    self._record(entry_id, *self._unrecorded.pop(entry_id))

            self._record_retries[entry_id] = self._clock.callLater(RECORD_RETRY_S, again)

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
        yield self._set_aside(entry, classify(InternalError()), f"recovery failed twice: {reason}")

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
            outcome = classify(error)
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
        return self._in_flight.track(self._resubmit(entry_id))

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
        if self.ctx.publisher is not None:
            self.ctx.publisher.client.stop_waiting()

    def cancel_retries(self) -> None:
        """On stop: the scheduled retries' entries stay unfinished; the next start resumes them."""
        for retries in (self._publish_retries, self._record_retries):
            for call in retries.values():
                if call.active():
                    call.cancel()
            retries.clear()

    def drain(self, timeout: float = STOP_GRACE_S) -> Deferred:
        """Fires when in-flight processing is over, or after *timeout* seconds."""
        if self._in_flight:
            log.info("waiting up to %ss for %d message(s) in processing", timeout, len(self._in_flight))
        return self._in_flight.drain(self.ctx.reactor, timeout)

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
