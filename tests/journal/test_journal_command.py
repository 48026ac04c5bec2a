"""`fse-bridge journal list / show / export / resubmit` (resubmit: with and without a running service)."""

import csv
import io

import pytest

from bridge import cli
from bridge.journal import Received
from bridge.journal.sqlite import SqliteStore
from bridge.model import AckCode
from bridge.outcome import Outcome
from fse_helpers import config_table, make_oru, to_toml


@pytest.fixture
def setup(tmp_path):
    path = tmp_path / "bridge.toml"
    path.write_text(to_toml(config_table(tmp_path)))
    store = SqliteStore(tmp_path / "journal.sqlite")
    store.begin()
    first = store.admit(Received(raw=make_oru("J1").encode(), msh4="OSP", msh10="J1", message_type="ORU^R01")).entry
    store.finish(first.id, Outcome(code=AckCode.AA, text="published", document_id="2.16.840.1^DOC1",
                                   operation="create", x_cart_id="cart-77"), b"MSH|^~\\&\rMSA|AA|J1\r")
    store.admit(Received(raw=make_oru("J2").encode(), msh4="OSP", msh10="J2", message_type="ORU^R01"))
    store.commit()
    store.close()
    return path


def run(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr()


def test_list(setup, capsys):
    code, out = run(capsys, "journal", "list", "--config", str(setup))
    assert code == 0
    rows = out.out.splitlines()
    assert "J2" in rows[1] and "J1" in rows[2] and "2.16.840.1^DOC1" in rows[2]


@pytest.mark.parametrize("key", ["1", "J1", "2.16.840.1^DOC1", "cart-77"])
def test_show_finds_id_control_id_document_id_and_x_cart_id(setup, capsys, key):
    code, out = run(capsys, "journal", "--config", str(setup), "show", key)
    assert code == 0
    assert out.out.startswith("entry 1\n") and "x_cart_id: cart-77" in out.out
    assert "transitions:" in out.out and "done  AA published" in out.out
    assert "ROSSI" not in out.out     # the message itself only with --raw


def test_show_unknown_key_exits_1(setup, capsys):
    code, out = run(capsys, "journal", "show", "nope", "--config", str(setup))
    assert code == 1 and "no journal entry matches 'nope'" in out.err


def test_export_csv(setup, capsys, tmp_path):
    code, out = run(capsys, "journal", "export", "--config", str(setup))
    assert code == 0
    rows = list(csv.reader(io.StringIO(out.out)))
    assert rows[0] == ["time", "control_id", "message_type", "state", "document_id", "operation", "outcome",
                       "x_cart_id"]
    assert rows[1][1:] == ["J1", "ORU^R01", "done", "2.16.840.1^DOC1", "create", "AA", "cart-77"]
    assert rows[2][1:] == ["J2", "ORU^R01", "received", "", "", "", ""]
    target = tmp_path / "out.csv"
    assert run(capsys, "journal", "export", "--out", str(target), "--config", str(setup))[0] == 0
    assert target.read_text().splitlines()[0] == ",".join(rows[0])


def test_resubmit_with_no_service_makes_an_unfinished_copy_for_the_next_start(setup, capsys, tmp_path):
    code, out = run(capsys, "journal", "resubmit", "J1", "--config", str(setup))
    assert code == 0
    assert out.out == "entry 3 journaled from entry 1; no service is running: it processes the entry at its next start\n"
    store = SqliteStore(tmp_path / "journal.sqlite")
    copy = store.get(3)
    assert copy.raw == store.get(1).raw and copy.resend_of == 1 and not copy.finished
    store.close()


def test_resubmit_with_files_left_by_a_killed_service_journals_from_here(setup, capsys, tmp_path):
    # A killed service leaves web.url and the token behind; nobody listens there.
    (tmp_path / "web.url").write_text("http://127.0.0.1:9/\n")
    (tmp_path / "operator.token").write_text("stale\n")
    code, out = run(capsys, "journal", "resubmit", "2", "--config", str(setup))
    assert code == 0 and out.out.startswith("entry 3 journaled from entry 2; no service is running")
    # Refusals name the reason, as with a service.
    code, out = run(capsys, "journal", "resubmit", "J2", "--config", str(setup))
    assert code == 1 and "'J2' matches entries 2, 3: give the id" in out.err


def test_missing_journal_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bridge.toml"
    path.write_text(to_toml(config_table(tmp_path)))
    code, out = run(capsys, "journal", "list", "--config", str(path))
    assert code == 1 and "no journal at" in out.err


def test_resubmit_through_the_running_service_process(tmp_path):
    """`fse-bridge serve` in its own process, the CLI in another: the service processes the copy
    at once; stopped, the CLI journals the copy for its next start."""
    import os
    import subprocess
    import sys

    from fse_helpers import CHECKOUT
    if str(CHECKOUT / "tests" / "service") not in sys.path:
        sys.path.insert(0, str(CHECKOUT / "tests" / "service"))
    from mllp_server import MllpClient, ServerProcess, msa_fields, simulator_registry

    server = ServerProcess(tmp_path).start()
    command = [sys.executable, "-m", "bridge", "journal", "resubmit", "1", "--config", str(server.config_path)]
    try:
        simulator_registry(tmp_path, faults=[{"operation": "create", "status": 400, "problem": "syntax"}])
        with MllpClient(server.port) as client:
            assert msa_fields(client.exchange((CHECKOUT / "examples" / "rad.hl7").read_bytes()))[0][0] == "AE"
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("entry 2 (resubmitted from entry 1): AA ") and "X-Cart-id" in done.stdout
        assert [d for d in simulator_registry(tmp_path) if ".RAD." in d["id"]]
    finally:
        assert server.terminate() == 0, server.log()
    assert "operator resubmit of entry 1: entry 2, outcome AA, ACK AA" in server.log()
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), check=False)
    assert done.returncode == 0 and done.stdout.startswith("entry 3 journaled from entry 1; no service is running")
