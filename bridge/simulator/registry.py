"""The simulator's registry of published documents, kept in SQLite (a restart keeps it).

It stands for INI: ids and their version chains with their patient, the
submission set ids already registered (an XDS registry refuses a
SubmissionSet.uniqueId it holds), plus the JWT ids already seen (replay
detection). Thread-safe: the server checks requests in worker threads.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,              -- current | replaced | deleted
    version INTEGER NOT NULL,
    set_id TEXT NOT NULL,              -- the first id of the chain
    replaces TEXT,
    replaced_by TEXT,
    resource_hl7_type TEXT,
    class_code TEXT,
    workflow_instance_id TEXT NOT NULL,
    metadata_updates INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    patient TEXT                       -- the person_id's code (CF): a replace keeps the patient
);
CREATE TABLE IF NOT EXISTS submissions (
    id TEXT PRIMARY KEY,               -- identificativoSottomissione (SubmissionSet.uniqueId)
    document_id TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jti (
    jti TEXT PRIMARY KEY,
    exp INTEGER NOT NULL
);
"""


class SubmissionHeld(Exception):
    """The submission set id is already registered (an XDS registry's duplicate uniqueId)."""


class Registry:
    def __init__(self, path: str | Path):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(SCHEMA)
        # A registry file from before the patient column: add it (its documents' patient unknown).
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(documents)")}
        if "patient" not in columns:
            self._db.execute("ALTER TABLE documents ADD COLUMN patient TEXT")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ tokens

    def use_jti(self, jti: str, exp: int, now: float) -> bool:
        """Record *jti*; False when it was already used (a replay)."""
        with self._lock:
            self._db.execute("DELETE FROM jti WHERE exp < ?", (int(now) - 3600,))
            try:
                self._db.execute("INSERT INTO jti (jti, exp) VALUES (?, ?)", (jti, exp))
            except sqlite3.IntegrityError:
                return False
            return True

    # ------------------------------------------------------------------ documents

    def get(self, doc_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return dict(row) if row else None

    def all(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM documents ORDER BY created, id").fetchall()
        return [dict(r) for r in rows]

    def holds_submission(self, submission_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM submissions WHERE id = ?", (submission_id,)).fetchone() \
                is not None

    def _check_submission(self, submission_id: str | None) -> None:
        """Under the lock: refuse a held submission set id."""
        if submission_id and self._db.execute("SELECT 1 FROM submissions WHERE id = ?",
                                              (submission_id,)).fetchone():
            raise SubmissionHeld(submission_id)

    def _add_submission(self, submission_id: str | None, doc_id: str, now: float) -> None:
        if submission_id:
            self._db.execute("INSERT INTO submissions (id, document_id, created) VALUES (?, ?, ?)",
                             (submission_id, doc_id, now))

    def create(self, doc_id: str, *, workflow_instance_id: str, resource_hl7_type: str | None,
               class_code: str | None, now: float, patient: str | None = None,
               submission_id: str | None = None) -> bool:
        """False when the id exists (INI's duplicate uniqueId); raises SubmissionHeld when
        *submission_id* is already registered (checked after the document id)."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM documents WHERE id = ?", (doc_id,)).fetchone():
                return False
            self._check_submission(submission_id)
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO documents (id, status, version, set_id, resource_hl7_type, class_code,"
                " workflow_instance_id, created, updated, patient)"
                " VALUES (?, 'current', 1, ?, ?, ?, ?, ?, ?, ?)",
                (doc_id, doc_id, resource_hl7_type, class_code, workflow_instance_id, now, now, patient))
            self._add_submission(submission_id, doc_id, now)
            self._db.execute("COMMIT")
            return True

    def replace(self, old_id: str, new_id: str, *, workflow_instance_id: str,
                resource_hl7_type: str | None, class_code: str | None, now: float,
                patient: str | None = None, submission_id: str | None = None) -> str:
        """'ok', 'not-found' (old id unknown or not current), 'patient-differs' (the registry
        never moves a document to another patient: delete it and create anew) or
        'duplicate' (new id exists); raises SubmissionHeld for a registered submission set id."""
        with self._lock:
            old = self._db.execute("SELECT * FROM documents WHERE id = ?", (old_id,)).fetchone()
            if old is None or old["status"] != "current":
                return "not-found"
            if patient and old["patient"] and patient != old["patient"]:
                return "patient-differs"
            if self._db.execute("SELECT 1 FROM documents WHERE id = ?", (new_id,)).fetchone():
                return "duplicate"
            self._check_submission(submission_id)
            self._db.execute("BEGIN")
            self._db.execute("UPDATE documents SET status = 'replaced', replaced_by = ?, updated = ?"
                             " WHERE id = ?", (new_id, now, old_id))
            self._db.execute(
                "INSERT INTO documents (id, status, version, set_id, replaces, resource_hl7_type,"
                " class_code, workflow_instance_id, created, updated, patient)"
                " VALUES (?, 'current', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new_id, old["version"] + 1, old["set_id"], old_id, resource_hl7_type, class_code,
                 workflow_instance_id, now, now, patient or old["patient"]))
            self._add_submission(submission_id, new_id, now)
            self._db.execute("COMMIT")
            return "ok"

    def update_metadata(self, doc_id: str, *, class_code: str | None, now: float,
                        submission_id: str | None = None) -> bool:
        """False when the document is unknown or not current; raises SubmissionHeld."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM documents WHERE id = ? AND status = 'current'",
                                (doc_id,)).fetchone() is None:
                return False
            self._check_submission(submission_id)
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE documents SET metadata_updates = metadata_updates + 1, class_code = ?,"
                " updated = ? WHERE id = ?", (class_code, now, doc_id))
            self._add_submission(submission_id, doc_id, now)
            self._db.execute("COMMIT")
            return True

    def delete(self, doc_id: str, *, now: float) -> bool:
        with self._lock:
            cur = self._db.execute("UPDATE documents SET status = 'deleted', updated = ?"
                                   " WHERE id = ? AND status = 'current'", (now, doc_id))
            return cur.rowcount == 1
