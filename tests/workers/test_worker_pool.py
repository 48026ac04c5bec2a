"""bridge.service.workers: real worker processes, spoken to over their pipes from the reactor."""

import os
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, task

from bridge import config as config_module
from bridge.mapping.analysis import Analysis, analyse, summarise
from bridge.errors import MissingField, NotProcessable, ParseError
from bridge.service.workers import WorkerFailed, WorkerLost, WorkerPool
from fse_helpers import CHECKOUT, config_table, make_oru

import worker_calls

HERE = Path(__file__).resolve().parent


def reactor():
    from twisted.internet import reactor
    return reactor


@pytest.fixture
def start_pool(tmp_path, monkeypatch):
    # The children import worker_calls from this folder (the pool adds the package's own root).
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    cfg = config_module.from_dict(config_table(tmp_path), base_dir=tmp_path)
    pools = []

    def start(count=1, timeout_s=30.0):
        pool = WorkerPool(reactor(), cfg, count=count, timeout_s=timeout_s)
        pool.startService()
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        if pool.running:
            pytest_twisted.blockon(pool.stopService())


@pytest_twisted.inlineCallbacks
def test_calls_run_in_other_processes_with_the_configuration(start_pool, tmp_path):
    pool = start_pool(count=2)
    answers = yield defer.gatherResults([pool.call(worker_calls.where, n) for n in range(6)])
    assert [tag for _, _, tag in answers] == list(range(6))
    pids = {pid for pid, _, _ in answers}
    assert os.getpid() not in pids and len(pids) == 2   # spread over both workers
    assert {state for _, state, _ in answers} == {str(tmp_path)}


@pytest_twisted.inlineCallbacks
def test_the_analysis_comes_back_without_the_parse_tree(start_pool):
    pool = start_pool()
    summary = yield pool.call(summarise, make_oru("W1").encode())
    assert summary == Analysis(control_id="W1", message_type="ORU", trigger_event="R01", charset="iso-8859-1")
    full = yield pool.call(analyse, (CHECKOUT / "examples" / "lab.hl7").read_bytes())
    assert full.route.doc_type.name == "LAB" and full.report is not None and full.mapping_error is None


@pytest_twisted.inlineCallbacks
def test_errors_come_back_as_they_were_raised(start_pool):
    pool = start_pool()
    with pytest.raises(MissingField) as refused:
        yield pool.call(worker_calls.refuse)
    assert refused.value.location == "PID^1^3" and refused.value.err_code == "101"
    with pytest.raises(ParseError) as unparsable:
        yield pool.call(summarise, b"MSH|^~\\&|LIS|OSP|||||ORU^R01|C1|P|2.5||||||ROT13")
    assert unparsable.value.location == "MSH^1^18"
    with pytest.raises(NotProcessable) as unreadable:
        yield pool.call(summarise, b"MSH|garbage")
    assert unreadable.value.location == "MSH^1^2" and unreadable.value.ack_code == "AR"
    with pytest.raises(WorkerFailed):
        yield pool.call(worker_calls.break_down)
    with pytest.raises(WorkerFailed):
        yield pool.call(worker_calls.unpicklable)
    # The worker survived all of it.
    assert (yield pool.call(worker_calls.where, "still"))[2] == "still"


@pytest_twisted.inlineCallbacks
def test_a_call_whose_worker_dies_is_tried_once_more_on_a_new_one(start_pool, tmp_path):
    pool = start_pool()
    first_pid = (yield pool.call(worker_calls.where, 0))[0]
    assert (yield pool.call(worker_calls.die_once, str(tmp_path / "marker"))) == "second try"
    assert (yield pool.call(worker_calls.where, 1))[0] != first_pid


@pytest_twisted.inlineCallbacks
def test_a_call_that_kills_every_worker_fails_and_the_calls_behind_it_do_not(start_pool):
    pool = start_pool()
    deadly = pool.call(worker_calls.die)
    behind = pool.call(worker_calls.where, "behind")
    with pytest.raises(WorkerLost):
        yield deadly
    assert (yield behind)[2] == "behind"


@pytest_twisted.inlineCallbacks
def test_a_silent_worker_is_killed_after_the_timeout(start_pool):
    # Not shorter: the timeout also covers a fresh worker's start (0.5 to 0.8 s on a loaded machine).
    pool = start_pool(timeout_s=2)
    with pytest.raises(WorkerLost):
        yield pool.call(worker_calls.hang, 30)   # killed twice: on the first worker and its successor
    assert (yield pool.call(worker_calls.where, "after"))[2] == "after"


@pytest_twisted.inlineCallbacks
def test_stopping_ends_the_workers_and_refuses_new_calls(start_pool):
    pool = start_pool(count=2)
    answers = yield defer.gatherResults([pool.call(worker_calls.where, n) for n in range(4)])
    pids = {pid for pid, _, _ in answers}
    yield pool.stopService()
    assert not pool.workers
    # Their stdout closed; the exit itself follows at once (bounded poll of a real condition).
    for _ in range(500):
        if all(_ended(pid) for pid in pids):
            break
        yield task.deferLater(reactor(), 0.01, lambda: None)
    assert all(_ended(pid) for pid in pids)
    with pytest.raises(WorkerLost):
        yield pool.call(worker_calls.where, "late")


def _ended(pid: int) -> bool:
    """No such process, or only its exit status is left (a zombie not reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest_twisted.inlineCallbacks
def test_a_call_waits_for_a_worker_a_bounded_time(tmp_path):
    cfg = config_module.from_dict(config_table(tmp_path), base_dir=tmp_path)
    pool = WorkerPool(reactor(), cfg, count=0, timeout_s=30, wait_s=0.2)   # no worker ever comes up
    pool.startService()
    try:
        with pytest.raises(WorkerLost, match="no worker process available for 0.2s"):
            yield pool.call(worker_calls.where, "never")
    finally:
        yield pool.stopService()


@pytest_twisted.inlineCallbacks
def test_workers_that_cannot_start_leave_no_call_unanswered(tmp_path):
    cfg = config_module.from_dict(config_table(tmp_path), base_dir=tmp_path)
    # A broken installation: each worker exits at once, and is restarted with a growing delay.
    pool = WorkerPool(reactor(), cfg, count=1, timeout_s=30, wait_s=0.5, executable="/bin/false")
    pool.startService()
    try:
        for n in range(3):
            with pytest.raises(WorkerLost):
                yield pool.call(worker_calls.where, n)
    finally:
        yield pool.stopService()
