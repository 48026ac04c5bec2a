"""makeService: the MultiService in process (port 0, journal in a temporary folder)."""

import socket
import threading

import pytest
import pytest_twisted

from bridge import config as config_module
from bridge.service.parts import BridgeService
from bridge.service.tap import makeService
from fse_helpers import config_table, make_oru
from bridge.mllp.protocol import MllpDecoder, frame
from mllp_server import msa_fields


@pytest.mark.parametrize("processes", [1, 0])
@pytest_twisted.inlineCallbacks
def test_start_serve_and_stop_in_order(tmp_path, processes):
    from twisted.internet import reactor
    cfg = config_module.from_dict(config_table(tmp_path, workers={"processes": processes}), base_dir=tmp_path)
    handled = []

    def handler(ctx, entry, analysis):
        assert analysis.control_id == entry.msh10 and analysis.message_type == "ORU"
        # Work enters threads only through run_blocking.
        d = ctx.run_blocking(lambda: threading.current_thread().name)
        d.addCallback(handled.append)
        from bridge.model import AckCode
        from bridge.outcome import Outcome
        return d.addCallback(lambda _: Outcome(code=AckCode.AA, text="ok"))

    top = makeService(cfg, reactor, handler=handler)
    assert isinstance(top, BridgeService)
    top.startService()
    try:
        port = top.mllp_port
        assert port > 0 and top.context.journal is not None
        answer = yield _exchange(reactor, port, make_oru("MS1").encode())
        assert msa_fields(answer)[0][:3] == ["AA", "MS1", "ok"]
        assert handled and "fse-bridge-worker" in handled[0]
    finally:
        yield top.stopService()
    # Stopped: no longer listening, journal closed.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert (tmp_path / "journal.sqlite").exists()


def _exchange(reactor, port, payload):
    """One MLLP exchange from a worker thread (a blocking client must not block the reactor)."""
    from twisted.internet.threads import deferToThread

    def blocking():
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(frame(payload))
            decoder, frames = MllpDecoder(), []
            while not frames:
                data = s.recv(65536)
                if not data:
                    return None
                frames += list(decoder.feed(data))
            return frames[0]

    return deferToThread(blocking)


@pytest_twisted.inlineCallbacks
def test_a_stop_lets_work_in_flight_use_the_workers_before_they_stop(tmp_path):
    from twisted.internet import defer, reactor

    from bridge.mapping.analysis import summarise
    from bridge.model import AckCode
    from bridge.outcome import Outcome

    cfg = config_module.from_dict(config_table(tmp_path, workers={"processes": 1}), base_dir=tmp_path)
    entered, release = defer.Deferred(), defer.Deferred()

    @defer.inlineCallbacks
    def handler(ctx, entry, analysis):
        entered.callback(None)
        yield release
        # After the stop began: a stage in a worker process still runs.
        again = yield ctx.run_stage(summarise, entry.raw)
        return Outcome(code=AckCode.AA, text=f"again {again.control_id}")

    top = makeService(cfg, reactor, handler=handler)
    top.startService()
    answer = _exchange(reactor, top.mllp_port, make_oru("ST1").encode())
    yield entered
    stopped = top.stopService()
    release.callback(None)
    assert msa_fields((yield answer))[0][:3] == ["AA", "ST1", "again ST1"]
    yield stopped
    assert not top.running
