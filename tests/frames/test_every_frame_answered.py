"""Every well-framed frame gets exactly one readable answer (issue 14, item 1).

The real path: MllpProtocol over a StringTransport, the real Receiver with a
journal, the real decode and parse; only the document pipeline is replaced by a
handler answering AA (these tests are about framing and answering).
"""

import re

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from bridge import config as config_module
from bridge.hl7.message import declared_charset
from bridge.journal import Received
from bridge.journal.sqlite import SqliteJournal
from bridge.mllp.protocol import END, MllpDecoder, MllpFactory, frame
from bridge.model import AckCode
from bridge.outcome import Outcome
from bridge.service.context import ServiceContext
from bridge.service.receiver import Receiver
from fse_helpers import CORPUS, config_table, make_oru

MAX_FRAME = 6000
CORPUS_MESSAGES = [p.read_bytes() for p in sorted(CORPUS.glob("*.hl7"))]
BAD_CHARSETS = [b"ROT13", b"HEX", b"BASE64", b"QUOPRI", b"UU", b"ZLIB", b"BZ2", b"IDNA", b"PUNYCODE",
                b"UTF-16", b"cp037", b"UTF-8\x00", b"UNDEFINED", b"\xff\xfe", b"8859/1~ROT13", b""]
BAD_VERSIONS = ["².7".encode(), b"2.5\x00", b"\xb2.7", b"2..5", b"v2.5", b"", b"99999999999999999999"]
CODES = "|".join(c.value for c in AckCode)


def reactor():
    from twisted.internet import reactor
    return reactor


def accept_all(ctx, entry, analysis):
    return defer.succeed(Outcome(code=AckCode.AA, text="received"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A Receiver (with its journal) behind an MllpFactory, shared by the examples."""
    folder = tmp_path_factory.mktemp("frames")
    cfg = config_module.from_dict(config_table(folder, mllp={"max_message_bytes": MAX_FRAME}), base_dir=folder)
    ctx = ServiceContext(config=cfg, reactor=reactor(), journal=SqliteJournal(":memory:", reactor=reactor()))
    receiver = Receiver(ctx, accept_all)
    pending = []

    def handle_frame(payload, peer):
        d = receiver.handle_frame(payload, peer)
        pending.append(d)
        return d

    def handle_oversize(head, peer):
        return receiver.handle_oversize(head, peer)

    factory = MllpFactory(handle_frame, handle_oversize, max_frame=MAX_FRAME, clock=task.Clock())
    yield receiver, factory, pending
    ctx.journal.close()


@defer.inlineCallbacks
def exchange(stack, payload: bytes):
    """Send one frame on a new connection; a Deferred of the answer frames written back."""
    receiver, factory, pending = stack
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    proto.dataReceived(frame(payload))
    while pending:
        yield pending.pop()
    written = transport.value()
    proto.connectionLost(None)
    return list(MllpDecoder(64 * 1024 * 1024).feed(written))


def readable(answer: bytes) -> list[str]:
    """The answer's MSA segments, decoded in the charset its own MSH-18 names (ASCII when empty)."""
    assert answer.startswith(b"MSH") or answer.startswith(b"FHS") or answer.startswith(b"BHS")
    sep = answer[3:4].decode("ascii")
    msh = next(line for line in answer.split(b"\r") if line.startswith(b"MSH"))
    fields = msh.split(sep.encode())
    named = fields[17].decode("ascii") if len(fields) > 17 else ""
    codec = declared_charset(named) if named else "iso-8859-1"
    assert codec is not None, named
    text = answer.decode(codec)
    msas = [line for line in text.split("\r") if line.startswith("MSA")]
    assert all(re.match(rf"MSA{re.escape(sep)}({CODES}){re.escape(sep)}", m) for m in msas), msas
    return msas


def mutate(message: bytes, edits) -> bytes:
    data = bytearray(message)
    for where, replacement in edits:
        at = int(where * len(data))
        data[at:at + len(replacement)] = replacement
    return bytes(data)


def with_field(message: bytes, n: int, value: bytes) -> bytes:
    """*message* with MSH-n set to *value* (the first line split at its separator)."""
    head, sep, rest = message.partition(b"\r")
    fields = head.split(head[3:4]) if len(head) > 3 else [head]
    fields += [b""] * (n - len(fields))
    fields[n - 1] = value
    return head[3:4].join(fields) + sep + rest


corpus_based = st.builds(
    mutate, st.sampled_from(CORPUS_MESSAGES),
    st.lists(st.tuples(st.floats(0, 0.999), st.binary(min_size=1, max_size=8)), max_size=6))
bad_header = st.one_of(
    st.builds(with_field, st.sampled_from(CORPUS_MESSAGES), st.just(18), st.sampled_from(BAD_CHARSETS)),
    st.builds(with_field, st.sampled_from(CORPUS_MESSAGES), st.just(12), st.sampled_from(BAD_VERSIONS)),
    st.builds(with_field, st.sampled_from(CORPUS_MESSAGES), st.just(2), st.binary(max_size=6)))
msh_garbage = st.builds(lambda b: b"MSH|" + b, st.binary(max_size=400))
batches = st.builds(lambda members: b"BHS|^~\\&|LIS|OSP\r" + b"".join(members) + b"BTS|9\r",
                    st.lists(st.one_of(bad_header, msh_garbage), min_size=1, max_size=3))
payloads = st.one_of(st.binary(max_size=600), corpus_based, bad_header, msh_garbage, batches)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=payloads)
@defer.inlineCallbacks
def test_every_frame_gets_exactly_one_readable_answer(stack, payload):
    payload = payload.replace(END, b"")   # a well-formed frame: the end byte only at its end
    answers = yield exchange(stack, payload)
    assert len(answers) == 1
    msas = readable(answers[0])
    assert len(msas) >= 1


@pytest_twisted.inlineCallbacks
def test_a_batch_answers_every_member_ar_with_empty_msa2_where_msh10_is_missing(stack):
    receiver = stack[0]
    members = [make_oru("B1"), make_oru(""), make_oru("B3", charset="ROT13"), make_oru("B4", version="².7"),
               make_oru("B5", charset="UTF-16")]
    payload = ("BHS|^~\\&|LIS|OSP|FSE|REG|20240101||||BX\r" + "".join(members) + "BTS|5\r").encode("utf-8")
    answer = yield receiver.handle_frame(payload, "peer")
    msas = [line.split("|") for line in answer.decode("iso-8859-1").split("\r") if line.startswith("MSA")]
    assert [m[1:3] for m in msas] == [["AA", "B1"], ["AR", ""], ["AE", "B3"], ["AR", "B4"], ["AE", "B5"]]
    assert b"MSH^1^10" in answer and b"MSH^1^18" in answer and b"MSH^1^12" in answer
    assert answer.startswith(b"BHS") and b"\rBTS|5\r" in answer


@pytest_twisted.inlineCallbacks
def test_an_oversize_frame_whose_head_has_a_bad_msh18_is_answered_in_ascii(stack):
    message = with_field(make_oru("OV1").encode(), 18, b"ROT13") + b"NTE|1||" + b"x" * MAX_FRAME + b"\r"
    [answer] = yield exchange(stack, message)
    msas = readable(answer)
    assert msas[0].split("|")[1:3] == ["AR", "OV1"]
    answer.decode("ascii")


@pytest_twisted.inlineCallbacks
def test_a_journaled_poison_message_is_closed_and_recovery_goes_on(stack):
    """MSH-2 unusable and MSH-12 "².7": its ACK used to fail (int('²')), leaving the entry
    unfinished for ever and stopping every resume at it."""
    receiver = stack[0]
    journal = receiver.ctx.journal
    poison = make_oru("PZ1", version="².7").replace("^~\\&", "\u00b2\u00b2", 1).encode("utf-8")
    ids = []
    for raw, msh10 in [(poison, "PZ1"), (make_oru("PZ2").encode(), "PZ2"), (make_oru("PZ3").encode(), "PZ3")]:
        ids.append((yield journal.admit(Received(raw=raw, msh4="OSP", msh10=msh10))).entry.id)
    yield receiver.resume()
    entries = []
    for i in ids:
        entries.append((yield journal.get(i)))
    assert all(e.finished for e in entries)
    assert [e.outcome for e in entries] == ["AR", "AA", "AA"]
    assert entries[0].ack.startswith(b"MSH") and b"MSA|AR|PZ1" in entries[0].ack
