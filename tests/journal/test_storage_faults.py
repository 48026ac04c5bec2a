"""Storage faults (issue 14 item 5): a full disk, a damaged journal.

A full disk is SQLite's own: ``PRAGMA max_page_count`` caps the file, and every
write past it fails with "database or disk is full", as on a full filesystem.
"""

import os
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock, deferLater

from bridge import config as config_module
from bridge.alerts import ALERTS, Kind
from bridge.errors import JournalDamaged
from bridge.journal import Received
from bridge.journal.sqlite import SqliteJournal, SqliteStore
from bridge.model import AckCode
from bridge.outcome import Outcome
from bridge.service.context import ServiceContext
from bridge.service.receiver import RECORD_RETRY_S, Receiver
from bridge.web.health import health
from fse_helpers import config_table, make_oru, to_toml


def reactor():
    from twisted.internet import reactor
    return reactor


def msa1(ack: bytes) -> str:
    return next(s for s in ack.split(b"\r") if s.startswith(b"MSA")).split(b"|")[1].decode()


def fill_the_disk(journal: SqliteJournal) -> None:
    """No page can be added any more (the journal's connection, between its groups)."""
    db = journal._store.db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")


def free_the_disk(journal: SqliteJournal) -> None:
    journal._store.db.execute("PRAGMA max_page_count = 1073741823")


pytestmark = pytest.mark.usefixtures("fresh_alerts")


@pytest.fixture
def service(tmp_path):
    cfg = config_module.from_dict(config_table(tmp_path), base_dir=tmp_path)
    journal = SqliteJournal(tmp_path / "journal.sqlite", reactor=reactor())
    ctx = ServiceContext(config=cfg, reactor=reactor(), journal=journal)
    yield ctx
    journal.close()


@pytest_twisted.inlineCallbacks
def test_a_full_disk_answers_ar_and_healthz_503_until_writes_work_again(service):
    outcomes = []

    def handler(ctx, entry, analysis):
        outcomes.append(entry.id)
        return defer.succeed(Outcome(code=AckCode.AA, text="published"))

    receiver = Receiver(service, handler, clock=Clock())
    # Big enough that the message needs new pages.
    big = make_oru("FULL1").encode() + b"OBX|9|TX|1^x^L||" + b"y" * 20000 + b"\r"
    fill_the_disk(service.journal)
    ack = yield receiver.handle_frame(big, "peer")
    assert msa1(ack) == "AR"                       # never silence, never AA
    assert outcomes == []                          # nothing was journaled, so nothing processed
    report = yield health(service)
    assert not report.healthy and report.journal.writable is False
    assert ALERTS.counts() == {Kind.STORAGE: 1}
    free_the_disk(service.journal)
    ack = yield receiver.handle_frame(big, "peer")
    assert msa1(ack) == "AA"
    yield receiver.drain(5)
    yield service.journal.get(0)                   # after the outcome's commit
    report = yield health(service)
    assert report.healthy and report.journal.writable is True


@pytest_twisted.inlineCallbacks
def test_an_outcome_that_cannot_be_written_is_recorded_once_writes_work(service):
    clock = Clock()

    def handler(ctx, entry, analysis):
        # The disk fills while the message is processed: its outcome cannot be written.
        fill_the_disk(ctx.journal)
        return defer.succeed(Outcome(code=AckCode.AA, text="published " + "z" * 30000))

    receiver = Receiver(service, handler, clock=clock)
    ack = yield receiver.handle_frame(make_oru("FULL2").encode(), "peer")
    assert msa1(ack) == "AA"
    yield receiver.drain(5)
    for _ in range(500):                           # the outcome's write fails after the ACK
        if service.journal.write_failing:
            break
        yield deferLater(reactor(), 0.01)
    assert service.journal.write_failing
    [entry] = yield service.journal.find("FULL2")
    assert entry.outcome is None
    free_the_disk(service.journal)
    clock.advance(RECORD_RETRY_S)                  # not at the next start: now
    yield service.journal.get(0)
    yield service.journal.get(0)
    entry = yield service.journal.get(entry.id)
    assert entry.outcome == "AA"


def damage(path, *, at: int, garbage: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(garbage)


def make_journal(path, messages: int = 300) -> None:
    store = SqliteStore(path)
    for n in range(messages):
        store.begin()
        store.admit(Received(raw=make_oru(f"D{n}").encode() + b"NTE|1||" + b"n" * 2000 + b"\r", msh10=f"D{n}"))
        store.commit()
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def test_garbage_in_the_middle_is_found_at_start(tmp_path):
    path = tmp_path / "journal.sqlite"
    make_journal(path)
    size = os.path.getsize(path)
    damage(path, at=size // 2 - (size // 2) % 4096, garbage=os.urandom(4096))
    SqliteStore(path).close()                      # a reader without the check opens it…
    with pytest.raises(JournalDamaged) as caught:  # …the service's start does not
        SqliteStore(path, check=True)
    assert str(path) in str(caught.value) and "restore" in str(caught.value)


def test_a_truncated_journal_is_damaged(tmp_path):
    path = tmp_path / "journal.sqlite"
    make_journal(path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
    with pytest.raises(JournalDamaged):
        SqliteStore(path, check=True)


def test_serve_on_a_damaged_journal_exits_4_naming_the_file(tmp_path):
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is not a database" * 300)
    table = config_table(tmp_path, journal={"path": str(path)})
    config = tmp_path / "bridge.toml"
    config.write_text(to_toml(table))
    result = subprocess.run([sys.executable, "-m", "bridge", "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 4, result.stderr[-2000:]
    assert str(path) in result.stderr and "Traceback" not in result.stderr


def test_journal_check_reports_the_damage_with_exit_4(tmp_path, capsys):
    from bridge import cli
    path = tmp_path / "journal.sqlite"
    make_journal(path)
    config = tmp_path / "bridge.toml"
    config.write_text(to_toml(config_table(tmp_path, journal={"path": str(path)})))
    assert cli.main(["journal", "check", "--config", str(config)]) == 0
    assert "ok (300 messages)" in capsys.readouterr().out
    size = os.path.getsize(path)
    damage(path, at=size // 2 - (size // 2) % 4096, garbage=os.urandom(4096))
    assert cli.main(["journal", "check", "--config", str(config)]) == 4
    # The damage is found by the check, or already when the journal is opened.
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert str(path) in said and "damaged" in said and "restore" in said
    assert "Traceback" not in said
