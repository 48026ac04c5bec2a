"""`fse-bridge journal purge`, and `journal show` / `resubmit` on purged entries; the purge
beside a running journal writer (another process, WAL + busy timeout)."""

import datetime
import subprocess
import sys

import pytest
import pytest_twisted

from bridge import cli
from bridge.journal import Admit, Document, Received
from bridge.journal.sqlite import SqliteJournal, SqliteStore, utc_now
from bridge.model import AckCode
from bridge.outcome import Outcome
from fse_helpers import CHECKOUT, config_table, make_oru, to_toml

DAY = datetime.timedelta(days=1)
ACK = b"MSH|^~\\&|FSE|REG|LIS|OSP|2025||ACK^R01^ACK|N1|P|2.5\rMSA|AA|C1|ok\r"
PDF = b"%PDF-1.7 " + b"x" * 20_000


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def write_config(tmp_path, **journal):
    path = tmp_path / "bridge.toml"
    path.write_text(to_toml(config_table(tmp_path, journal=journal)))
    return path


def journal_message(store, control_id, *, document_id=None, doc_state=None):
    store.begin()
    entry = store.admit(Received(raw=make_oru(control_id).encode(), msh4="OSP", msh10=control_id,
                                 message_type="ORU^R01")).entry
    store.add_artifact(entry.id, "route", "route.json", b"{}")
    store.add_artifact(entry.id, "render", "cda.xml", b"<ClinicalDocument/>")
    store.add_artifact(entry.id, "package", "document.pdf", PDF)
    store.add_artifact(entry.id, "submit", "submission.json", b"{}")
    if doc_state:
        store.put_document(Document(structure="999", doc_type="LAB", accession=control_id,
                                    document_id=document_id, set_id=document_id, state=doc_state,
                                    message_id=entry.id))
    store.finish(entry.id, Outcome(code=AckCode.AA, text="published", document_id=document_id), ACK)
    store.commit()
    return entry


@pytest.fixture
def journal(tmp_path):
    """An old published message (400 days), an old replaced one, a young one (10 days), an unfinished one."""
    clock = Clock(utc_now() - 400 * DAY)
    store = SqliteStore(tmp_path / "journal.sqlite", now=clock)
    journal_message(store, "OLD", document_id="2.16^D1", doc_state="published")
    journal_message(store, "GONE", document_id="2.16^D0", doc_state="replaced")
    clock.now = utc_now() - 10 * DAY
    journal_message(store, "YOUNG")
    store.begin()
    store.admit(Received(raw=make_oru("OPEN").encode(), msh4="OSP", msh10="OPEN", message_type="ORU^R01"))
    store.commit()
    store.close()
    return tmp_path / "journal.sqlite"


def run(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr()


def contents(path):
    store = SqliteStore(path)
    try:
        return {e.msh10: (e.purged, [a.name for a in store.artifacts(e.id) if a.purged_at is None])
                for e in store.entries()}
    finally:
        store.close()


def test_dry_run_prints_what_would_go_and_changes_nothing(tmp_path, journal, capsys):
    config = write_config(tmp_path)
    before = contents(journal)
    code, out = run(capsys, "journal", "purge", "--dry-run", "--config", str(config))
    assert code == 0
    # OLD keeps route.json and submission.json (its document is published); GONE loses all four.
    assert out.out.startswith("would purge 6 artifact(s) (")
    assert "the raw bytes of 2 message(s)" in out.out and "VACUUM" not in out.out
    assert contents(journal) == before


def test_purge_with_the_configured_retention(tmp_path, journal, capsys):
    config = write_config(tmp_path)
    code, out = run(capsys, "journal", "purge", "--config", str(config))
    assert code == 0 and out.out.startswith("purged 6 artifact(s) (")
    assert "the raw bytes of 2 message(s)" in out.out
    assert "stop the service and run `fse-bridge journal purge --vacuum`" in out.out
    assert contents(journal) == {
        "OLD": (True, ["route.json", "submission.json"]), "GONE": (True, []),
        "YOUNG": (False, ["route.json", "cda.xml", "document.pdf", "submission.json"]), "OPEN": (False, [])}
    code, out = run(capsys, "journal", "purge", "--config", str(config))
    assert code == 0 and out.out.startswith("purged 0 artifact(s) (0 bytes)")


def test_before_date_overrides_the_retention(tmp_path, journal, capsys):
    config = write_config(tmp_path)
    code, out = run(capsys, "journal", "purge", "--before", (utc_now() - DAY).date().isoformat(),
                    "--config", str(config))
    assert code == 0 and out.out.startswith("purged 10 artifact(s)") and "3 message(s)" in out.out
    assert contents(journal)["YOUNG"] == (True, []) and contents(journal)["OPEN"] == (False, [])


def test_bad_or_future_dates_are_refused(tmp_path, journal, capsys):
    config = write_config(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, "journal", "purge", "--before", "31/12/2025", "--config", str(config))
    assert exit_info.value.code == 2 and "not a date (YYYY-MM-DD) or ISO 8601 time: '31/12/2025'" in \
        capsys.readouterr().err
    code, out = run(capsys, "journal", "purge", "--before", (utc_now() + DAY).isoformat(), "--config", str(config))
    assert code == 1 and "is in the future" in out.err


def test_retention_off_purges_nothing(tmp_path, journal, capsys):
    config = write_config(tmp_path, keep_artifacts_days=0, keep_messages_days=0)
    before = contents(journal)
    code, out = run(capsys, "journal", "purge", "--config", str(config))
    assert code == 0 and out.out.strip() == "retention is off: nothing to purge"
    assert contents(journal) == before


def test_show_and_resubmit_of_a_purged_entry(tmp_path, journal, capsys):
    config = write_config(tmp_path)
    run(capsys, "journal", "purge", "--config", str(config))
    code, out = run(capsys, "journal", "show", "OLD", "--raw", "--config", str(config))
    today = utc_now().date().isoformat()
    assert code == 0 and f"  message: purged on {today}" in out.out and "ROSSI" not in out.out
    assert f"artifact: package/document.pdf (purged on {today}, made " in out.out
    assert "artifact: submit/submission.json (2 bytes, " in out.out
    assert "ack: MSH|" in out.out and "x_cart_id" not in out.out
    code, out = run(capsys, "journal", "show", "YOUNG", "--raw", "--config", str(config))
    assert "message: MSH|" in out.out and "ROSSI" in out.out and "purged" not in out.out
    code, out = run(capsys, "journal", "resubmit", "OLD", "--config", str(config))
    assert code == 1 and f"purged on {today}; ask the sender to send it again" in out.err


def test_vacuum_gives_the_space_back(tmp_path, journal, capsys):
    config = write_config(tmp_path)
    (tmp_path / "web.url").write_text("http://127.0.0.1:9/\n")   # left by a killed service: nobody listens
    size = journal.stat().st_size
    code, out = run(capsys, "journal", "purge", "--vacuum", "--config", str(config))
    assert code == 0 and out.out.startswith("purged 6 artifact(s)")
    assert f"journal file {size / 1e6:.1f} MB, now " in out.out and "VACUUM" not in out.out
    assert journal.stat().st_size < size - len(PDF)
    assert contents(journal)["OLD"] == (True, ["route.json", "submission.json"])


def test_vacuum_is_refused_while_the_service_runs(tmp_path, journal, capsys):
    import socket
    config = write_config(tmp_path)
    before = contents(journal)
    with socket.create_server(("127.0.0.1", 0)) as listening:
        (tmp_path / "web.url").write_text(f"http://127.0.0.1:{listening.getsockname()[1]}/\n")
        code, out = run(capsys, "journal", "purge", "--vacuum", "--config", str(config))
    assert code == 1 and "the service is running (status page at http://127.0.0.1:" in out.err
    assert "stop it before --vacuum" in out.err and contents(journal) == before


@pytest_twisted.inlineCallbacks
def test_purge_beside_a_running_journal_writer(tmp_path, capsys):
    """The CLI in another process while this one's journal keeps writing: neither fails."""
    from twisted.internet import defer, reactor, threads
    path = tmp_path / "journal.sqlite"
    clock = Clock(utc_now() - 400 * DAY)
    seed = SqliteStore(path, now=clock)
    for n in range(150):     # 600 artifacts, 3 MB: several batches
        journal_message(seed, f"S{n}")
    seed.close()
    config = write_config(tmp_path)
    journal = SqliteJournal(path, reactor=reactor)
    cli_run = threads.deferToThread(
        subprocess.run, [sys.executable, "-m", "bridge", "journal", "purge", "--config", str(config)],
        capture_output=True, text=True, cwd=CHECKOUT, timeout=60)
    written = 0
    while not cli_run.called:
        admissions = yield defer.gatherResults(
            [journal.admit(Received(raw=make_oru(f"W{written + i}").encode(), msh4="OSP",
                                    msh10=f"W{written + i}")) for i in range(5)])
        assert all(a.kind is Admit.NEW for a in admissions)
        for a in admissions:
            yield journal.add_artifact(a.entry.id, "render", "cda.xml", b"<ClinicalDocument/>")
        written += len(admissions)
    result = yield cli_run
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("purged 600 artifact(s)") and "150 message(s)" in result.stdout
    entries = yield journal.entries(limit=10_000)
    assert written and len(entries) == 150 + written
    assert sum(e.purged for e in entries) == 150
    yield journal.close()
