"""Recovery no message can block, and commit mode's promise kept (issue 14 items 2 and 3).

The real Receiver over a real SQLite journal; the handler stands in for the
publishing pipeline, failing the way a stage crash or a gateway outage does.
"""

import logging

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from bridge import config as config_module
from bridge.alerts import ALERTS, Kind
from bridge.errors import GatewayUnavailable, ValidationFailed
from bridge.journal import Received, State
from bridge.journal.sqlite import SqliteJournal
from bridge.model import AckCode
from bridge.outcome import Outcome
from bridge.service import retry
from bridge.service.context import ServiceContext
from bridge.service.receiver import Receiver
from fse_helpers import config_table, make_oru


def reactor():
    from twisted.internet import reactor
    return reactor


pytestmark = pytest.mark.usefixtures("fresh_alerts")


@pytest.fixture
def context(tmp_path):
    made = []

    def make(**sections):
        cfg = config_module.from_dict(config_table(tmp_path, **sections), base_dir=tmp_path)
        ctx = ServiceContext(config=cfg, reactor=reactor(), journal=SqliteJournal(":memory:", reactor=reactor()))
        made.append(ctx.journal)
        return ctx

    yield make
    for journal in made:
        journal.close()


def msa1(ack: bytes) -> str:
    return next(s for s in ack.split(b"\r") if s.startswith(b"MSA")).split(b"|")[1].decode()


# -- the decision, alone ---------------------------------------------------------------

def decide(outcome, **kw):
    args = dict(acknowledged=True, temporary=False, attempt=1, previous_failure=None,
                requeue_s=10, requeue_max_s=40)
    args.update(kw)
    return retry.after_processing(outcome, **args)


def test_a_waiting_sender_always_gets_the_outcome():
    ar = Outcome(code=AckCode.AR, text="internal error")
    assert decide(ar, acknowledged=False).next is retry.Next.FINISH
    assert decide(Outcome(code=AckCode.AA), acknowledged=True).next is retry.Next.FINISH


def test_acknowledged_then_refused_content_is_set_aside():
    ae = Outcome.from_error(ValidationFailed("schematron: rule x failed"))
    decision = decide(ae)
    assert decision.next is retry.Next.SET_ASIDE and "rule x" in decision.reason


def test_temporary_failures_are_retried_with_capped_backoff_and_one_alert():
    down = Outcome(code=AckCode.AR, text="gateway down", operation="create")
    decisions = [decide(down, temporary=True, attempt=n) for n in range(1, 7)]
    assert all(d.next is retry.Next.RETRY for d in decisions)
    assert [d.delay_s for d in decisions] == [10, 20, 40, 40, 40, 40]
    assert [d.alert for d in decisions] == [False, False, True, False, False, False]


def test_the_same_internal_error_twice_is_set_aside():
    crash = Outcome(code=AckCode.AR, text="internal error, see the service log")
    first = decide(crash)
    assert first.next is retry.Next.RETRY
    second = decide(crash, attempt=2, previous_failure=first.reason)
    assert second.next is retry.Next.SET_ASIDE and "twice" in second.reason


# -- the Receiver ---------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_a_poison_entry_does_not_stop_recovery_of_the_others(context, caplog):
    """An entry whose processing raises outside the handler (its ACK cannot be built, say)
    is set aside after two tries; every other unfinished entry is processed."""
    ctx = context()
    journal = ctx.journal
    ids = []
    for n in range(4):
        admission = yield journal.admit(Received(raw=make_oru(f"R{n}").encode(), msh10=f"R{n}"))
        ids.append(admission.entry.id)
    poison = ids[1]
    processed = []

    def handler(ctx, entry, analysis):
        processed.append(entry.id)
        return defer.succeed(Outcome(code=AckCode.AA, text="published"))

    receiver = Receiver(ctx, handler)
    real_again = receiver._again

    def again(entry, **kw):
        if entry.id == poison:
            raise ValueError("invalid literal for int() with base 10: '²'")
        return real_again(entry, **kw)

    receiver._again = again
    with caplog.at_level(logging.ERROR):
        yield receiver.resume()
    yield receiver.drain(5)
    assert sorted(processed) == [i for i in ids if i != poison]
    entry = yield journal.get(poison)
    assert entry.state == State.SET_ASIDE and entry.outcome == "AR"
    assert (yield journal.unfinished()) == []
    assert (yield journal.count_state(State.SET_ASIDE)) == 1
    assert ALERTS.counts() == {Kind.SET_ASIDE: 1}
    assert any(r.getMessage().startswith("OPERATOR ALERT") for r in caplog.records)


@pytest_twisted.inlineCallbacks
def test_commit_mode_never_closes_an_acknowledged_message_as_ar(context):
    """A stage that crashes after the CA/AA: tried again, and set aside (never AR) when it
    crashes the same way twice; the stored ACK stays the one the sender got."""
    ctx = context(ack={"mode": "commit"}, gateway={"requeue_s": 5, "requeue_max_s": 20})
    calls = []

    def handler(ctx, entry, analysis):
        calls.append(entry.id)
        raise RuntimeError("'Paragraph' object has no attribute 'blPara'")

    clock = Clock()
    receiver = Receiver(ctx, handler, clock=clock)
    ack = yield receiver.handle_frame(make_oru("CM1").encode(), "peer")
    assert msa1(ack) == "AA"
    yield receiver.drain(5)
    [entry] = yield ctx.journal.find("CM1")
    assert entry.outcome is None and entry.state == State.WAITING and len(calls) == 1
    clock.advance(5)
    yield receiver.drain(5)
    entry = yield ctx.journal.get(entry.id)
    assert len(calls) == 2 and entry.state == State.SET_ASIDE and entry.ack == ack
    assert ALERTS.counts() == {Kind.SET_ASIDE: 1}


@pytest_twisted.inlineCallbacks
def test_commit_mode_keeps_retrying_a_gateway_outage_and_tells_the_operator(context):
    ctx = context(ack={"mode": "commit"}, gateway={"requeue_s": 5, "requeue_max_s": 10})
    calls = []

    def handler(ctx, entry, analysis):
        calls.append(entry.id)
        if len(calls) < 5:
            raise GatewayUnavailable("gateway unreachable")
        return defer.succeed(Outcome(code=AckCode.AA, text="published", operation="create"))

    clock = Clock()
    receiver = Receiver(ctx, handler, clock=clock)
    ack = yield receiver.handle_frame(make_oru("CM2").encode(), "peer")
    yield receiver.drain(5)
    for _ in range(4):
        clock.advance(10)
        yield receiver.drain(5)
    [entry] = yield ctx.journal.find("CM2")
    assert len(calls) == 5 and entry.outcome == "AA" and entry.ack == ack
    assert ALERTS.counts() == {Kind.GATEWAY_DOWN: 1}


@pytest_twisted.inlineCallbacks
def test_commit_mode_sets_aside_content_refused_after_the_accept(context):
    ctx = context(ack={"mode": "commit"})

    def handler(ctx, entry, analysis):
        raise ValidationFailed("schematron: ERRORE-7 failed", location="OBX^1^5")

    receiver = Receiver(ctx, handler, clock=Clock())
    yield receiver.handle_frame(make_oru("CM3").encode(), "peer")
    yield receiver.drain(5)
    [entry] = yield ctx.journal.find("CM3")
    assert entry.state == State.SET_ASIDE and entry.outcome == "AE"
    assert ALERTS.counts() == {Kind.SET_ASIDE: 1}
