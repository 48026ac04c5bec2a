"""MllpProtocol / MllpFactory over StringTransport and Clock (no sockets, no sleeps)."""

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from bridge.mllp.protocol import MllpDecoder, MllpFactory, frame


class Handler:
    """Answers each frame with a Deferred the test fires when it wants."""

    def __init__(self):
        self.calls = []
        self.oversize = []

    def handle_frame(self, payload, peer):
        d = defer.Deferred()
        self.calls.append((payload, d))
        return d

    def handle_oversize(self, head, peer):
        self.oversize.append(head)
        return b"AR for " + head[:5]


def connect(factory):
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    return proto, transport


def answers(transport):
    return list(MllpDecoder().feed(transport.value()))


def make(handler=None, clock=None, **kw):
    handler = handler or Handler()
    factory = MllpFactory(handler.handle_frame, handler.handle_oversize, clock=clock or task.Clock(), **kw)
    return handler, factory


def test_answers_in_order_when_processing_finishes_out_of_order():
    handler, factory = make()
    proto, transport = connect(factory)
    proto.dataReceived(frame(b"one") + frame(b"two") + frame(b"three"))
    assert [p for p, _ in handler.calls] == [b"one", b"two", b"three"]
    handler.calls[2][1].callback(b"ack3")
    handler.calls[1][1].callback(b"ack2")
    assert transport.value() == b""
    handler.calls[0][1].callback(b"ack1")
    assert answers(transport) == [b"ack1", b"ack2", b"ack3"]
    assert transport.connected


def test_frame_split_over_many_reads():
    handler, factory = make()
    proto, transport = connect(factory)
    data = frame(b"MSH|whole message\r")
    for i in range(len(data)):
        proto.dataReceived(data[i:i + 1])
    assert [p for p, _ in handler.calls] == [b"MSH|whole message\r"]


def test_oversize_answers_ar_after_earlier_answers_then_closes():
    handler, factory = make(max_frame=20)
    proto, transport = connect(factory)
    proto.dataReceived(frame(b"small") + frame(b"MSH|" + b"x" * 50))
    assert handler.oversize and handler.oversize[0].startswith(b"MSH|")
    assert not transport.disconnecting        # the first answer is still due
    proto.dataReceived(frame(b"ignored after refusal"))
    assert len(handler.calls) == 1
    handler.calls[0][1].callback(b"ack-small")
    assert answers(transport) == [b"ack-small", b"AR for MSH|x"]
    assert transport.disconnecting


def test_oversize_frame_is_read_to_its_end_before_closing():
    # Closing with its rest unread would send a reset, which can destroy the AR on its way.
    clock = task.Clock()
    handler, factory = make(max_frame=20, clock=clock, frame_timeout=5)
    proto, transport = connect(factory)
    proto.dataReceived(b"\x0bMSH|" + b"x" * 50)
    assert answers(transport) == [b"AR for MSH|x"] and not transport.disconnecting
    proto.dataReceived(b"y" * 100)
    assert not transport.disconnecting
    proto.dataReceived(b"y\x1c\r")
    assert transport.disconnecting and len(handler.calls) == 0
    # A rest that never ends is bounded by the frame deadline.
    proto, transport = connect(factory)
    proto.dataReceived(b"\x0bMSH|" + b"x" * 50)
    clock.advance(3)
    proto.dataReceived(b"y" * 100)
    assert not transport.disconnecting
    clock.advance(2.5)
    assert transport.disconnecting


def test_idle_timeout_closes_and_waits_for_own_answers():
    clock = task.Clock()
    handler, factory = make(clock=clock, idle_timeout=30)
    proto, transport = connect(factory)
    proto.dataReceived(frame(b"slow"))
    clock.advance(31)                          # our answer pending: not idle
    assert not transport.disconnecting
    handler.calls[0][1].callback(b"ack")
    clock.advance(29)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting


def test_idle_timeout_resets_on_frame_data_not_on_noise():
    clock = task.Clock()
    _, factory = make(clock=clock, idle_timeout=10, frame_timeout=None)
    proto, transport = connect(factory)
    proto.dataReceived(b"\x0bMSH|")
    for _ in range(5):
        clock.advance(8)
        proto.dataReceived(b"x")
    assert not transport.disconnecting
    clock.advance(10)
    assert transport.disconnecting
    # Bytes outside any frame (a peer sending noise) are not activity.
    proto, transport = connect(factory)
    for _ in range(2):
        clock.advance(6)
        proto.dataReceived(b"\r\nnoise")
    assert transport.disconnecting


def test_frame_deadline_closes_a_dripping_peer():
    clock = task.Clock()
    handler, factory = make(clock=clock, idle_timeout=600, frame_timeout=5)
    proto, transport = connect(factory)
    proto.dataReceived(frame(b"first"))
    handler.calls[0][1].callback(b"ack")
    proto.dataReceived(b"\x0bMSH")
    for _ in range(4):
        clock.advance(1)
        proto.dataReceived(b"x")   # each byte would reset an idle timer
    assert not transport.disconnecting
    clock.advance(1.5)
    assert transport.disconnecting and answers(transport) == [b"ack"]


def test_frame_deadline_counts_from_each_frame_start():
    clock = task.Clock()
    handler, factory = make(clock=clock, frame_timeout=5)
    proto, transport = connect(factory)
    for n in range(4):
        proto.dataReceived(b"\x0bMSH")
        clock.advance(3)
        proto.dataReceived(b"|%d\x1c\r" % n)   # each frame in 3 s: all within the deadline
        handler.calls[n][1].callback(b"ack%d" % n)
    clock.advance(10)
    assert not transport.disconnecting and len(answers(transport)) == 4


def test_at_the_limit_the_longest_idle_connection_makes_room():
    clock = task.Clock()
    handler, factory = make(max_connections=2, clock=clock)
    p1, t1 = connect(factory)
    clock.advance(1)
    p2, t2 = connect(factory)
    clock.advance(1)
    p1.dataReceived(frame(b"a"))
    handler.calls[0][1].callback(b"ack-a")   # p1 has worked since p2 came
    p3, t3 = connect(factory)
    assert t2.disconnecting and not t1.disconnecting and not t3.disconnecting
    assert factory.connections == {p1, p3}


def test_at_the_limit_connections_waiting_for_answers_are_kept():
    handler, factory = make(max_connections=2)
    (p1, t1), (p2, t2) = connect(factory), connect(factory)
    p1.dataReceived(frame(b"a"))
    p2.dataReceived(frame(b"b"))
    p3, t3 = connect(factory)
    assert t3.disconnecting and not t1.disconnecting and not t2.disconnecting
    handler.calls[0][1].callback(b"ack")
    p4, t4 = connect(factory)
    assert t1.disconnecting and not t4.disconnecting and len(factory.connections) == 2


def test_disconnect_mid_frame_and_late_answers_are_dropped():
    handler, factory = make()
    proto, transport = connect(factory)
    proto.dataReceived(frame(b"whole") + b"\x0bhalf a fra")
    transport.loseConnection()
    proto.connectionLost(None)
    handler.calls[0][1].callback(b"late")   # no crash, nowhere to write
    assert len(handler.calls) == 1
    assert proto not in factory.connections


def test_a_failing_handler_does_not_block_later_answers():
    handler, factory = make()
    proto, transport = connect(factory)
    proto.dataReceived(frame(b"a") + frame(b"b"))
    handler.calls[0][1].errback(RuntimeError("bug"))
    handler.calls[1][1].callback(b"ack-b")
    assert answers(transport) == [b"ack-b"]


def test_reading_pauses_while_too_many_answers_are_due():
    handler, factory = make(max_pending=4)
    proto, transport = connect(factory)
    proto.dataReceived(frame(b"1") + frame(b"2") + frame(b"3"))
    assert transport.producerState == "producing"
    proto.dataReceived(frame(b"4") + frame(b"5"))
    assert transport.producerState == "paused"
    for n, (_, d) in enumerate(handler.calls[:3]):
        d.callback(b"ack%d" % n)
    assert transport.producerState == "producing"
    for n, (_, d) in enumerate(handler.calls[3:], start=3):
        d.callback(b"ack%d" % n)
    assert answers(transport) == [b"ack0", b"ack1", b"ack2", b"ack3", b"ack4"]
