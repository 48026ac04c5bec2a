"""Journal retention: schema v2 and its migration, what a purge empties and what it never
touches, resends of purged messages, the async journal's purge on the writer thread."""

import datetime
import hashlib
import sqlite3
import threading
from importlib import resources
from pathlib import Path

import pytest
import pytest_twisted

from bridge.journal import Admit, Document, PurgeReport, Received
from bridge.journal import retention
from bridge.journal.sqlite import SqliteJournal, SqliteStore
from bridge.model import AckCode
from bridge.outcome import Outcome

UTC = datetime.timezone.utc
START = datetime.datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
DAY = datetime.timedelta(days=1)
ACK = b"MSH|^~\\&|FSE|REG|LIS|OSP|2025||ACK^R01^ACK|N1|P|2.5\rMSA|AA|C1|ok\r"
PDF = b"%PDF-1.7 " + b"x" * 50_000


class Clock:
    """The store's clock, moved by the test (no sleeping)."""

    def __init__(self, now=START):
        self.now = now

    def __call__(self):
        return self.now


def raw(control_id: str, extra: str = "") -> bytes:
    return (f"MSH|^~\\&|LIS|OSP|FSE|REG|2025||ORU^R01|{control_id}|P|2.5\r"
            f"PID|1||RSSMRA80A01H501U||ROSSI^MARIO{extra}\r").encode()


def received(control_id: str, extra: str = "") -> Received:
    return Received(raw=raw(control_id, extra), peer="127.0.0.1:1", msh4="OSP", msh10=control_id,
                    message_type="ORU^R01", charset="iso-8859-1")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    s = SqliteStore(tmp_path / "journal.sqlite", now=clock)
    yield s
    s.close()


def tx(store, fn, *args, **kwargs):
    store.begin()
    try:
        return fn(*args, **kwargs)
    finally:
        store.commit()


def published_message(store, control_id: str, *, code=AckCode.AA, document_id=None, doc_state=None,
                      accession=None, seq=1):
    """A finished message with the artifacts a publication leaves (and its registry entry)."""
    entry = tx(store, store.admit, received(control_id)).entry
    store.begin()
    store.add_artifact(entry.id, "route", "route.json", b'{"accession": "A"}')
    store.add_artifact(entry.id, "render", "cda.xml", b"<ClinicalDocument/>" * 100)
    store.add_artifact(entry.id, "package", "document.pdf", PDF)
    store.add_artifact(entry.id, "submit", "submission.json", b'{"document_id": "%s"}' % (document_id or "").encode())
    if doc_state is not None:
        store.put_document(Document(structure="999", doc_type="LAB", accession=accession or control_id, seq=seq,
                                    document_id=document_id, set_id=document_id, state=doc_state,
                                    message_id=entry.id))
    store.finish(entry.id, Outcome(code=code, text="t", document_id=document_id), ACK)
    store.commit()
    return entry


def names(store, message_id, *, purged: bool):
    return sorted(a.name for a in store.artifacts(message_id) if (a.purged_at is not None) == purged)


# -- schema and migration ---------------------------------------------------------------------


def _v1_journal(path: Path) -> None:
    """A journal as the v1 program created it, with a finished, an AR and an unfinished message."""
    v1 = resources.files("bridge.journal").joinpath("schema/v1.sql").read_text("utf-8")
    db = sqlite3.connect(path)
    db.executescript(f"BEGIN; {v1}\nINSERT INTO version VALUES (1); COMMIT;")
    for n, (control_id, outcome) in enumerate((("OLD1", "AA"), ("OLD2", "AR"), ("OLD3", None)), 1):
        db.execute("INSERT INTO messages (received_at, raw, msh4, msh10, state, ack, ack_code, outcome,"
                   " updated_at) VALUES (?, ?, 'OSP', ?, 'done', ?, ?, ?, ?)",
                   ("2024-01-01T00:00:00.000000+00:00", raw(control_id), control_id,
                    ACK if outcome else None, outcome, outcome, "2024-01-01T00:00:00.000000+00:00"))
        db.execute("INSERT INTO artifacts (message_id, stage, name, content, at) VALUES (?, 'render', 'cda.xml',"
                   " ?, '2024-01-01T00:00:00.000000+00:00')", (n, b"<cda/>"))
    db.execute("INSERT INTO documents (structure, doc_type, accession, document_id, set_id, state, message_id,"
               " updated_at) VALUES ('999', 'LAB', 'A', 'D1', 'D1', 'published', 1, '2024-01-01')")
    db.commit()
    db.close()


def _shape(db) -> tuple:
    tables = {name: [c[1] for c in db.execute(f"PRAGMA table_info({name})")]
              for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                        " AND name NOT LIKE 'sqlite_%'")}
    indexes = sorted(r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    return tables, indexes


def test_v1_journal_upgrades_in_place_at_open(tmp_path, clock):
    path = tmp_path / "journal.sqlite"
    _v1_journal(path)
    store = SqliteStore(path, now=clock)
    assert store.db.execute("SELECT version FROM version").fetchone()[0] == 2
    old = store.get(1)
    assert old.raw == raw("OLD1") and old.raw_sha256 == hashlib.sha256(raw("OLD1")).hexdigest()
    assert old.purged_at is None and store.artifacts(1)[0].purged_at is None
    # Same tables, columns (in order) and indexes as a journal created at version 2.
    fresh = SqliteStore(tmp_path / "fresh.sqlite")
    assert _shape(store.db) == _shape(fresh.db)
    fresh.close()
    # The migrated entries keep their resend rules.
    assert tx(store, store.admit, received("OLD1")).kind is Admit.REPLAY
    assert tx(store, store.admit, received("OLD3")).kind is Admit.IN_FLIGHT
    assert tx(store, store.admit, received("OLD2")).entry.resend_of == 2
    store.close()
    # Opening it again changes nothing.
    again = SqliteStore(path)
    assert again.db.execute("SELECT version FROM version").fetchone()[0] == 2 and len(again.entries()) == 4
    again.close()


def test_migrated_journal_purges_by_the_v1_times(tmp_path, clock):
    path = tmp_path / "journal.sqlite"
    _v1_journal(path)
    store = SqliteStore(path, now=clock)
    report = store.purge(artifacts_before=START, messages_before=START)
    # OLD3 is unfinished: untouched.
    assert (report.artifacts, report.messages) == (2, 2)
    assert store.get(3).raw == raw("OLD3") and store.artifacts(3)[0].content == b"<cda/>"
    store.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "journal.sqlite"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE version SET version = 3")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="schema version 3, newer"):
        SqliteStore(path)


# -- what a purge empties ------------------------------------------------------------------------


def test_purge_empties_old_artifacts_and_raw_but_keeps_the_entry(store, clock):
    entry = published_message(store, "C1", document_id="D1", doc_state="replaced")
    clock.now = START + 100 * DAY
    report = store.purge(artifacts_before=START + DAY, messages_before=START + DAY)
    assert report.artifacts == 4 and report.messages == 1
    assert report.artifact_bytes == len(PDF) + 1900 + 18 + len(b'{"document_id": "D1"}')
    assert report.message_bytes == len(raw("C1"))
    assert report.total_bytes == report.artifact_bytes + report.message_bytes
    after = store.get(entry.id)
    assert after.raw == b"" and after.purged_at == (START + 100 * DAY).isoformat(timespec="microseconds")
    # Metadata, ACK, transitions, the registry and the digest stay.
    assert (after.msh10, after.outcome, after.document_id, after.ack, after.updated_at) == \
        ("C1", "AA", "D1", ACK, entry.received_at)
    assert after.raw_sha256 == hashlib.sha256(raw("C1")).hexdigest()
    assert [t.state for t in store.transitions(entry.id)] == ["received", "done"]
    assert store.find_document("D1").state == "replaced"
    assert all(a.content == b"" and a.purged_at for a in store.artifacts(entry.id))
    assert report.free_bytes > len(PDF) // 2   # the PDF's pages are free inside the file
    # A second run finds nothing more.
    again = store.purge(artifacts_before=START + DAY, messages_before=START + DAY)
    assert (again.artifacts, again.messages, again.total_bytes) == (0, 0, 0)


def test_cut_offs_keep_what_is_younger(store, clock):
    old = published_message(store, "OLD")
    clock.now = START + 10 * DAY
    young = published_message(store, "YOUNG")
    report = store.purge(artifacts_before=START + 5 * DAY, messages_before=None)
    assert report.artifacts == 4 and report.messages == 0 and report.messages_before is None
    assert names(store, old.id, purged=True) == ["cda.xml", "document.pdf", "route.json", "submission.json"]
    assert names(store, young.id, purged=True) == []
    assert store.get(old.id).raw == raw("OLD")    # raw messages kept: messages_before None
    report = store.purge(artifacts_before=None, messages_before=START + 5 * DAY)
    assert (report.artifacts, report.messages) == (0, 1)
    assert store.get(old.id).purged and not store.get(young.id).purged


def test_raw_retention_counts_from_the_outcome(store, clock):
    entry = tx(store, store.admit, received("SLOW"))
    clock.now = START + 30 * DAY      # finished a month after it arrived (requeued meanwhile)
    tx(store, store.finish, entry.entry.id, Outcome(code=AckCode.AA, text="t"), ACK)
    assert store.purge(artifacts_before=None, messages_before=START + 20 * DAY).messages == 0
    assert store.purge(artifacts_before=None, messages_before=START + 31 * DAY).messages == 1


def test_never_purged_unfinished_messages(store, clock):
    entry = tx(store, store.admit, received("WAIT")).entry
    tx(store, store.add_artifact, entry.id, "render", "cda.xml", b"<cda/>")
    tx(store, store.set_state, entry.id, "waiting", "attempt 1")
    clock.now = START + 1000 * DAY
    report = store.purge(artifacts_before=clock.now, messages_before=clock.now)
    assert (report.artifacts, report.messages) == (0, 0)
    assert store.get(entry.id).raw == raw("WAIT") and store.artifacts(entry.id)[0].content == b"<cda/>"


@pytest.mark.parametrize("state", ["published", "pending"])
def test_never_purged_submission_and_route_of_a_live_document(store, clock, state):
    entry = published_message(store, "LIVE", document_id="D1", doc_state=state)
    # A later metadata update the gateway took, recorded under the publishing message.
    tx(store, store.add_artifact, entry.id, "metadata", "submission.json", b'{"document_id": "D1", "v": 2}')
    clock.now = START + 1000 * DAY
    report = store.purge(artifacts_before=clock.now, messages_before=clock.now)
    assert report.artifacts == 2 and report.messages == 1
    assert names(store, entry.id, purged=True) == ["cda.xml", "document.pdf"]
    kept = [a for a in store.artifacts(entry.id) if a.purged_at is None]
    assert [(a.name, a.content) for a in kept] == [("route.json", b'{"accession": "A"}'),
                                                  ("submission.json", b'{"document_id": "D1"}'),
                                                  ("submission.json", b'{"document_id": "D1", "v": 2}')]


def test_live_document_keeps_the_route_of_every_message_naming_it(store, clock):
    publisher = published_message(store, "PUB", document_id="D1", doc_state="published", accession="A")
    # A later message about the same document (e.g. identical resend answered "already published").
    later = published_message(store, "SAME", document_id="D1")
    clock.now = START + 1000 * DAY
    store.purge(artifacts_before=clock.now, messages_before=None)
    assert names(store, later.id, purged=False) == ["route.json", "submission.json"]
    assert names(store, publisher.id, purged=False) == ["route.json", "submission.json"]


def test_once_replaced_or_deleted_everything_old_goes(store, clock):
    entry = published_message(store, "GONE", document_id="D1", doc_state="published")
    clock.now = START + 1000 * DAY
    store.purge(artifacts_before=clock.now, messages_before=clock.now)
    assert names(store, entry.id, purged=False) == ["route.json", "submission.json"]
    tx(store, store.put_document, Document(structure="999", doc_type="LAB", accession="GONE", seq=1,
                                           document_id="D1", set_id="D1", state="deleted", message_id=entry.id))
    assert store.purge(artifacts_before=clock.now, messages_before=clock.now).artifacts == 2
    assert names(store, entry.id, purged=False) == []


def test_dry_run_counts_the_same_and_changes_nothing(store, clock):
    for n in range(5):
        published_message(store, f"M{n}", document_id=f"D{n}", doc_state="published" if n % 2 else "replaced")
    tx(store, store.admit, received("OPEN"))
    clock.now = START + 400 * DAY
    before = store.db.execute("SELECT sum(length(content)) FROM artifacts").fetchone()[0]
    dry = store.purge(artifacts_before=START + DAY, messages_before=START + DAY, dry_run=True)
    assert dry.dry_run and store.db.execute("SELECT sum(length(content)) FROM artifacts").fetchone()[0] == before
    assert not any(e.purged for e in store.entries())
    done = store.purge(artifacts_before=START + DAY, messages_before=START + DAY)
    assert (dry.artifacts, dry.artifact_bytes, dry.messages, dry.message_bytes) == \
        (done.artifacts, done.artifact_bytes, done.messages, done.message_bytes) == (16, dry.artifact_bytes, 5,
                                                                                   5 * len(raw("M0")))
    assert "would purge 16 artifact(s)" in dry.summary() and done.summary().startswith("purged 16 artifact(s)")


def test_batches_go_on_where_the_last_one_stopped(store, clock):
    ids = [published_message(store, f"B{n}", document_id=f"D{n}", doc_state="published").id for n in range(7)]
    clock.now = START + 400 * DAY
    run = store.purge_run(artifacts_before=clock.now, messages_before=clock.now)
    run.batch = 3
    total, steps = run.empty(), 0
    while not run.done:
        store.begin()
        step = run.step()
        store.commit()
        assert step.artifacts <= 3 and step.messages <= 3
        total, steps = total.plus(step), steps + 1
    # 14 purgeable artifacts (the 14 kept ones are looked at once): 5 batches, then 3 for the messages.
    assert (total.artifacts, total.messages, steps) == (14, 7, 8)
    assert all(store.get(i).purged and names(store, i, purged=False) == ["route.json", "submission.json"]
               for i in ids)


def test_purge_refuses_to_run_inside_a_transaction(store):
    store.begin()
    with pytest.raises(RuntimeError, match="its own transactions"):
        store.purge(artifacts_before=START, messages_before=START)
    store.rollback()


def test_report_summary_names_no_patient_data_and_says_when_retention_is_off():
    report = PurgeReport(artifacts=2, artifact_bytes=3 * 1024 * 1024, messages=1, message_bytes=900,
                         artifacts_before="2025-01-01T00:00:00.000000+00:00",
                         messages_before="2024-01-01T00:00:00.000000+00:00", free_bytes=4 * 1024 * 1024)
    assert report.summary() == ("purged 2 artifact(s) (3.0 MB) made before 2025-01-01T00:00:00Z and the raw "
                                "bytes of 1 message(s) (900 bytes) finished before 2024-01-01T00:00:00Z; "
                                "3.0 MB in all; 4.0 MB free in the journal file")
    assert PurgeReport().summary() == "retention is off: nothing to purge"


def test_cutoffs_from_the_settings():
    from bridge.config import JournalSettings
    now = datetime.datetime(2026, 3, 1, tzinfo=UTC)
    assert retention.cutoffs(JournalSettings(), now) == (now - 90 * DAY, now - 365 * DAY)
    assert retention.cutoffs(JournalSettings(keep_artifacts_days=0, keep_messages_days=7), now) == \
        (None, now - 7 * DAY)


# -- resends of purged messages -------------------------------------------------------------------


@pytest.mark.parametrize("code", [AckCode.AA, AckCode.AE])
def test_resend_of_a_purged_message_gets_its_stored_ack(store, clock, code):
    entry = published_message(store, "R1", code=code)
    clock.now = START + 400 * DAY
    store.purge(artifacts_before=clock.now, messages_before=clock.now)
    again = tx(store, store.admit, received("R1"))
    assert again.kind is Admit.REPLAY and again.entry.id == entry.id and again.entry.ack == ACK
    assert len(store.entries()) == 1       # nothing new to process: nothing published again


def test_resend_of_a_purged_ar_is_processed_again_with_its_bytes(store, clock):
    entry = published_message(store, "R2", code=AckCode.AR)
    clock.now = START + 400 * DAY
    store.purge(artifacts_before=None, messages_before=clock.now)
    again = tx(store, store.admit, received("R2"))
    assert again.kind is Admit.NEW and again.entry.resend_of == entry.id and again.entry.raw == raw("R2")


def test_other_bytes_under_a_purged_control_id_are_still_a_conflict(store, clock):
    published_message(store, "R3")
    clock.now = START + 400 * DAY
    store.purge(artifacts_before=None, messages_before=clock.now)
    assert tx(store, store.admit, received("R3", extra="X")).kind is Admit.CONFLICT


def test_a_purged_message_cannot_be_resubmitted(store, clock):
    entry = published_message(store, "R4")
    clock.now = START + 400 * DAY
    store.purge(artifacts_before=None, messages_before=clock.now)
    store.begin()
    with pytest.raises(ValueError, match="purged on 2026-02-14"):
        store.resubmit(entry.id)
    store.rollback()


# -- the async journal -----------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_async_purge_runs_on_the_writer_thread_between_other_writes(tmp_path, clock, monkeypatch):
    from twisted.internet import defer, reactor
    path = tmp_path / "journal.sqlite"
    seed = SqliteStore(path, now=clock)
    for n in range(6):
        published_message(seed, f"A{n}", document_id=f"D{n}", doc_state="replaced")
    seed.close()
    threads = set()
    step = retention.Purge.step

    def recording_step(self):
        threads.add(threading.current_thread().name)
        return step(self)

    monkeypatch.setattr(retention.Purge, "step", recording_step)
    monkeypatch.setattr(retention, "BATCH", 2)
    clock.now = START + 400 * DAY
    journal = SqliteJournal(path, reactor=reactor, now=clock)
    purging = journal.purge(artifacts_before=clock.now, messages_before=clock.now)
    # Writes submitted meanwhile go through between the batches.
    admitted = yield defer.gatherResults([journal.admit(received(f"N{n}")) for n in range(20)])
    report = yield purging
    assert threads == {"journal-writer"}
    assert (report.artifacts, report.messages) == (24, 6) and not report.dry_run
    assert all(a.kind is Admit.NEW for a in admitted)
    # The new messages are unfinished: untouched by the purge.
    for admission in admitted:
        assert not (yield journal.get(admission.entry.id)).purged
    dry = yield journal.purge(artifacts_before=clock.now, messages_before=clock.now, dry_run=True)
    assert dry.dry_run and (dry.artifacts, dry.messages) == (0, 0)
    yield journal.close()


@pytest_twisted.inlineCallbacks
def test_async_purge_failure_fails_only_the_purge(tmp_path, clock, monkeypatch):
    from twisted.internet import reactor
    journal = SqliteJournal(tmp_path / "journal.sqlite", reactor=reactor, now=clock)

    def broken(self):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(retention.Purge, "step", broken)
    with pytest.raises(sqlite3.OperationalError):
        yield journal.purge(artifacts_before=START, messages_before=START)
    assert (yield journal.admit(received("AFTER"))).kind is Admit.NEW
    yield journal.close()


@pytest_twisted.inlineCallbacks
def test_closing_the_journal_ends_a_purge_after_its_batch(tmp_path, clock, monkeypatch):
    from twisted.internet import reactor
    path = tmp_path / "journal.sqlite"
    seed = SqliteStore(path, now=clock)
    for n in range(5):
        published_message(seed, f"S{n}")
    seed.close()
    monkeypatch.setattr(retention, "BATCH", 1)
    clock.now = START + 400 * DAY
    journal = SqliteJournal(path, reactor=reactor, now=clock)
    purging = journal.purge(artifacts_before=clock.now, messages_before=clock.now)
    yield journal.close()
    report = yield purging
    assert report.artifacts == 1 and report.messages == 0     # the batch under way, then no more
    store = SqliteStore(path)
    assert sum(a.purged_at is not None for e in store.entries() for a in store.artifacts(e.id)) == 1
    store.close()
