"""Receiver: journal first, resend rules, routing, ack modes (in process, :memory: journal)."""


import hl7 as python_hl7
import pytest
import pytest_twisted
from twisted.internet import defer

from bridge import config as config_module
from bridge.errors import MissingField
from bridge.journal.sqlite import SqliteJournal
from bridge.model import AckCode
from bridge.outcome import Outcome
from bridge.service.context import ServiceContext
from bridge.service.receiver import Receiver, route_message
from fse_helpers import CORPUS, config_table, make_oru


def reactor():
    from twisted.internet import reactor
    return reactor


def msa(ack: bytes, n=0):
    segments = [s for s in ack.split(b"\r") if s.startswith(b"MSA")]
    return segments[n].decode("iso-8859-1").split("|")


class Gate:
    """A handler the test releases by hand."""

    def __init__(self):
        self.calls = []

    def __call__(self, ctx, entry, analysis):
        d = defer.Deferred()
        self.calls.append((entry, analysis, d))
        return d


@pytest.fixture
def pipeline_stub(monkeypatch):
    """bridge.publish.pipeline.process replaced by one answering AA: these tests are about the service."""
    calls = []

    def process(ctx, entry, analysis):
        calls.append(analysis.control_id)
        return defer.succeed(Outcome(code=AckCode.AA, text="received"))

    monkeypatch.setattr("bridge.publish.pipeline.process", process)
    return calls


@pytest.fixture
def make_receiver(tmp_path, pipeline_stub):
    made = []

    def make(handler=route_message, **sections):
        cfg = config_module.from_dict(config_table(tmp_path, **sections), base_dir=tmp_path)
        ctx = ServiceContext(config=cfg, reactor=reactor(), journal=SqliteJournal(":memory:", reactor=reactor()))
        made.append(ctx.journal)
        return Receiver(ctx, handler)

    yield make
    for journal in made:
        journal.close()


@pytest_twisted.inlineCallbacks
def test_oru_goes_to_the_pipeline_and_is_journaled(make_receiver, pipeline_stub):
    r = make_receiver()
    ack = yield r.handle_frame(make_oru("P1").encode(), "peer")
    assert msa(ack)[:3] == ["MSA", "AA", "P1"] and pipeline_stub == ["P1"]
    yield r.handle_frame(make_oru("P2", message_type="MDM", event="T02").encode(), "peer")
    assert pipeline_stub == ["P1", "P2"]
    [entry] = yield r.ctx.journal.find("P1")
    assert entry.outcome == "AA" and entry.ack == ack and entry.state == "done"
    states = [t.state for t in (yield r.ctx.journal.transitions(entry.id))]
    assert states == ["received", "done"]


@pytest_twisted.inlineCallbacks
def test_other_types_get_ar_200_and_201(make_receiver):
    r = make_receiver()
    ack = yield r.handle_frame(make_oru("T1", message_type="ADT", event="A01").encode(), "peer")
    assert msa(ack)[1] == "AR" and b"|200^" in ack and b"MSH^1^9^1" in ack
    ack = yield r.handle_frame(make_oru("T2", event="R30").encode(), "peer")
    assert msa(ack)[1] == "AR" and b"|201^" in ack


@pytest_twisted.inlineCallbacks
def test_undecodable_bytes_get_ae_naming_msh18(make_receiver):
    r = make_receiver()
    raw = make_oru("U1", charset="UNICODE UTF-8", name="NICCOLÒ").encode("iso-8859-1")
    ack = yield r.handle_frame(raw, "peer")
    assert msa(ack)[:3] == ["MSA", "AE", "U1"] and b"MSH^1^18" in ack
    [entry] = yield r.ctx.journal.find("U1")
    assert entry.raw == raw and entry.outcome == "AE"


@pytest_twisted.inlineCallbacks
def test_garbage_frame_gets_an_answer(make_receiver):
    r = make_receiver()
    ack = yield r.handle_frame(b"\x00\x01 hello", "peer")
    assert msa(ack)[1] == "AE"


@pytest_twisted.inlineCallbacks
def test_resend_in_flight_waits_and_gets_the_same_ack(make_receiver):
    gate = Gate()
    r = make_receiver(gate)
    raw = make_oru("R1").encode()
    first = r.handle_frame(raw, "a")
    yield _until(lambda: gate.calls)
    second = r.handle_frame(raw, "b")
    yield r.ctx.journal.get(1)   # let the resend be admitted
    assert not second.called and len(gate.calls) == 1
    gate.calls[0][2].callback(Outcome(code=AckCode.AA, text="published"))
    a1, a2 = yield defer.gatherResults([first, second])
    assert a1 == a2 and msa(a1)[1:4] == ["AA", "R1", "published"]
    assert len(gate.calls) == 1 and len((yield r.ctx.journal.entries())) == 1


@pytest_twisted.inlineCallbacks
def test_resend_after_ae_replays_and_after_ar_reprocesses(make_receiver):
    outcomes = [Outcome.from_error(MissingField("no patient", location="PID^1^3")),
                Outcome(code=AckCode.AR, text="later"), Outcome(code=AckCode.AA, text="ok")]
    calls = []

    def handler(ctx, entry, analysis):
        calls.append(entry.id)
        return defer.succeed(outcomes.pop(0))

    r = make_receiver(handler)
    first = yield r.handle_frame(make_oru("E1").encode(), "p")
    again = yield r.handle_frame(make_oru("E1").encode(), "p")
    assert first == again and msa(first)[1] == "AE" and calls == [1]
    ar = yield r.handle_frame(make_oru("E2").encode(), "p")
    retried = yield r.handle_frame(make_oru("E2").encode(), "p")
    assert msa(ar)[1] == "AR" and msa(retried)[1] == "AA" and len(calls) == 3


@pytest_twisted.inlineCallbacks
def test_duplicate_control_id_with_other_bytes_is_ae_205(make_receiver):
    r = make_receiver()
    yield r.handle_frame(make_oru("D1").encode(), "p")
    ack = yield r.handle_frame(make_oru("D1", name="BIANCHI^ANNA").encode(), "p")
    assert msa(ack)[1] == "AE" and b"|205^" in ack and b"MSH^1^10" in ack


@pytest_twisted.inlineCallbacks
def test_commit_mode_answers_once_journaled(make_receiver):
    gate = Gate()
    r = make_receiver(gate, ack={"mode": "commit"})
    ack = yield r.handle_frame(make_oru("K1").encode(), "p")
    assert msa(ack)[1] == "AA"                    # answered while processing goes on
    yield _until(lambda: gate.calls)
    again = yield r.handle_frame(make_oru("K1").encode(), "p")
    assert again == ack and len(gate.calls) == 1
    gate.calls[0][2].callback(Outcome(code=AckCode.AE, text="bad"))
    yield r.drain()
    entry = yield r.ctx.journal.get(1)
    assert entry.outcome == "AE" and entry.ack == ack and entry.ack_code == "AA"


@pytest_twisted.inlineCallbacks
def test_enhanced_mode_gets_accept_ack(make_receiver):
    gate = Gate()
    r = make_receiver(gate)
    ack = yield r.handle_frame(make_oru("H1", accept_ack="AL", application_ack="NE").encode(), "p")
    assert msa(ack)[1] == "CA"
    yield _until(lambda: gate.calls)
    gate.calls[0][2].callback(Outcome(code=AckCode.AA))
    yield r.drain()


@pytest_twisted.inlineCallbacks
def test_handler_crash_is_ar_207(make_receiver):
    def broken(ctx, entry, analysis):
        raise ZeroDivisionError("bug")

    r = make_receiver(broken)
    ack = yield r.handle_frame(make_oru("X1").encode(), "p")
    assert msa(ack)[1] == "AR" and b"|207^" in ack


@pytest_twisted.inlineCallbacks
def test_batch_is_answered_in_one_frame_inside_bhs_bts(make_receiver):
    r = make_receiver()
    raw = ("BHS|^~\\&|LIS|OSP|FSE|REG|2024||||B1\r" + make_oru("A1") + make_oru("A2", message_type="ADT",
           event="A01") + "BTS|2\r").encode()
    ack = yield r.handle_frame(raw, "p")
    assert ack.startswith(b"BHS|") and ack.endswith(b"BTS|2\r")
    assert [msa(ack, i)[1:3] for i in range(2)] == [["AA", "A1"], ["AR", "A2"]]


@pytest_twisted.inlineCallbacks
def test_resume_processes_unfinished_entries(make_receiver):
    from bridge.journal import Received
    r = make_receiver()
    raw = make_oru("S1").encode()
    admission = yield r.ctx.journal.admit(Received(raw=raw, msh4="OSP", msh10="S1"))
    yield r.resume()
    entry = yield r.ctx.journal.get(admission.entry.id)
    assert entry.outcome == "AA" and msa(entry.ack)[2] == "S1"


@pytest_twisted.inlineCallbacks
def test_every_corpus_message_gets_one_ack_per_message(make_receiver):
    from bridge.hl7.message import read_header, split_batch
    r = make_receiver()
    for path in sorted(CORPUS.glob("*.hl7")):
        raw = path.read_bytes()
        ack = yield r.handle_frame(raw, "corpus")
        expected = [read_header(m).control_id for m in split_batch(raw).messages]
        got = [s.split(b"|")[2].decode("iso-8859-1") for s in ack.split(b"\r") if s.startswith(b"MSA")]
        assert got == expected, path.name
        for message in python_hl7.split_file(ack.decode("iso-8859-1")):
            assert python_hl7.parse(message).segment("MSA")


def _until(condition):
    """Bounded poll of a real condition on the reactor's clock (no sleeps)."""
    from twisted.internet import task
    d = defer.Deferred()

    def check(n=[0]):
        n[0] += 1
        if condition():
            loop.stop()
            d.callback(None)
        elif n[0] > 500:
            loop.stop()
            d.errback(AssertionError("condition not reached"))

    loop = task.LoopingCall(check)
    loop.start(0.01)
    return d


@pytest_twisted.inlineCallbacks
def test_resume_answers_a_journaled_conflict_with_ae_205(make_receiver):
    from bridge.journal import Received
    r = make_receiver()
    first = yield r.ctx.journal.admit(Received(raw=make_oru("S2").encode(), msh4="OSP", msh10="S2"))
    yield r.ctx.journal.finish(first.entry.id, Outcome(code=AckCode.AA), b"MSH|^~\\&\rMSA|AA|S2\r")
    # journaled, then a crash before its AE 205 was recorded
    other = yield r.ctx.journal.admit(Received(raw=make_oru("S2", name="NERI^ADA").encode(), msh4="OSP",
                                               msh10="S2"))
    yield r.resume()
    entry = yield r.ctx.journal.get(other.entry.id)
    assert entry.outcome == "AE" and b"|205^" in entry.ack


@pytest_twisted.inlineCallbacks
def test_commit_mode_retries_what_the_gateway_could_not_take(tmp_path, pipeline_stub):
    from twisted.internet.task import Clock

    cfg = config_module.from_dict(config_table(tmp_path, ack={"mode": "commit"},
                                               gateway={"requeue_s": 10, "requeue_max_s": 15}),
                                  base_dir=tmp_path)
    ctx = ServiceContext(config=cfg, reactor=reactor(), journal=SqliteJournal(":memory:", reactor=reactor()))
    answers = [Outcome(code=AckCode.AR, text="gateway down", operation="create"),
               Outcome(code=AckCode.AR, text="gateway down", operation="create"),
               Outcome(code=AckCode.AA, text="X-Cart-id 1", operation="create")]
    calls = []

    def handler(ctx, entry, analysis):
        calls.append(entry.id)
        return defer.succeed(answers[len(calls) - 1])

    clock = Clock()
    r = Receiver(ctx, handler, clock=clock)
    try:
        ack = yield r.handle_frame(make_oru("RQ1").encode(), "peer")
        assert msa(ack)[1] == "AA"
        yield r.drain(5)
        [entry] = yield ctx.journal.find("RQ1")
        assert entry.outcome is None and entry.state == "waiting" and len(calls) == 1
        assert [e.id for e in (yield ctx.journal.unfinished())] == [entry.id]   # a restart resumes it
        clock.advance(10)
        yield r.drain(5)
        assert len(calls) == 2 and (yield ctx.journal.get(entry.id)).state == "waiting"
        clock.advance(14)   # the second delay is 15 s (doubled, capped)
        assert len(calls) == 2
        clock.advance(1)
        yield r.drain(5)
        yield ctx.journal.get(entry.id)   # after the outcome's commit
        done = yield ctx.journal.get(entry.id)
        assert len(calls) == 3 and done.outcome == "AA" and done.ack == ack
    finally:
        ctx.journal.close()
