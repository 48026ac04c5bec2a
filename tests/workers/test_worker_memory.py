"""Bounded memory per message in the worker (issue 14, item 4): a frame of a million tiny
fields is refused (AR 207, as an oversize frame) before python-hl7 builds its tree."""

from pathlib import Path

import pytest
import pytest_twisted

from bridge import config as config_module
from bridge.errors import FrameTooLarge
from bridge.mapping.analysis import analyse
from bridge.service.workers import WorkerPool
from fse_helpers import config_table, make_oru

import worker_calls

HERE = Path(__file__).resolve().parent


def reactor():
    from twisted.internet import reactor
    return reactor


@pytest.fixture
def pool(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    cfg = config_module.from_dict(config_table(tmp_path, mllp={"max_fields": 100_000}), base_dir=tmp_path)
    started = WorkerPool(reactor(), cfg, count=1, timeout_s=60)
    started.startService()
    yield started
    pytest_twisted.blockon(started.stopService())


@pytest_twisted.inlineCallbacks
def test_a_million_fields_are_refused_without_the_memory_of_their_tree(pool):
    yield pool.call(analyse, make_oru("M0").encode())   # warm: everything imported
    _, peak_before = yield pool.call(worker_calls.memory)
    fields = make_oru("M1") + "NTE|1||" + "|" * 1_000_000 + "\r"
    components = make_oru("M2") + "NTE|1||" + "^" * 1_000_000 + "\r"
    for raw in (fields.encode(), components.encode()):
        with pytest.raises(FrameTooLarge) as caught:
            yield pool.call(analyse, raw)
        assert caught.value.ack_code == "AR" and caught.value.err_code == "207"
    _, peak_after = yield pool.call(worker_calls.memory)
    # The parse tree of a million fields takes hundreds of MB; the refusal a few copies of 1 MB.
    assert peak_after - peak_before < 40_000, (peak_before, peak_after)
