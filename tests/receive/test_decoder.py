"""MllpDecoder: framing alone (architecture.md step 1; style.md "Tests")."""

import pytest
from hypothesis import given, settings, strategies as st

from bridge.errors import FrameTooLarge
from bridge.mllp.protocol import MllpDecoder, frame

A = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\rPID|1\r"
B = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|2|P|2.5\rOBX|1|TX|||\xc3\xa0\r"


def feed_all(decoder, pieces):
    out = []
    for piece in pieces:
        out += list(decoder.feed(piece))
    return out


def test_split_at_every_byte_position():
    stream = frame(A) + frame(B)
    for cut in range(len(stream) + 1):
        assert feed_all(MllpDecoder(), [stream[:cut], stream[cut:]]) == [A, B], cut


def test_byte_by_byte():
    stream = frame(A) + frame(B)
    assert feed_all(MllpDecoder(), [stream[i:i + 1] for i in range(len(stream))]) == [A, B]


def test_pipelined_frames_in_one_read():
    assert list(MllpDecoder().feed(frame(A) * 5 + frame(B))) == [A] * 5 + [B]


def test_stray_bytes_and_line_ends_between_frames_are_dropped():
    decoder = MllpDecoder()
    stream = b"\r\n" + frame(A) + b"\n\r\njunk\x00" + frame(B) + b"\r\n"
    assert list(decoder.feed(stream)) == [A, B]
    assert decoder.dropped == len(b"junk\x00")


def test_end_byte_without_cr_still_ends_the_frame():
    assert list(MllpDecoder().feed(b"\x0b" + A + b"\x1c\x0b" + B + b"\x1c")) == [A, B]


def test_start_byte_inside_a_frame_is_data():
    # ruby-hl7-9 and ruby-hl7-11 of the public corpus carry a stray 0x0B.
    assert list(MllpDecoder().feed(frame(A + b"\x0b\r") + frame(B))) == [A + b"\x0b\r", B]


def test_pending_reports_a_half_frame():
    decoder = MllpDecoder()
    assert list(decoder.feed(b"\x0b" + A[:10])) == []
    assert decoder.pending == 10


def test_oversize_raises_after_earlier_frames_and_keeps_the_head():
    decoder = MllpDecoder(max_frame=len(A))
    got = []
    with pytest.raises(FrameTooLarge) as info:
        for payload in decoder.feed(frame(A) + frame(A + b"OBX|1\r")):
            got.append(payload)
    assert got == [A]
    assert info.value.head.startswith(b"MSH|^~\\&|A|B")


def test_oversize_across_reads_then_recovers():
    decoder = MllpDecoder(max_frame=100)
    with pytest.raises(FrameTooLarge):
        feed_all(decoder, [b"\x0b" + b"x" * 60, b"y" * 60])
    # The rest of the oversized frame is skipped; the next frame is whole.
    assert feed_all(decoder, [b"z" * 500 + b"\x1c\r", frame(A)]) == [A]


def test_exactly_the_limit_is_accepted():
    assert list(MllpDecoder(max_frame=len(A)).feed(frame(A))) == [A]


payloads = st.binary(max_size=200).map(lambda b: b.replace(b"\x1c", b""))


@settings(max_examples=300, deadline=None)
@given(st.lists(payloads, min_size=1, max_size=6), st.data())
def test_any_split_yields_the_same_frames(messages, data):
    stream = b"".join(b"\r\n" + frame(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    assert feed_all(MllpDecoder(), pieces) == messages


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 64))
def test_decoder_raises_only_frame_too_large(pieces, limit):
    decoder = MllpDecoder(max_frame=limit)
    for piece in pieces:
        try:
            for payload in decoder.feed(piece):
                assert len(payload) <= limit
        except FrameTooLarge:
            pass
