"""The SQLite journal: WAL, ``synchronous=FULL``, one writer thread.

:class:`SqliteStore` is the synchronous store (the CLI uses it directly);
:class:`SqliteJournal` puts it behind the asynchronous
:class:`~bridge.journal.Journal` protocol. All statements run on one
dedicated thread, so the reactor never waits for fsync. Operations queued
while a commit is under way are grouped into the next transaction (each in
its own savepoint), so many connections share one fsync; a Deferred fires
only after the commit that holds its operation.
"""

from __future__ import annotations

import datetime
import queue
import sqlite3
import threading
from dataclasses import fields as dataclass_fields
from importlib import resources
from pathlib import Path
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from bridge.journal import (Admission, Admit, Artifact, Document, Entry, GatewayCall, Received,
                            State, Transition, state_for)
from bridge.outcome import Outcome

SCHEMA_VERSION = 1
#: At most this many queued operations share one transaction.
GROUP_LIMIT = 256


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")


def _schema(version: int) -> str:
    return resources.files("bridge.journal").joinpath(f"schema/v{version}.sql").read_text("utf-8")


_ENTRY_COLUMNS = [f.name for f in dataclass_fields(Entry)]
_CALL_COLUMNS = [f.name for f in dataclass_fields(GatewayCall)]
_DOC_COLUMNS = [f.name for f in dataclass_fields(Document)]
_FINAL_REPLAYED = ("AA", "AE", "CA", "CE")


class SqliteStore:
    """The journal's SQL on one connection. Not thread-safe: one thread owns it.

    *path* may be ``":memory:"``. Each public method is one unit of work; the
    caller decides where transactions begin and end (see :class:`SqliteJournal`);
    used alone, call :meth:`commit` after writes.
    """

    def __init__(self, path: str | Path, *, now: Callable[[], datetime.datetime] = utc_now):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._now = now
        # isolation_level=None: transactions are explicit (BEGIN/COMMIT below).
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    def _migrate(self) -> None:
        exists = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='version'").fetchone()
        if exists:
            version = self.db.execute("SELECT version FROM version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"journal {self.path} has schema version {version}, newer than this program")
            return
        # One script, one transaction: a half-created schema is never committed.
        self.db.executescript(f"BEGIN IMMEDIATE; {_schema(1)}\nINSERT INTO version VALUES ({SCHEMA_VERSION}); COMMIT;")

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

    # -- messages ---------------------------------------------------------

    def admit(self, received: Received) -> Admission:
        """Journal *received* and decide how to answer it (interface.md, ACK contract, "Resends")."""
        resend_of = None
        if received.msh10:
            same = self._entry("SELECT * FROM messages WHERE msh4 = ? AND msh10 = ? AND raw = ? "
                               "ORDER BY id DESC LIMIT 1", (received.msh4, received.msh10, received.raw))
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
                    entry = self._insert(received, resend_of=other["id"])
                    return Admission(Admit.CONFLICT, entry)
        return Admission(Admit.NEW, self._insert(received, resend_of=resend_of))

    def _insert(self, received: Received, *, resend_of: int | None) -> Entry:
        now = self.now()
        cursor = self.db.execute(
            "INSERT INTO messages (received_at, peer, raw, msh4, msh10, message_type, charset, state,"
            " resend_of, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now, received.peer, received.raw, received.msh4, received.msh10, received.message_type,
             received.charset, State.RECEIVED, resend_of, now))
        detail = f"resend of {resend_of}" if resend_of else ""
        self.db.execute("INSERT INTO transitions (message_id, state, at, detail) VALUES (?, ?, ?, ?)",
                        (cursor.lastrowid, State.RECEIVED, now, detail))
        return Entry(id=cursor.lastrowid, received_at=now, peer=received.peer, raw=received.raw,
                     msh4=received.msh4, msh10=received.msh10, message_type=received.message_type,
                     charset=received.charset, state=State.RECEIVED, updated_at=now, resend_of=resend_of)

    def set_state(self, message_id: int, state: str, detail: str = "") -> None:
        now = self.now()
        self.db.execute("UPDATE messages SET state = ?, updated_at = ? WHERE id = ?", (state, now, message_id))
        self.db.execute("INSERT INTO transitions (message_id, state, at, detail) VALUES (?, ?, ?, ?)",
                        (message_id, state, now, detail))

    def record_ack(self, message_id: int, ack: bytes, ack_code: str) -> None:
        self.db.execute("UPDATE messages SET ack = ?, ack_code = ?, updated_at = ? WHERE id = ?",
                        (ack, ack_code, self.now(), message_id))

    def finish(self, message_id: int, outcome: Outcome, ack: bytes | None = None) -> Entry:
        now = self.now()
        code = outcome.code.value
        state = state_for(code)
        error = "; ".join(f"{e.code} {e.location} {e.text}".replace("  ", " ") for e in outcome.errors
                          if e.severity != "I") or None
        self.db.execute(
            "UPDATE messages SET state = ?, outcome = ?, document_id = COALESCE(?, document_id),"
            " operation = COALESCE(?, operation), x_cart_id = COALESCE(?, x_cart_id),"
            " trace_id = COALESCE(?, trace_id), workflow_instance_id = COALESCE(?, workflow_instance_id),"
            " error = ?, updated_at = ? WHERE id = ?",
            (state, code, outcome.document_id, outcome.operation, outcome.x_cart_id, outcome.trace_id,
             outcome.workflow_instance_id, error, now, message_id))
        if ack is not None:
            # An ACK already sent (commit mode) stays the one a resend gets.
            self.db.execute("UPDATE messages SET ack = ?, ack_code = ? WHERE id = ? AND ack IS NULL",
                            (ack, _msa1(ack), message_id))
        self.db.execute("INSERT INTO transitions (message_id, state, at, detail) VALUES (?, ?, ?, ?)",
                        (message_id, state, now, f"{code} {outcome.text}".strip()))
        return self.get(message_id)

    def get(self, message_id: int) -> Entry | None:
        return self._entry("SELECT * FROM messages WHERE id = ?", (message_id,))

    def find(self, key: str) -> list[Entry]:
        key = key.strip()
        by_id = [self.get(int(key))] if key.isdigit() else []
        rows = self._entries(
            "SELECT * FROM messages WHERE msh10 = ? OR document_id = ? OR x_cart_id = ? ORDER BY id",
            (key, key, key))
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
        received = Received(raw=entry.raw, peer="resubmit", msh4=entry.msh4, msh10=entry.msh10,
                            message_type=entry.message_type, charset=entry.charset)
        return self._insert(received, resend_of=entry.id)

    # -- artifacts, gateway calls, documents, counters ---------------------

    def add_artifact(self, message_id: int, stage: str, name: str, content: bytes) -> None:
        self.db.execute("INSERT INTO artifacts (message_id, stage, name, content, at) VALUES (?, ?, ?, ?, ?)",
                        (message_id, stage, name, content, self.now()))

    def artifacts(self, message_id: int) -> list[Artifact]:
        return [Artifact(message_id=r["message_id"], stage=r["stage"], name=r["name"], content=r["content"],
                         at=r["at"])
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

    def next_value(self, name: str) -> int:
        self.db.execute("INSERT INTO counters (name, value) VALUES (?, 1)"
                        " ON CONFLICT (name) DO UPDATE SET value = value + 1", (name,))
        return self.db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    # -- helpers -------------------------------------------------------------

    def _entry(self, sql: str, params: tuple) -> Entry | None:
        row = self.db.execute(sql, params).fetchone()
        return _to_entry(row) if row else None

    def _entries(self, sql: str, params: tuple) -> list[Entry]:
        return [_to_entry(r) for r in self.db.execute(sql, params)]


def _to_entry(row: sqlite3.Row) -> Entry:
    return Entry(**{k: row[k] for k in _ENTRY_COLUMNS})


def _msa1(ack: bytes) -> str | None:
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA") and len(segment) > 4:
            return segment[4:].split(segment[3:4])[0].decode("ascii", "replace") or None
    return None


_STOP = object()


class SqliteJournal:
    """The :class:`~bridge.journal.Journal` on SQLite, with one writer thread.

    Results are delivered on the reactor thread (``callFromThread``), after the
    transaction that holds the operation has committed.
    """

    def __init__(self, path: str | Path, *, reactor=None, now: Callable[[], datetime.datetime] = utc_now):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._store = SqliteStore(path, now=now)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed: Deferred | None = None
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    @property
    def path(self) -> str:
        return self._store.path

    def _submit(self, method, *args, **kwargs) -> Deferred:
        if self._closed is not None:
            raise RuntimeError("the journal is closed")
        d: Deferred = Deferred()
        self._queue.put((method, args, kwargs, d))
        return d

    def _run(self) -> None:
        store = self._store
        while True:
            batch = [self._queue.get()]
            while len(batch) < GROUP_LIMIT:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            work = [item for item in batch if item is not _STOP]
            results = []
            if work:
                try:
                    store.begin()
                    for method, args, kwargs, d in work:
                        store.db.execute("SAVEPOINT op")
                        try:
                            result = method(*args, **kwargs)
                            store.db.execute("RELEASE op")
                        except Exception:
                            result = Failure()
                            store.db.execute("ROLLBACK TO op")
                            store.db.execute("RELEASE op")
                        results.append((d, result))
                    store.commit()
                except Exception:
                    # The commit itself failed: nothing of this group is durable.
                    failure = Failure()
                    store.rollback()
                    results = [(d, failure) for _, _, _, d in work]
                self._reactor.callFromThread(_deliver, results)
            if stop:
                store.close()
                self._reactor.callFromThread(self._closed.callback, None)
                return

    # -- the Journal protocol ---------------------------------------------

    def admit(self, received: Received) -> Deferred:
        return self._submit(self._store.admit, received)

    def set_state(self, message_id: int, state: str, detail: str = "") -> Deferred:
        return self._submit(self._store.set_state, message_id, state, detail)

    def record_ack(self, message_id: int, ack: bytes, ack_code: str) -> Deferred:
        return self._submit(self._store.record_ack, message_id, ack, ack_code)

    def finish(self, message_id: int, outcome: Outcome, ack: bytes | None = None) -> Deferred:
        return self._submit(self._store.finish, message_id, outcome, ack)

    def add_artifact(self, message_id: int, stage: str, name: str, content: bytes) -> Deferred:
        return self._submit(self._store.add_artifact, message_id, stage, name, content)

    def gateway_call_sent(self, message_id, operation, document_id) -> Deferred:
        return self._submit(self._store.gateway_call_sent, message_id, operation, document_id)

    def gateway_call_answered(self, call_id: int, **kwargs) -> Deferred:
        return self._submit(self._store.gateway_call_answered, call_id, **kwargs)

    def get_document(self, structure: str, doc_type: str, accession: str, seq: int = 0) -> Deferred:
        return self._submit(self._store.get_document, structure, doc_type, accession, seq)

    def put_document(self, document: Document) -> Deferred:
        return self._submit(self._store.put_document, document)

    def next_value(self, name: str) -> Deferred:
        return self._submit(self._store.next_value, name)

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

    def close(self) -> Deferred:
        """Finish queued work, close the database; fires when it is closed."""
        if self._closed is None:
            self._closed = Deferred()
            self._queue.put(_STOP)
        return self._closed


def _deliver(results) -> None:
    for d, result in results:
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)
