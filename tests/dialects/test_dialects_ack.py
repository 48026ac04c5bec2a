"""What the mapping leaves out reaches the sender, through `fse-bridge serve` (issue 13 item 3).

04: the deleted iron result is left out with an informational ERR naming OBX-11;
06: the PDF sent in OBX-5 is not carried in a RAD report, and the ACK warns (ERR severity W).
"""

from __future__ import annotations

import pytest

from e2e.e2e_kit import Bridge, Message

from .conftest import corpus_file


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    running = Bridge(tmp_path_factory.mktemp("dialects-serve")).start()
    yield running
    assert running.stop() == 0, running.log()[-4000:]


def send(bridge: Bridge, prefix: str):
    path = corpus_file(prefix)
    return bridge.exchange(path.read_bytes())


def test_deleted_result_is_an_informational_err(bridge):
    ack = send(bridge, "04")
    assert ack.code == "AA", ack
    notices = [e for e in ack.errors if e["location"] == "OBX^10^11"]
    assert len(notices) == 1 and notices[0]["severity"] == "I", ack
    assert "left out" in notices[0]["text"]


def test_attachment_not_carried_is_a_warning(bridge):
    ack = send(bridge, "06")
    assert ack.code == "AA", ack
    warnings = [e for e in ack.errors if e["severity"] == "W"]
    assert [w["location"] for w in warnings] == ["OBX^3^5"], ack
    assert "attachment" in warnings[0]["text"]
