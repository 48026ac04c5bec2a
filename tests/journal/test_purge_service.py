"""The service's own purge (bridge.service.parts.JournalService): at start, then every 24 h on
its clock, one INFO line of counts; none with the retention off."""

import datetime
import logging

import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import Deferred

from bridge import config as config_module
from bridge.journal import Document, Received
from bridge.journal.sqlite import SqliteJournal, SqliteStore
from bridge.model import AckCode
from bridge.outcome import Outcome
from bridge.service.context import ServiceContext
from bridge.service.parts import JournalService
from bridge.service.receiver import Receiver
from fse_helpers import config_table, make_oru

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 1, 1, tzinfo=UTC)
DAY = datetime.timedelta(days=1)


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class Recording(JournalService):
    """Keeps each purge's Deferred, so a test can wait for it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runs = []

    def purge(self):
        done = Deferred()
        self.runs.append(done)
        # Fired on the reactor's next turn: the LoopingCall has then scheduled the next run.
        return super().purge().addCallback(lambda report: self.ctx.reactor.callLater(0, done.callback, report)
                                           and report)


def seed(path, clock):
    """One published message a day for 100 days before T0 (patient ROSSI in each)."""
    store = SqliteStore(path, now=clock)
    for n in range(100):
        clock.now = T0 - (100 - n) * DAY
        store.begin()
        entry = store.admit(Received(raw=make_oru(f"C{n}").encode(), msh4="OSP", msh10=f"C{n}")).entry
        store.add_artifact(entry.id, "render", "cda.xml", b"<ClinicalDocument>ROSSI</ClinicalDocument>")
        store.add_artifact(entry.id, "submit", "submission.json", b'{"patient": "RSSMRA80A01H501U"}')
        store.put_document(Document(structure="999", doc_type="LAB", accession=f"A{n}", document_id=f"D{n}",
                                    set_id=f"D{n}", state="published", message_id=entry.id))
        store.finish(entry.id, Outcome(code=AckCode.AA, text="published"), b"MSA|AA|C\r")
        store.commit()
    store.close()


def service_for(tmp_path, now, **journal):
    from twisted.internet import reactor
    config = config_module.from_dict(config_table(tmp_path, journal=journal))
    ctx = ServiceContext(config=config, reactor=reactor)
    clock = task.Clock()
    service = Recording(ctx, Receiver(ctx), lambda: SqliteJournal(config.journal.path, reactor=reactor, now=now),
                        clock=clock, now=now)
    return service, clock


def unpurged(path):
    store = SqliteStore(path)
    try:
        artifacts = store.db.execute("SELECT name, count(*) FROM artifacts WHERE purged_at IS NULL"
                                     " GROUP BY name ORDER BY name").fetchall()
        raw = store.db.execute("SELECT count(*) FROM messages WHERE purged_at IS NULL").fetchone()[0]
        return [tuple(r) for r in artifacts], raw
    finally:
        store.close()


@pytest_twisted.inlineCallbacks
def test_purges_at_start_then_every_day(tmp_path, caplog):
    now = Clock(T0)
    seed(tmp_path / "journal.sqlite", Clock(T0))
    service, clock = service_for(tmp_path, now, keep_artifacts_days=30, keep_messages_days=60)
    caplog.set_level(logging.INFO, logger="bridge.service.parts")
    service.startService()
    first = yield service.runs[0]
    # Artifacts made more than 30 days before T0: messages 0..69; raw finished over 60 days ago: 0..39.
    assert (first.artifacts, first.messages) == (70, 40)
    lines = [r.getMessage() for r in caplog.records if "journal retention" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("journal retention: purged 70 artifact(s) (")
    assert "the raw bytes of 40 message(s)" in lines[0]
    assert "ROSSI" not in caplog.text and "RSSMRA" not in caplog.text
    # The submission records of published documents stay.
    assert unpurged(tmp_path / "journal.sqlite") == ([("cda.xml", 30), ("submission.json", 100)], 60)

    # Ten days later, the daily run: ten more days' worth goes.
    now.now = T0 + 10 * DAY
    clock.advance(service.purge_interval_s - 1)
    assert len(service.runs) == 1
    clock.advance(1)
    second = yield service.runs[1]
    assert (second.artifacts, second.messages) == (10, 10)
    yield service.stopService()
    assert not service.purging.running
    assert unpurged(tmp_path / "journal.sqlite") == ([("cda.xml", 20), ("submission.json", 100)], 50)


@pytest_twisted.inlineCallbacks
def test_a_failed_purge_is_logged_and_the_next_day_runs_again(tmp_path, caplog, monkeypatch):
    from bridge.journal import retention
    now = Clock(T0)
    seed(tmp_path / "journal.sqlite", Clock(T0))
    service, clock = service_for(tmp_path, now, keep_artifacts_days=30, keep_messages_days=0)
    step = retention.Purge.step

    def full_disk(self):
        raise OSError("database or disk is full")

    monkeypatch.setattr(retention.Purge, "step", full_disk)
    caplog.set_level(logging.INFO, logger="bridge.service.parts")
    service.startService()
    assert (yield service.runs[0]) is None
    assert "journal purge failed: database or disk is full" in caplog.text
    monkeypatch.setattr(retention.Purge, "step", step)
    clock.advance(service.purge_interval_s)
    assert (yield service.runs[1]).artifacts == 70
    yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_retention_off_never_purges(tmp_path, caplog):
    seed(tmp_path / "journal.sqlite", Clock(T0))
    service, clock = service_for(tmp_path, Clock(T0 + 1000 * DAY), keep_artifacts_days=0, keep_messages_days=0)
    caplog.set_level(logging.INFO, logger="bridge.service.parts")
    service.startService()
    clock.advance(service.purge_interval_s * 3)
    assert service.runs == [] and service.purging is None
    assert "journal retention off" in caplog.text
    yield service.stopService()
    assert unpurged(tmp_path / "journal.sqlite") == ([("cda.xml", 100), ("submission.json", 100)], 100)
