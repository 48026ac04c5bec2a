"""Limits that hold under abuse (issue 14, item 4), against the real listener over real sockets.

Idle, dripping and reset connections come from 127.0.0.2 and up; the sender on
127.0.0.1 must keep getting its ACKs. Short configured timeouts keep it fast.
"""

import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

from fse_helpers import MllpClient, make_oru

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from mllp_server import ServerProcess, msa_fields  # noqa: E402  (the service tests' server kit)

LIMITS = {"max_connections": 16, "idle_timeout_s": 30, "frame_timeout_s": 1.5}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("abuse"), stub=True, mllp=LIMITS,
                         workers={"processes": 0}).start()
    yield proc
    assert proc.terminate() == 0, proc.log()


def from_host(n: int, port: int) -> socket.socket:
    """A connection to the listener from 127.0.0.<n>."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((f"127.0.0.{n}", 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def send_one(port: int, control_id: str) -> list[list[str]]:
    with MllpClient(port, timeout=10) as client:
        return msa_fields(client.exchange(make_oru(control_id).encode()))


def test_a_flood_of_idle_connections_does_not_lock_the_sender_out(server):
    flood = []
    try:
        for n in range(100):
            flood.append(from_host(2 + n % 5, server.port))
        time.sleep(0.5)
        for n in range(5):
            assert send_one(server.port, f"IDLE{n}") == [["AA", f"IDLE{n}", "received"]]
        # The first idle sockets were closed to admit the later ones.
        assert closed_by_server(flood[0], within=5)
    finally:
        for sock in flood:
            sock.close()
    assert "closed to admit a new one" in server.log()


def test_dripping_peers_are_closed_after_the_frame_deadline(server):
    drippers = [from_host(100 + n, server.port) for n in range(10)]
    started = time.monotonic()
    closed = set()
    try:
        for sock in drippers:
            sock.sendall(b"\x0bMSH|^~\\&|")
        with MllpClient(server.port, timeout=10) as client:
            n = 0
            while len(closed) < len(drippers) and time.monotonic() - started < 8:
                for i, sock in enumerate(drippers):
                    if i in closed:
                        continue
                    try:
                        sock.sendall(b"x")   # a byte at a time: never a whole frame
                    except OSError:
                        closed.add(i)
                        continue
                    if closed_by_server(sock, within=0.01):
                        closed.add(i)
                assert msa_fields(client.exchange(make_oru(f"DRIP{n}").encode()))[0][:2] == ["AA", f"DRIP{n}"]
                n += 1
                time.sleep(0.2)
        assert len(closed) == len(drippers) and time.monotonic() - started < 8
    finally:
        for sock in drippers:
            sock.close()
    assert "frame not complete" in server.log()


def send_reconnecting(port: int, control_id: str, attempts: int = 3) -> list[list[str]]:
    """As a sender does: a connection closed before the answer is made again and the message resent."""
    for _ in range(attempts):
        try:
            with MllpClient(port, timeout=10) as client:
                answer = client.exchange(make_oru(control_id).encode())
        except ConnectionError:
            answer = None
        if answer is not None:
            return msa_fields(answer)
        time.sleep(0.1)
    raise AssertionError(f"no answer to {control_id} in {attempts} connections")


def test_connections_reset_mid_frame_leave_the_listener_serving(server):
    def reset_storm():
        for n in range(60):
            sock = from_host(150 + n % 50, server.port)
            sock.sendall(b"\x0b" + make_oru(f"RST{n}").encode()[: 20 + n])
            # SO_LINGER 0: close sends RST, not FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    storm = threading.Thread(target=reset_storm)
    storm.start()
    try:
        for n in range(10):
            # Many hosts holding one connection each: the sender's may be the longest idle one
            # when the limit is reached before it has sent; it connects again, as senders do.
            assert send_reconnecting(server.port, f"OK{n}") == [["AA", f"OK{n}", "received"]]
    finally:
        storm.join(30)
    assert send_one(server.port, "AFTER") == [["AA", "AFTER", "received"]]
