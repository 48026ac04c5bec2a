"""Journal retention: which raw messages and artifact contents a purge empties.

Brief of the retention work (and :class:`~bridge.journal.PurgeReport`): the
bytes of patient data go after the configured time; what audit and later
operations need stays. Never purged:

- anything of an unfinished message (outcome NULL): it is still to be processed;
- the messages' metadata and ACKs, transitions, gateway calls, the document
  registry (the ACK holds no patient data, and it is what a
  resend of the message gets, however old: interface.md, ACK contract);
- ``submission.json`` and ``route.json`` of a message whose document is still
  pending or published: the latest submission is the base of a later metadata
  update, replacement or delete (bridge.publish.pipeline ``_stored_submission``,
  bridge.publish.metadata ``submission_for``), the route names the accession of an
  operator's update (bridge.publish.pipeline ``_document_named``).

A purge runs in batches (:data:`BATCH`), each its own short transaction, with
keyset cursors, so the service's writes (or another process's) go on between
batches and every row is looked at once per run.
"""

from __future__ import annotations

import datetime
import sqlite3
from typing import Callable

from bridge.journal import ArtifactName, DocumentState, PurgeReport

#: Rows emptied per transaction (per kind): a batch holds the write lock for milliseconds.
BATCH = 200

#: Artifacts kept while their message's document is pending or published.
KEPT_NAMES = (ArtifactName.SUBMISSION, ArtifactName.ROUTE)

_LIVE = repr(DocumentState.LIVE)

_ARTIFACTS_DUE = f"""
    FROM artifacts a JOIN messages m ON m.id = a.message_id
    WHERE a.purged_at IS NULL AND a.at < :before AND m.outcome IS NOT NULL
    AND NOT (a.name IN {KEPT_NAMES!r} AND (
        EXISTS (SELECT 1 FROM documents d WHERE d.message_id = a.message_id AND d.state IN {_LIVE})
        OR EXISTS (SELECT 1 FROM documents d WHERE d.document_id = m.document_id AND d.state IN {_LIVE})))"""

_MESSAGES_DUE = """
    FROM messages WHERE purged_at IS NULL AND updated_at < :before AND outcome IS NOT NULL"""


def iso(moment: datetime.datetime) -> str:
    """The journal's time format (ISO 8601 UTC, microseconds): cut-offs compare as text."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")


def cutoffs(settings, now: datetime.datetime) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """``(artifacts_before, messages_before)`` for the ``[journal]`` settings at *now*; None: kept."""
    def before(days: int):
        return now - datetime.timedelta(days=days) if days else None
    return before(settings.keep_artifacts_days), before(settings.keep_messages_days)


class Purge:
    """One purge run on a connection: :meth:`count` (dry run), or :meth:`step` until :attr:`done`.

    The caller puts each step in its own transaction (a step reads then writes:
    the two agree). *now* stamps ``purged_at``.
    """

    def __init__(self, db: sqlite3.Connection, *, artifacts_before: datetime.datetime | None,
                 messages_before: datetime.datetime | None, now: Callable[[], str], batch: int | None = None):
        self.db = db
        self.now = now
        self.batch = batch or BATCH
        self.artifacts_before = iso(artifacts_before) if artifacts_before is not None else None
        self.messages_before = iso(messages_before) if messages_before is not None else None
        # Keyset cursors (time, id): where the next batch goes on.
        self._artifacts_after: tuple[str, int] | None = ("", 0) if self.artifacts_before else None
        self._messages_after: tuple[str, int] | None = ("", 0) if self.messages_before else None

    @property
    def done(self) -> bool:
        return self._artifacts_after is None and self._messages_after is None

    def empty(self, *, dry_run: bool = False) -> PurgeReport:
        return PurgeReport(dry_run=dry_run, artifacts_before=self.artifacts_before,
                           messages_before=self.messages_before)

    def count(self) -> PurgeReport:
        """What the run would empty, changing nothing."""
        artifacts = messages = (0, 0)
        if self.artifacts_before:
            artifacts = self.db.execute(f"SELECT COUNT(*), COALESCE(SUM(length(a.content)), 0) {_ARTIFACTS_DUE}",
                                        {"before": self.artifacts_before}).fetchone()
        if self.messages_before:
            messages = self.db.execute(f"SELECT COUNT(*), COALESCE(SUM(length(raw)), 0) {_MESSAGES_DUE}",
                                       {"before": self.messages_before}).fetchone()
        return PurgeReport(artifacts=artifacts[0], artifact_bytes=artifacts[1], messages=messages[0],
                           message_bytes=messages[1], dry_run=True, artifacts_before=self.artifacts_before,
                           messages_before=self.messages_before, free_bytes=free_bytes(self.db))

    def step(self) -> PurgeReport:
        """Empty the next batch: artifacts first, then raw messages."""
        counts = {}
        if self._artifacts_after is not None:
            count, size, self._artifacts_after = self._artifacts()
            counts = {"artifacts": count, "artifact_bytes": size}
        elif self._messages_after is not None:
            count, size, self._messages_after = self._messages()
            counts = {"messages": count, "message_bytes": size}
        return PurgeReport(**counts, artifacts_before=self.artifacts_before, messages_before=self.messages_before,
                           free_bytes=free_bytes(self.db))

    def _artifacts(self):
        at, after = self._artifacts_after
        rows = self.db.execute(
            f"SELECT a.id, a.at, length(a.content) {_ARTIFACTS_DUE} AND (a.at, a.id) > (:at, :id)"
            " ORDER BY a.at, a.id LIMIT :limit",
            {"before": self.artifacts_before, "at": at, "id": after, "limit": self.batch}).fetchall()
        stamp = self.now()
        self.db.executemany("UPDATE artifacts SET content = x'', purged_at = ? WHERE id = ?",
                            [(stamp, r[0]) for r in rows])
        return len(rows), sum(r[2] for r in rows), (rows[-1][1], rows[-1][0]) if len(rows) == self.batch else None

    def _messages(self):
        at, after = self._messages_after
        rows = self.db.execute(
            f"SELECT id, updated_at, length(raw) {_MESSAGES_DUE} AND (updated_at, id) > (:at, :id)"
            " ORDER BY updated_at, id LIMIT :limit",
            {"before": self.messages_before, "at": at, "id": after, "limit": self.batch}).fetchall()
        stamp = self.now()
        # updated_at stays: it is the time of the message's last processing change.
        self.db.executemany("UPDATE messages SET raw = x'', purged_at = ? WHERE id = ?",
                            [(stamp, r[0]) for r in rows])
        return len(rows), sum(r[2] for r in rows), (rows[-1][1], rows[-1][0]) if len(rows) == self.batch else None


def free_bytes(db: sqlite3.Connection) -> int:
    """Free pages inside the database file, in bytes (reused by later writes)."""
    return db.execute("PRAGMA freelist_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
