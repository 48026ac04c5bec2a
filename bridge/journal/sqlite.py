"""The SQLite journal: WAL, ``synchronous=FULL``, one writer thread.

:class:`SqliteStore` is the synchronous store (the CLI uses it directly);
:class:`SqliteJournal` puts it behind the asynchronous
:class:`~bridge.journal.Journal` protocol. All statements run on one
dedicated thread, so the reactor never waits for fsync. Operations queued
while a commit is under way are grouped into the next transaction (each in
its own savepoint), so many connections share one fsync; a Deferred fires
only after the commit that holds its operation. Long work (the retention
purge) runs batch by batch on the writer thread itself, between groups.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import queue
import sqlite3
import threading
from dataclasses import fields as dataclass_fields
from importlib import resources
from pathlib import Path
from typing import Callable

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.failure import Failure

from bridge.alerts import Kind as AlertKind, raise_alert
from bridge.errors import JournalDamaged
from bridge.journal import (Admission, Admit, Artifact, Document, Entry, GatewayCall, PurgeReport, Received,
                            State, Transition, state_for)
from bridge.journal.retention import Purge
from bridge.outcome import Outcome

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
#: At most this many queued operations share one transaction.
GROUP_LIMIT = 256
#: Writes submitted with ``urgent=False`` wait at most this long for a group to join.
LAZY_DELAY_S = 0.05


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")


def _schema(name: str) -> str:
    return resources.files("bridge.journal").joinpath(f"schema/{name}.sql").read_text("utf-8")


def _sha256(raw: bytes | None) -> str | None:
    return hashlib.sha256(raw).hexdigest() if raw is not None else None


_ENTRY_COLUMNS = [f.name for f in dataclass_fields(Entry)]
_CALL_COLUMNS = [f.name for f in dataclass_fields(GatewayCall)]
_DOC_COLUMNS = [f.name for f in dataclass_fields(Document)]
_ARTIFACT_COLUMNS = [f.name for f in dataclass_fields(Artifact)]
_FINAL_REPLAYED = ("AA", "AE", "CA", "CE")


class SqliteStore:
    """The journal's SQL on one connection. Not thread-safe: one thread owns it.

    *path* may be ``":memory:"``. Each public method is one unit of work; the
    caller decides where transactions begin and end (see :class:`SqliteJournal`);
    used alone, call :meth:`commit` after writes.
    """

    def __init__(self, path: str | Path, *, now: Callable[[], datetime.datetime] = utc_now,
                 check: bool = False):
        """*check*: run SQLite's quick integrity check first (the service's start) and refuse
        a damaged file with :class:`~bridge.errors.JournalDamaged`."""
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._now = now
        # isolation_level=None: transactions are explicit (BEGIN/COMMIT below).
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=10000")
            if check:
                problems = self.integrity(quick=True)
                if problems:
                    raise JournalDamaged(self.path, problems[0])
            self._migrate()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _damage(exc):
                raise   # locked, read-only, no space: not damage
            self.db.close()
            raise JournalDamaged(self.path, str(exc)) from None
        except JournalDamaged:
            self.db.close()
            raise

    def integrity(self, *, quick: bool = False) -> list[str]:
        """SQLite's integrity check (``quick``: quick_check, linear time): the problems, [] if none."""
        rows = self.db.execute("PRAGMA quick_check" if quick else "PRAGMA integrity_check").fetchall()
        problems = [r[0] for r in rows]
        return [] if problems == ["ok"] else problems
        # Set-aside entries are few among many: a partial index counts them for /healthz
        # and /metrics without a scan (idempotent; schema versions before it lack it).
        self.db.execute(f"CREATE INDEX IF NOT EXISTS messages_set_aside ON messages (id)"
                        f" WHERE state = '{State.SET_ASIDE}'")

    def _migrate(self) -> None:
        """Create the schema, or upgrade an older journal in place (one transaction each)."""
        exists = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='version'").fetchone()
        if not exists:
            # One script, one transaction: a half-created schema is never committed.
            self.db.executescript(f"BEGIN IMMEDIATE; {_schema(f'v{SCHEMA_VERSION}')}\n"
                                  f"INSERT INTO version VALUES ({SCHEMA_VERSION}); COMMIT;")
            return
        version = self.db.execute("SELECT version FROM version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"journal {self.path} has schema version {version}, newer than this program")
        if version == 1:
            self.db.create_function("sha256", 1, _sha256, deterministic=True)
            try:
                # The version is read again inside the write lock: another process may have
                # upgraded the file meanwhile.
                self.db.execute("BEGIN IMMEDIATE")
                if self.db.execute("SELECT version FROM version").fetchone()[0] == 1:
                    for statement in _statements(_schema("upgrade-v2")):
                        self.db.execute(statement)
                self.db.execute("COMMIT")
            except BaseException:
                self.rollback()
                raise

    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def close(self) -> None:
        self.rollback()
        self.db.close()

    def now(self) -> str:
        return _iso(self._now())

    def clock(self) -> datetime.datetime:
        """The store's current time (the clock passed in)."""
        return self._now()

    # -- messages ---------------------------------------------------------

    def admit(self, received: Received) -> Admission:
        """Journal *received* and decide how to answer it (interface.md, ACK contract, "Resends")."""
        resend_of = None
        if received.msh10:
            # By digest, not bytes: a purged entry (raw emptied) is still the same message.
            same = self._entry("SELECT * FROM messages WHERE msh4 = ? AND msh10 = ? AND raw_sha256 = ? "
                               "ORDER BY id DESC LIMIT 1", (received.msh4, received.msh10,
                                                            _sha256(received.raw)))
            if same is not None:
                if same.outcome in _FINAL_REPLAYED and same.ack is not None:
                    return Admission(Admit.REPLAY, same)
                if same.outcome is None:
                    # Commit mode stored its ACK at once: that is the answer to a resend.
                    return Admission(Admit.REPLAY if same.ack is not None else Admit.IN_FLIGHT, same)
                resend_of = same.id  # earlier AR: processed again
            else:
                other = self.db.execute("SELECT id FROM messages WHERE msh4 = ? AND msh10 = ? LIMIT 1",
                                        (received.msh4, received.msh10)).fetchone()
                if other is not None:
                    entry = self._insert(dataclasses.replace(received, ack=None), resend_of=other["id"])
                    return Admission(Admit.CONFLICT, entry)
        return Admission(Admit.NEW, self._insert(received, resend_of=resend_of))

    def _insert(self, received: Received, *, resend_of: int | None) -> Entry:
        now = self.now()
        ack_code = _msa1(received.ack) if received.ack is not None else None
        digest = _sha256(received.raw)
        cursor = self.db.execute(
            "INSERT INTO messages (received_at, peer, raw, raw_sha256, msh4, msh10, message_type, charset, state,"
            " resend_of, ack, ack_code, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now, received.peer, received.raw, digest, received.msh4, received.msh10, received.message_type,
             received.charset, State.RECEIVED, resend_of, received.ack, ack_code, now))
        detail = f"resend of {resend_of}" if resend_of else ""
        self.db.execute("INSERT INTO transitions (message_id, state, at, detail) VALUES (?, ?, ?, ?)",
                        (cursor.lastrowid, State.RECEIVED, now, detail))
        return Entry(id=cursor.lastrowid, received_at=now, peer=received.peer, raw=received.raw,
                     msh4=received.msh4, msh10=received.msh10, message_type=received.message_type,
                     charset=received.charset, state=State.RECEIVED, updated_at=now, resend_of=resend_of,
                     ack=received.ack, ack_code=ack_code, raw_sha256=digest)

    def set_state(self, message_id: int, state: str, detail: str = "") -> None:
        now = self.now()
        self.db.execute("UPDATE messages SET state = ?, updated_at = ? WHERE id = ?", (state, now, message_id))
        self.db.execute("INSERT INTO transitions (message_id, state, at, detail) VALUES (?, ?, ?, ?)",
                        (message_id, state, now, detail))

    def record_ack(self, message_id: int, ack: bytes, ack_code: str) -> None:
        self.db.execute("UPDATE messages SET ack = ?, ack_code = ?, updated_at = ? WHERE id = ?",
                        (ack, ack_code, self.now(), message_id))

    def finish(self, message_id: int, outcome: Outcome, ack: bytes | None = None, *,
               state: str | None = None, detail: str | None = None) -> bytes | None:
        """Record the outcome; returns the ACK stored for the entry (what a resend gets).
        *state*: instead of the one the outcome's code gives (``set aside``)."""
        now = self.now()
        code = outcome.code.value
        state = state or state_for(code)
        error = "; ".join(f"{e.code} {e.location} {e.text}".replace("  ", " ") for e in outcome.errors
                          if e.severity != "I") or None
        # An ACK already sent (commit mode) stays the one a resend gets: COALESCE keeps it.
        row = self.db.execute(
            "UPDATE messages SET state = ?, outcome = ?, document_id = COALESCE(?, document_id),"
            " operation = COALESCE(?, operation), x_cart_id = COALESCE(?, x_cart_id),"
            " trace_id = COALESCE(?, trace_id), workflow_instance_id = COALESCE(?, workflow_instance_id),"
            " error = ?, ack = COALESCE(ack, ?), ack_code = COALESCE(ack_code, ?), updated_at = ?"
            " WHERE id = ? RETURNING ack",
            (state, code, outcome.document_id, outcome.operation, outcome.x_cart_id, outcome.trace_id,
             outcome.workflow_instance_id, error, ack, _msa1(ack) if ack is not None else None, now,
             message_id)).fetchone()
        if row is None:
            raise KeyError(f"no journal entry {message_id}")
        self.db.execute("INSERT INTO transitions (message_id, state, at, detail) VALUES (?, ?, ?, ?)",
                        (message_id, state, now, detail or f"{code} {outcome.text}".strip()))
        return row[0]

    def set_aside(self, message_id: int, outcome: Outcome, reason: str) -> None:
        self.finish(message_id, outcome, state=State.SET_ASIDE, detail=reason)

    def count_state(self, state: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM messages WHERE state = ?", (state,)).fetchone()[0]

    def get(self, message_id: int) -> Entry | None:
        return self._entry("SELECT * FROM messages WHERE id = ?", (message_id,))

    def find(self, key: str) -> list[Entry]:
        key = key.strip()
        by_id = [self.get(int(key))] if key.isdigit() else []
        # Any call's X-Cart-id finds its message (a retry's, or the first call of a plan of two).
        rows = self._entries(
            "SELECT * FROM messages WHERE msh10 = ? OR document_id = ? OR x_cart_id = ?"
            " OR id IN (SELECT message_id FROM gateway_calls WHERE x_cart_id = ?) ORDER BY id",
            (key, key, key, key))
        seen = {e.id for e in by_id if e}
        return [e for e in by_id if e] + [e for e in rows if e.id not in seen]

    def entries(self, limit: int = 50, before: int | None = None) -> list[Entry]:
        if before is None:
            return self._entries("SELECT * FROM messages ORDER BY id DESC LIMIT ?", (limit,))
        return self._entries("SELECT * FROM messages WHERE id < ? ORDER BY id DESC LIMIT ?", (before, limit))

    def all_entries(self):
        """Every entry, oldest first (a generator, for export)."""
        for row in self.db.execute("SELECT * FROM messages ORDER BY id"):
            yield _to_entry(row)

    def unfinished(self) -> list[Entry]:
        return self._entries("SELECT * FROM messages WHERE outcome IS NULL ORDER BY id", ())

    def transitions(self, message_id: int) -> list[Transition]:
        return [Transition(message_id=r["message_id"], state=r["state"], at=r["at"], detail=r["detail"])
                for r in self.db.execute("SELECT * FROM transitions WHERE message_id = ? ORDER BY id",
                                         (message_id,))]

    def resubmit(self, message_id: int) -> Entry:
        """A new unfinished entry with the same bytes (``journal resubmit``)."""
        entry = self.get(message_id)
        if entry is None:
            raise KeyError(message_id)
        if entry.purged:
            raise ValueError(f"entry {message_id}: the message was purged on {entry.purged_at[:10]}")
        received = Received(raw=entry.raw, peer="resubmit", msh4=entry.msh4, msh10=entry.msh10,
                            message_type=entry.message_type, charset=entry.charset)
        return self._insert(received, resend_of=entry.id)

    # -- artifacts, gateway calls, documents -----------------------------------

    def add_artifact(self, message_id: int, stage: str, name: str, content: bytes) -> None:
        self.db.execute("INSERT INTO artifacts (message_id, stage, name, content, at) VALUES (?, ?, ?, ?, ?)",
                        (message_id, stage, name, content, self.now()))

    def artifacts(self, message_id: int) -> list[Artifact]:
        return [Artifact(**{k: r[k] for k in _ARTIFACT_COLUMNS})
                for r in self.db.execute("SELECT * FROM artifacts WHERE message_id = ? ORDER BY id",
                                         (message_id,))]

    def gateway_call_sent(self, message_id: int | None, operation: str, document_id: str | None) -> int:
        cursor = self.db.execute(
            "INSERT INTO gateway_calls (message_id, operation, document_id, state, at) VALUES (?, ?, ?, 'sent', ?)",
            (message_id, operation, document_id, self.now()))
        return cursor.lastrowid

    def gateway_call_answered(self, call_id: int, *, http_status: int | None, x_cart_id: str | None = None,
                              trace_id: str | None = None, span_id: str | None = None,
                              workflow_instance_id: str | None = None, warning: str | None = None,
                              problem: str | None = None) -> None:
        self.db.execute(
            "UPDATE gateway_calls SET state = 'answered', http_status = ?, x_cart_id = ?, trace_id = ?,"
            " span_id = ?, workflow_instance_id = ?, warning = ?, problem = ?, at = ? WHERE id = ?",
            (http_status, x_cart_id, trace_id, span_id, workflow_instance_id, warning, problem, self.now(),
             call_id))

    def gateway_calls(self, message_id: int) -> list[GatewayCall]:
        rows = self.db.execute("SELECT * FROM gateway_calls WHERE message_id = ? ORDER BY id", (message_id,))
        return [GatewayCall(**{k: r[k] for k in _CALL_COLUMNS}) for r in rows]

    def get_document(self, structure: str, doc_type: str, accession: str, seq: int = 0) -> Document | None:
        row = self.db.execute("SELECT * FROM documents WHERE structure = ? AND doc_type = ? AND accession = ?"
                              " AND seq = ?", (structure, doc_type, accession, seq)).fetchone()
        return Document(**{k: row[k] for k in _DOC_COLUMNS}) if row else None

    def find_document(self, document_id: str) -> Document | None:
        """The registry entry of *document_id*, if any."""
        row = self.db.execute("SELECT * FROM documents WHERE document_id = ?", (document_id,)).fetchone()
        return Document(**{k: row[k] for k in _DOC_COLUMNS}) if row else None

    def documents_for(self, structure: str, doc_type: str, accession: str) -> list[Document]:
        """Every registry entry of one accession (all seq), by seq."""
        rows = self.db.execute("SELECT * FROM documents WHERE structure = ? AND doc_type = ? AND accession = ?"
                               " ORDER BY seq", (structure, doc_type, accession))
        return [Document(**{k: r[k] for k in _DOC_COLUMNS}) for r in rows]

    def put_document(self, document: Document) -> None:
        self.db.execute(
            "INSERT INTO documents (structure, doc_type, accession, seq, document_id, set_id, version, state,"
            " content_hash, message_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (structure, doc_type, accession, seq) DO UPDATE SET document_id = excluded.document_id,"
            " set_id = excluded.set_id, version = excluded.version, state = excluded.state,"
            " content_hash = excluded.content_hash, message_id = excluded.message_id,"
            " updated_at = excluded.updated_at",
            (document.structure, document.doc_type, document.accession, document.seq, document.document_id,
             document.set_id, document.version, document.state, document.content_hash, document.message_id,
             self.now()))

    # -- retention -------------------------------------------------------------

    def purge_run(self, *, artifacts_before: datetime.datetime | None,
                  messages_before: datetime.datetime | None) -> Purge:
        """A purge to run step by step, each step in a transaction of its own (bridge.journal.retention)."""
        return Purge(self.db, artifacts_before=artifacts_before, messages_before=messages_before, now=self.now)

    def purge(self, *, artifacts_before: datetime.datetime | None, messages_before: datetime.datetime | None,
              dry_run: bool = False) -> PurgeReport:
        """Retention: see :meth:`bridge.journal.Journal.purge`. Runs its own transactions, one
        per batch (call it outside one): another process's writers wait a batch at most."""
        if self.db.in_transaction:
            raise RuntimeError("purge runs its own transactions: commit first")
        run = self.purge_run(artifacts_before=artifacts_before, messages_before=messages_before)
        if dry_run:
            return run.count()
        report = run.empty()
        while not run.done:
            self.begin()
            try:
                report = report.plus(run.step())
                self.commit()
            except BaseException:
                self.rollback()
                raise
        return report

    def vacuum(self) -> None:
        """Rewrite the file without its free pages (``VACUUM``), then empty the WAL into it.

        Holds the write lock throughout and needs free disk as large as the file: for an
        operator, with the service stopped. The service never does it: free pages are
        reused by later writes, so a journal purged every day stops growing anyway.
        """
        if self.db.in_transaction:
            raise RuntimeError("VACUUM cannot run inside a transaction")
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- helpers -------------------------------------------------------------

    def _entry(self, sql: str, params: tuple) -> Entry | None:
        row = self.db.execute(sql, params).fetchone()
        return _to_entry(row) if row else None

    def _entries(self, sql: str, params: tuple) -> list[Entry]:
        return [_to_entry(r) for r in self.db.execute(sql, params)]


def _to_entry(row: sqlite3.Row) -> Entry:
    return Entry(**{k: row[k] for k in _ENTRY_COLUMNS})


def _statements(script: str) -> list[str]:
    """The statements of a schema script (comments dropped; none contains a ';' inside)."""
    text = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


def _msa1(ack: bytes) -> str | None:
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA") and len(segment) > 4:
            return segment[4:].split(segment[3:4])[0].decode("ascii", "replace") or None
    return None


_STOP = object()


def _storage_error(exc: BaseException) -> bool:
    """Whether a failed operation failed for the storage (full, I/O, read-only), not its data."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError)


def _damage(exc: sqlite3.Error) -> bool:
    """Whether an error says the file itself is damaged (rather than busy, read-only or full)."""
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


@dataclasses.dataclass(frozen=True, slots=True)
class _OnWriter:
    """Marks a queued operation that runs on the writer thread (SqliteJournal._on_writer)."""

    method: Callable


class SqliteJournal:
    """The :class:`~bridge.journal.Journal` on SQLite; commits (fsync) on one writer thread.

    Group commit, split where the cost is: the statements of a group run on
    the reactor thread inside an open transaction (in-memory work, no disk
    sync), then the COMMIT, where SQLite writes and fsyncs the WAL, runs on
    the writer thread while the reactor goes on; operations submitted in the
    meantime form the next group. A Deferred fires only after the commit that
    holds its operation. Moving each statement to the thread instead costs a
    thread hand-off and a GIL round per statement: measured at about half the
    throughput (bench/bench_mllp.py).
    """

    def __init__(self, path: str | Path, *, reactor=None, now: Callable[[], datetime.datetime] = utc_now,
                 check: bool = False):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._store = SqliteStore(path, now=now, check=check)
        self.write_failing: str | None = None
        """Why the last group could not be written (disk full, I/O error); None once one is."""
        self._pending: list = []        # (method, args, kwargs, deferred) waiting for the next group
        self._scheduled = False         # a group start is scheduled on the reactor
        self._urgent = 0                # pending operations someone waits for
        self._lazy_timer = None
        self._committing = False        # the writer thread owns the connection
        self._closed: Deferred | None = None
        self._commits: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run_commits, name="journal-writer", daemon=True)
        self._thread.start()

    @property
    def path(self) -> str:
        return self._store.path

    def _submit(self, method, *args, **kwargs) -> Deferred:
        return self._enqueue(True, method, args, kwargs)

    def _enqueue(self, urgent: bool, method, args, kwargs) -> Deferred:
        if self._closed is not None:
            raise RuntimeError("the journal is closed")
        d: Deferred = Deferred()
        self._pending.append((method, args, kwargs, d))
        if urgent:
            self._urgent += 1
        self._schedule()
        return d

    def _schedule(self) -> None:
        if self._scheduled or self._committing:
            return
        if self._urgent or self._closed is not None:
            # On the next turn of the reactor, so that operations submitted together share a group.
            self._scheduled = True
            self._reactor.callLater(0, self._start_group)
        elif self._pending and (self._lazy_timer is None or not self._lazy_timer.active()):
            # Only writes nobody waits for: they ride with the next group, or go alone soon.
            self._lazy_timer = self._reactor.callLater(LAZY_DELAY_S, self._lazy_due)

    def _lazy_due(self) -> None:
        self._urgent += 1   # counted as one urgent operation: the next group takes them
        self._schedule()

    def _on_writer(self, method, *args) -> Deferred:
        """``method(*args)`` in a transaction of its own on the writer thread, in its turn
        among the other operations: long work (a purge batch) that must not hold up the reactor."""
        return self._enqueue(True, _OnWriter(method), args, {})

    def _start_group(self) -> None:
        self._scheduled = False
        if self._committing:
            return
        self._urgent = 0
        if self._pending and isinstance(self._pending[0][0], _OnWriter):
            # Its own turn on the writer thread; the reactor's groups wait for it.
            self._committing = True
            self._commits.put(self._pending.pop(0))
            if self._pending:
                self._urgent = 1
            return
        size = next((i for i, item in enumerate(self._pending[:GROUP_LIMIT]) if isinstance(item[0], _OnWriter)),
                    min(GROUP_LIMIT, len(self._pending)))
        work, self._pending = self._pending[:size], self._pending[size:]
        if self._pending:
            self._urgent = 1   # more than one group's worth: go on at once
        if not work:
            if self._closed is not None:
                self._committing = True
                self._commits.put(_STOP)
            return
        results = self._execute(work)
        if results is None:
            return
        self._committing = True
        self._commits.put(results)

    def _execute(self, work: list) -> list | None:
        """Run a group's statements in an open transaction (reactor thread).

        Optimistic: no savepoints. If an operation fails, the group is rolled
        back and replayed with one savepoint per operation, so only the
        failing operation fails. Returns [(deferred, result or Failure)].
        """
        store = self._store
        try:
            store.begin()
            return [(d, method(*args, **kwargs)) for method, args, kwargs, d in work]
        except Exception:
            store.rollback()
        try:
            store.begin()
            results = []
            for method, args, kwargs, d in work:
                store.db.execute("SAVEPOINT op")
                try:
                    results.append((d, method(*args, **kwargs)))
                    store.db.execute("RELEASE op")
                except Exception:
                    results.append((d, Failure()))
                    store.db.execute("ROLLBACK TO op")
                    store.db.execute("RELEASE op")
            return results
        except Exception:
            failure = Failure()
            store.rollback()
            self._note_writes([(None, failure)], wrote=False)
            _deliver([(d, failure) for _, _, _, d in work])
            return None

    def _run_commits(self) -> None:
        """The writer thread: commit (write and fsync the WAL) each group handed over."""
        store = self._store
        changes = store.db.total_changes
        while True:
            results = self._commits.get()
            if results is _STOP:
                store.close()
                self._reactor.callFromThread(self._closed.callback, None)
                return
            if isinstance(results, tuple):
                self._reactor.callFromThread(self._committed, [self._run_on_writer(results)])
                continue
            wrote = False
            try:
                store.commit()
                wrote = store.db.total_changes != changes
                changes = store.db.total_changes
            except Exception:
                # Nothing of this group is durable: every operation in it fails.
                failure = Failure()
                store.rollback()
                results = [(d, failure) for d, _ in results]
            self._reactor.callFromThread(self._committed, results, wrote)

    def _run_on_writer(self, item):
        """One :meth:`_on_writer` operation (writer thread): ``(deferred, result or Failure)``."""
        op, args, _, d = item
        store = self._store
        try:
            store.begin()
            result = op.method(*args)
            store.commit()
            return d, result
        except Exception:
            failure = Failure()
            store.rollback()
            return d, failure

    def _committed(self, results: list, wrote: bool = False) -> None:
        self._committing = False
        self._note_writes(results, wrote)
        self._schedule()
        _deliver(results)

    def _note_writes(self, results: list, wrote: bool) -> None:
        """Keep :attr:`write_failing` true to the last write: /healthz answers 503 while it is set."""
        failed = next((r.value for _, r in results if isinstance(r, Failure) and _storage_error(r.value)), None)
        if failed is not None:
            if self.write_failing is None:
                raise_alert(AlertKind.STORAGE, f"the journal {self.path} cannot be written: {failed}; "
                                               f"messages are answered AR until it can")
            self.write_failing = str(failed)
        elif wrote and self.write_failing is not None:
            log.warning("the journal %s can be written again", self.path)
            self.write_failing = None

    # -- the Journal protocol ---------------------------------------------

    def admit(self, received: Received) -> Deferred:
        return self._submit(self._store.admit, received)

    def set_state(self, message_id: int, state: str, detail: str = "") -> Deferred:
        return self._submit(self._store.set_state, message_id, state, detail)

    def record_ack(self, message_id: int, ack: bytes, ack_code: str) -> Deferred:
        return self._submit(self._store.record_ack, message_id, ack, ack_code)

    def finish(self, message_id: int, outcome: Outcome, ack: bytes | None = None, *,
               urgent: bool = True) -> Deferred:
        return self._enqueue(urgent, self._store.finish, (message_id, outcome, ack), {})

    def set_aside(self, message_id: int, outcome: Outcome, reason: str) -> Deferred:
        return self._submit(self._store.set_aside, message_id, outcome, reason)

    def count_state(self, state: str) -> Deferred:
        return self._submit(self._store.count_state, state)

    def add_artifact(self, message_id: int, stage: str, name: str, content: bytes) -> Deferred:
        return self._submit(self._store.add_artifact, message_id, stage, name, content)

    def gateway_call_sent(self, message_id, operation, document_id) -> Deferred:
        return self._submit(self._store.gateway_call_sent, message_id, operation, document_id)

    def gateway_call_answered(self, call_id: int, **kwargs) -> Deferred:
        return self._submit(self._store.gateway_call_answered, call_id, **kwargs)

    def get_document(self, structure: str, doc_type: str, accession: str, seq: int = 0) -> Deferred:
        return self._submit(self._store.get_document, structure, doc_type, accession, seq)

    def documents_for(self, structure: str, doc_type: str, accession: str) -> Deferred:
        return self._submit(self._store.documents_for, structure, doc_type, accession)

    def put_document(self, document: Document) -> Deferred:
        return self._submit(self._store.put_document, document)

    def get(self, message_id: int) -> Deferred:
        return self._submit(self._store.get, message_id)

    def find(self, key: str) -> Deferred:
        return self._submit(self._store.find, key)

    def entries(self, limit: int = 50, before: int | None = None) -> Deferred:
        return self._submit(self._store.entries, limit, before)

    def transitions(self, message_id: int) -> Deferred:
        return self._submit(self._store.transitions, message_id)

    def artifacts(self, message_id: int) -> Deferred:
        return self._submit(self._store.artifacts, message_id)

    def gateway_calls(self, message_id: int) -> Deferred:
        return self._submit(self._store.gateway_calls, message_id)

    def unfinished(self) -> Deferred:
        return self._submit(self._store.unfinished)

    def resubmit(self, message_id: int) -> Deferred:
        return self._submit(self._store.resubmit, message_id)

    @inlineCallbacks
    def purge(self, *, artifacts_before: datetime.datetime | None, messages_before: datetime.datetime | None,
              dry_run: bool = False):
        """Batch after batch on the writer thread, other operations going on in between;
        a close ends it after the batch under way (the report says what was done)."""
        run = self._store.purge_run(artifacts_before=artifacts_before, messages_before=messages_before)
        if dry_run:
            return (yield self._on_writer(run.count))
        report = run.empty()
        while not run.done and self._closed is None:
            report = report.plus((yield self._on_writer(run.step)))
        return report

    def close(self) -> Deferred:
        """Finish queued work, close the database; fires when it is closed."""
        if self._closed is None:
            self._closed = Deferred()
            self._schedule()
        return self._closed


def _deliver(results) -> None:
    for d, result in results:
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)
