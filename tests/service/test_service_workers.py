"""The running service and its worker processes (the real server as a subprocess)."""

import os
import signal
import time
from pathlib import Path

from fse_helpers import make_oru
from mllp_server import MllpClient, ServerProcess, msa_fields


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if stat[1] == str(pid) and b"bridge.service.workers" in command:
                found.append(int(entry.name))
    return found


def _wait_for(condition, what: str, timeout: float = 30.0):
    """Bounded poll of a real condition (a process appearing or going)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return value


def test_messages_are_parsed_in_worker_processes_that_are_replaced_when_killed(tmp_path):
    proc = ServerProcess(tmp_path, stub=True, workers={"processes": 2}).start()
    try:
        workers = _wait_for(lambda: len(_children(proc.proc.pid)) == 2 and _children(proc.proc.pid),
                            "two worker processes")
        with MllpClient(proc.port) as client:
            assert msa_fields(client.exchange(make_oru("K1").encode()))[0][:2] == ["AA", "K1"]
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            replaced = _wait_for(lambda: len(set(_children(proc.proc.pid)) - set(workers)) == 2
                                 and _children(proc.proc.pid), "two new worker processes")
            assert msa_fields(client.exchange(make_oru("K2").encode()))[0][:2] == ["AA", "K2"]
            # A message the parser refuses still gets its AE from a worker.
            refused = client.exchange(b"MSH|^~\\&|LIS|OSP|FSE|REGIONE|20240131||ORU^R01|K3|P|2.5|||||ITA|NOPE\r")
            assert msa_fields(refused)[0][:2] == ["AE", "K3"] and b"MSH^1^18" in refused
    finally:
        assert proc.terminate() == 0, proc.log()
    assert "worker 1 ended (exit code None, signal 9)" in proc.log()
    # A graceful stop ends the workers too (they are not left behind, orphaned).
    _wait_for(lambda: not any(_is_worker(pid) for pid in replaced), "the workers ended with the service")


def _is_worker(pid: int) -> bool:
    try:
        return b"bridge.service.workers" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
