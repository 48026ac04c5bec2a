"""End to end: the real server as a subprocess on loopback ports (issue 2, "Tests")."""

import signal
import sqlite3
import ssl
import subprocess
import sys
import textwrap
import time

import pytest

from bridge.hl7.message import read_header, split_batch
from fse_helpers import CHECKOUT, CORPUS, config_table, make_oru, to_toml
from mllp_server import MllpClient, ServerProcess, make_pki, msa_fields, simulator_registry, simulator_release


# Tests of the listener, journal and ACK contract run the service with a stub instead of
# the document pipeline (stub=True), so their answers do not depend on it; the corpus,
# signal, resume and configuration tests run the real `fse-bridge serve`.
STUB = {"stub": True}
COMMIT = {"ack": {"mode": "commit"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("server"), **STUB).start()
    yield proc
    assert proc.terminate() == 0, proc.log()


@pytest.fixture(scope="module")
def outcome_server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("outcome-server")).start()
    yield proc
    assert proc.terminate() == 0, proc.log()


def corpus():
    return sorted(CORPUS.glob("*.hl7"))


def expected_ids(raw: bytes) -> list[str]:
    return [read_header(m).control_id for m in split_batch(raw).messages]


def test_every_corpus_message_gets_exactly_one_answer_in_order(outcome_server):
    files = corpus()
    assert len(files) == 58
    with MllpClient(outcome_server.port) as client:
        # Pipelined: everything first, then the answers, in order.
        for path in files:
            client.send(path.read_bytes())
        for path in files:
            answer = client.receive()
            assert answer is not None, path.name
            assert [f[1] for f in msa_fields(answer)] == expected_ids(path.read_bytes()), path.name
            assert all(f[0] in ("AA", "AE", "AR", "CA", "CE", "CR") for f in msa_fields(answer))
        # Nothing more: exactly one answer per frame (a marker frame's answer comes next).
        assert msa_fields(client.exchange(make_oru("AFTER").encode()))[0][1] == "AFTER"


def test_stray_bytes_split_frames_and_bom_on_one_connection(server):
    raw = b"\xef\xbb\xbf" + make_oru("W1", sep="\r\n").encode()
    data = b"\r\n junk \r\n" + b"\x0b" + raw + b"\x1c\r" + b"\n\x0b" + make_oru("W2", sep="\n").encode() + b"\x1c\r"
    with MllpClient(server.port) as client:
        for i in range(0, len(data), 7):
            client.send_raw(data[i:i + 7])
        assert msa_fields(client.receive())[0][:2] == ["AA", "W1"]
        assert msa_fields(client.receive())[0][:2] == ["AA", "W2"]


def test_disconnect_mid_frame_leaves_the_server_serving(server):
    with MllpClient(server.port) as client:
        client.send_raw(b"\x0b" + make_oru("M1").encode()[:40])
    with MllpClient(server.port) as client:
        assert msa_fields(client.exchange(make_oru("M2").encode()))[0][:2] == ["AA", "M2"]


def test_duplicate_control_ids_over_the_wire(server):
    with MllpClient(server.port) as client:
        first = client.exchange(make_oru("DUP1").encode())
        again = client.exchange(make_oru("DUP1").encode())
        other = client.exchange(make_oru("DUP1", name="VERDI^LUCA").encode())
    assert again == first
    assert msa_fields(other)[0][0] == "AE" and b"|205^" in other


def test_python_hl7_mllp_client_interoperates(server):
    script = textwrap.dedent(f"""
        import asyncio, hl7
        from hl7.mllp import open_hl7_connection
        async def main():
            reader, writer = await open_hl7_connection("127.0.0.1", {server.port})
            writer.writemessage(hl7.parse({make_oru("PYHL7").strip()!r}))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), 30)
            print(ack.segment("MSA")[1], ack.segment("MSA")[2])
            writer.close()
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["AA", "PYHL7"]


def test_send_command(server, tmp_path):
    good = tmp_path / "two.hl7"
    good.write_text(make_oru("SEND1", sep="\n") + make_oru("SEND2", sep="\n"))
    batch = tmp_path / "batch.hl7"
    batch.write_bytes((CORPUS / "python-hl7-3.hl7").read_bytes())
    run = [sys.executable, "-m", "bridge", "send", "--port", str(server.port)]
    out = subprocess.run(run + [str(good)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [line.split()[1:3] for line in out.stdout.splitlines()] == [["AA", "SEND1"], ["AA", "SEND2"]]
    out = subprocess.run(run + [str(good), str(batch)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1      # the batch holds ADT messages in enhanced mode: CR
    lines = out.stdout.splitlines()
    assert [line.split()[1] for line in lines if not line.startswith(" ")] == ["AA", "AA", "CR", "CR"]
    assert "  ERR MSH^1^9^1 200 E message type ADT not supported" in lines


def test_sigterm_stops_cleanly_and_the_journal_holds_everything(tmp_path):
    proc = ServerProcess(tmp_path).start()
    with MllpClient(proc.port) as client:
        client.exchange(make_oru("T1").encode())
    assert proc.terminate() == 0, proc.log()
    assert "journal closed" in proc.log()
    db = sqlite3.connect(proc.journal_path)
    [(msh10, outcome, ack)] = db.execute("SELECT msh10, outcome, ack FROM messages").fetchall()
    assert msh10 == "T1" and outcome == msa_fields(ack)[0][0]


def test_crash_after_ack_then_restart(tmp_path):
    proc = ServerProcess(tmp_path, **STUB).start()
    with MllpClient(proc.port) as client:
        ack = client.exchange(make_oru("CRASH1").encode())
        proc.kill()                                  # SIGKILL right after the ACK
    assert msa_fields(ack)[0][:2] == ["AA", "CRASH1"]
    db = sqlite3.connect(proc.journal_path)
    assert db.execute("SELECT msh10, raw FROM messages").fetchall() == [("CRASH1", make_oru("CRASH1").encode())]
    db.close()
    proc.start()
    with MllpClient(proc.port) as client:
        # The stored ACK, or (if the outcome's commit did not make it before the kill) the
        # outcome of the entry resumed at start: never a second entry.
        again = client.exchange(make_oru("CRASH1").encode())
    assert msa_fields(again) == msa_fields(ack)
    assert proc.terminate() == 0
    db = sqlite3.connect(proc.journal_path)
    assert db.execute("SELECT msh10, outcome, ack FROM messages").fetchall() == [("CRASH1", "AA", again)]


def test_commit_mode_ack_means_journaled(tmp_path):
    proc = ServerProcess(tmp_path, **STUB, **COMMIT).start()
    with MllpClient(proc.port) as client:
        ack = client.exchange(make_oru("C1").encode())
        proc.kill()
    assert msa_fields(ack)[0][0] == "AA"
    db = sqlite3.connect(proc.journal_path)
    assert db.execute("SELECT msh10, ack FROM messages").fetchall() == [("C1", ack)]


def test_restart_resumes_journaled_unfinished_messages(tmp_path):
    from bridge.journal import Received
    from bridge.journal.sqlite import SqliteStore
    # What a crash between journaling and answering leaves behind.
    store = SqliteStore(tmp_path / "journal.sqlite")
    store.begin()
    store.admit(Received(raw=make_oru("R1").encode(), msh4="OSP", msh10="R1", message_type="ORU^R01"))
    store.commit()
    store.close()
    proc = ServerProcess(tmp_path, **STUB).start()
    with MllpClient(proc.port) as client:
        # A resend of the resumed message gets the outcome of that one processing.
        answer = client.exchange(make_oru("R1").encode())
    assert proc.terminate() == 0
    assert "resuming 1 journaled message" in proc.log()
    db = sqlite3.connect(proc.journal_path)
    assert db.execute("SELECT msh10, outcome, ack FROM messages").fetchall() == [("R1", "AA", answer)]


def test_sigterm_finishes_work_in_flight(tmp_path):
    proc = ServerProcess(tmp_path, **STUB).start()
    with MllpClient(proc.port) as client:
        client.send(make_oru("SLOW1", name="SLOW^ONE").encode())
        # The stub holds a patient named SLOW until the stop has begun: in flight, however slow.
        _wait_for_log(proc, "holding SLOW1 until the stop")
        proc.proc.send_signal(signal.SIGTERM)
        answer = client.receive()
    assert proc.wait() == 0, proc.log()
    assert "stopping: 1 held message(s) answered" in proc.log()
    assert msa_fields(answer)[0][:2] == ["AA", "SLOW1"]
    db = sqlite3.connect(proc.journal_path)
    assert db.execute("SELECT outcome, ack FROM messages").fetchall() == [("AA", answer)]


def _wait_for_log(proc, text: str, timeout: float = 30.0) -> None:
    """Bounded poll of a real condition: *text* in the service's log."""
    deadline = time.monotonic() + timeout
    while text not in proc.log():
        assert time.monotonic() < deadline and proc.proc.poll() is None, proc.log()
        time.sleep(0.02)


def _journaled(path, control_id) -> bool:
    if not path.exists():
        return False
    db = sqlite3.connect(path)
    try:
        return bool(db.execute("SELECT 1 FROM messages WHERE msh10 = ?", (control_id,)).fetchone())
    except sqlite3.OperationalError:   # schema not created yet
        return False
    finally:
        db.close()


def test_sigint_also_stops_cleanly(tmp_path):
    proc = ServerProcess(tmp_path).start()
    proc.proc.send_signal(signal.SIGINT)
    assert proc.wait() == 0
    assert "journal closed" in proc.log()


def test_oversize_frame_gets_ar_then_a_clean_close(tmp_path):
    proc = ServerProcess(tmp_path, mllp={"max_message_bytes": 2000}, **STUB).start()
    try:
        big = make_oru("BIG1").encode() + b"OBX|2|TX|||" + b"x" * 5000 + b"\r"
        with MllpClient(proc.port) as client:
            assert msa_fields(client.exchange(make_oru("OK1").encode()))[0][:2] == ["AA", "OK1"]
            answer = client.exchange(big)
            assert msa_fields(answer)[0][:2] == ["AR", "BIG1"] and b"|207^" in answer
            assert client.receive() is None      # closed by the server
    finally:
        assert proc.terminate() == 0


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_context(pki, with_cert):
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if with_cert:
        context.load_cert_chain(str(pki["client"]), str(pki["client_key"]))
    return context


def test_tls_without_client_certificates(tmp_path, pki):
    proc = ServerProcess(tmp_path, mllp={"tls_cert": str(pki["server"]), "tls_key": str(pki["server_key"])},
                         **STUB).start()
    try:
        assert "MLLPS (TLS) listening" in proc.log()
        with MllpClient(proc.port, context=client_context(pki, False)) as client:
            assert msa_fields(client.exchange(make_oru("TLS1").encode()))[0][:2] == ["AA", "TLS1"]
        out = subprocess.run([sys.executable, "-m", "bridge", "send", "--port", str(proc.port), "--host",
                              "localhost", "--tls", "--ca", str(pki["ca"]), str(_file(tmp_path, "TLS2"))],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "AA TLS2" in out.stdout, out.stderr
    finally:
        assert proc.terminate() == 0


def test_tls_with_required_client_certificates(tmp_path, pki):
    proc = ServerProcess(tmp_path, mllp={"tls_cert": str(pki["server"]), "tls_key": str(pki["server_key"]),
                                         "tls_client_ca": str(pki["ca"])}, **STUB).start()
    try:
        with MllpClient(proc.port, context=client_context(pki, True)) as client:
            assert msa_fields(client.exchange(make_oru("MTLS1").encode()))[0][:2] == ["AA", "MTLS1"]
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with MllpClient(proc.port, context=client_context(pki, False)) as client:
                # TLS 1.3: the refusal arrives with the first read.
                if client.exchange(make_oru("MTLS2").encode()) is None:
                    raise ConnectionError("closed without an answer")
    finally:
        assert proc.terminate() == 0
    db = sqlite3.connect(proc.journal_path)
    assert db.execute("SELECT msh10 FROM messages").fetchall() == [("MTLS1",)]


def _file(tmp_path, control_id):
    path = tmp_path / f"{control_id}.hl7"
    path.write_text(make_oru(control_id))
    return path


@pytest.mark.parametrize("sections,key", [
    ({"mllp": {"prot": 1}}, "mllp.prot"),
    ({"mllp": {"port": "x"}}, "mllp.port"),
    ({"ack": {"mode": "sometimes"}}, "ack.mode"),
    ({"mllp": {"tls_cert": "missing.pem", "tls_key": "missing.key"}}, "mllp.tls_cert"),
    ({"mllp": {"default_charset": "klingon"}}, "mllp.default_charset"),
])
def test_config_errors_exit_2_naming_the_key(tmp_path, sections, key):
    path = tmp_path / "bad.toml"
    path.write_text(to_toml(config_table(tmp_path, **sections)))
    out = subprocess.run([sys.executable, "-m", "bridge", "serve", "--config", str(path)], cwd=CHECKOUT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert str(path) in out.stderr and key in out.stderr


def test_port_in_use_is_a_clear_error(tmp_path, server):
    proc = ServerProcess(tmp_path, mllp={"port": server.port})
    proc.proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--config", str(proc.config_path)],
                                 cwd=CHECKOUT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    _, err = proc.proc.communicate(timeout=60)
    assert proc.proc.returncode == 1 and "cannot start" in err


def test_a_second_signal_while_stopping_is_only_logged(tmp_path):
    """A service manager's SIGTERM and then a Ctrl-C: one graceful stop, no traceback."""
    proc = ServerProcess(tmp_path).start()
    # The simulator holds the create's answer until the test releases it: both signals land
    # while the message waits for the gateway, however slow the machine.
    simulator_registry(tmp_path, faults=[{"operation": "create", "delay_s": 600}])
    with MllpClient(proc.port) as client:
        client.send((CHECKOUT / "examples" / "lab.hl7").read_bytes())
        deadline = time.monotonic() + 30
        while not _journaled(proc.journal_path, "LAB0001"):
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.02)
        proc.proc.send_signal(signal.SIGTERM)
        _wait_for_log(proc, "SIGTERM: stopping")
        proc.proc.send_signal(signal.SIGINT)
        _wait_for_log(proc, "SIGINT: already stopping")
        # Released once the create is held (0 before it has reached the simulator).
        deadline = time.monotonic() + 30
        while simulator_release(tmp_path) != 1:
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.log()
            time.sleep(0.02)
        answer = client.receive()
    assert proc.wait() == 0, proc.log()
    assert msa_fields(answer)[0][:2] == ["AA", "LAB0001"]
    assert "SIGINT: already stopping" in proc.log()
    assert "Traceback" not in proc.log() and "CRITICAL" not in proc.log()
