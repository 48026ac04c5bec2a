"""The journal's counts for ``GET /metrics``, read on a connection of their own.

The service's :class:`~bridge.journal.sqlite.SqliteJournal` runs its
statements on the reactor's thread (group commit): an aggregate over a large
journal there would hold up every message. :func:`snapshot` opens its own
read-only connection instead (WAL lets it read beside the writer: it sees the
last commit and never blocks it), is called in the service's thread pool
(``ServiceContext.run_blocking``), runs one query per table and closes.

Only counts leave, labelled by low-cardinality values the bridge itself
chooses or checks (outcome, message type, state, gateway operation, HTTP
status class, document type and state): no patient data, no identifiers.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from bridge.journal import DocumentState, State
from bridge.model import DocumentType

#: Outcome labels: the ACK codes a message ends with, and unfinished (no outcome yet).
OUTCOMES = ("AA", "AE", "AR", "unfinished")
#: Document registry states (schema v1 CHECK constraint); the document types are the declared ones
#: (mappings/<TYPE>.toml), any other name in the journal counts as "other".
DOCUMENT_STATES = DocumentState.ALL
#: Message types are what senders write in MSH-9: the most frequent this many get a label
#: of their own, the rest count as "other" (a sender must not be able to grow the series).
MAX_MESSAGE_TYPES = 20
#: The progress handler looks at the clock every this many SQLite VM instructions.
_PROGRESS_STEPS = 10_000

_OUTCOME = {"AA": "AA", "CA": "AA", "AE": "AE", "CE": "AE", "AR": "AR", "CR": "AR"}
_MESSAGE_TYPE = re.compile(r"[A-Z0-9]{3}(\^[A-Z0-9_]{1,7}){0,2}")
_OPERATION = re.compile(r"[a-z][a-z0-9_-]{0,31}")

_MESSAGES = "SELECT outcome, message_type, COUNT(*) FROM messages GROUP BY outcome, message_type"
# The partial index messages_unfinished finds these rows without a scan.
_UNFINISHED = "SELECT state, COUNT(*) FROM messages WHERE outcome IS NULL GROUP BY state"
# By status, not status class: grouped on the columns themselves, an index on
# (operation, http_status) answers it in order, without a sort (a few statuses per operation).
_GATEWAY_CALLS = "SELECT operation, http_status, COUNT(*) FROM gateway_calls GROUP BY operation, http_status"
_DOCUMENTS = "SELECT state, doc_type, COUNT(*) FROM documents GROUP BY state, doc_type"
# The partial index messages_set_aside answers it (a journal opened by an older version
# lacks it until the service opens it: then a scan, still right).
_SET_ASIDE = f"SELECT COUNT(*) FROM messages WHERE state = '{State.SET_ASIDE}'"


class MetricsUnavailable(Exception):
    """The journal could not be read (missing, not a journal, locked, too slow); names the file."""


def snapshot(path: str | Path, *, timeout_s: float | None = None) -> dict:
    """The journal's counts at its last commit; blocking (call it in a thread).

    Returns ``{"messages": {outcome: n}, "messages_by_type": {type: n},
    "unfinished": {state: n}, "gateway_calls": {(operation, status_class): n},
    "documents": {(state, doc_type): n}, "set_aside": n}``. Every outcome, document state and
    document type is present (0 when none). *timeout_s*: the queries are
    interrupted past it. Raises :class:`MetricsUnavailable`.
    """
    path = Path(path)
    if timeout_s is not None and timeout_s <= 0:
        raise MetricsUnavailable(f"journal {path}: over the time budget")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        # mode=ro: never creates the file, never writes (no checkpoint, no schema).
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                             timeout=timeout_s if timeout_s is not None else 5.0,
                             isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise MetricsUnavailable(f"journal {path}: {exc}") from None
    try:
        if deadline is not None:
            # A non-zero return interrupts the running statement (sqlite3.OperationalError).
            db.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        # One read transaction: every family sees the same commit.
        db.execute("BEGIN")
        counts = _read(db)
        db.execute("COMMIT")
        return counts
    except sqlite3.Error as exc:
        why = "over the time budget" if str(exc) == "interrupted" else str(exc)
        raise MetricsUnavailable(f"journal {path}: {why}") from None
    finally:
        db.close()


def _read(db: sqlite3.Connection) -> dict:
    messages = dict.fromkeys(OUTCOMES, 0)
    by_type: dict[str, int] = {}
    # One scan gives both families (outcome, and message type).
    for outcome, message_type, n in db.execute(_MESSAGES):
        label = "unfinished" if outcome is None else _OUTCOME.get(outcome, "AR")
        messages[label] += n
        by_type[message_type or ""] = by_type.get(message_type or "", 0) + n
    unfinished = {state: n for state, n in db.execute(_UNFINISHED)}
    calls: dict[tuple[str, str], int] = {}
    for operation, status, n in db.execute(_GATEWAY_CALLS):
        status_class = f"{status // 100}xx" if isinstance(status, int) and 100 <= status <= 599 else "none"
        key = (operation if _OPERATION.fullmatch(operation or "") else "other", status_class)
        calls[key] = calls.get(key, 0) + n
    kinds = tuple(t.name for t in DocumentType)
    documents = {(state, kind): 0 for state in DOCUMENT_STATES for kind in kinds}
    for state, doc_type, n in db.execute(_DOCUMENTS):
        key = (state if state in DOCUMENT_STATES else "other", doc_type if doc_type in kinds else "other")
        documents[key] = documents.get(key, 0) + n
    return {"messages": messages, "messages_by_type": _message_types(by_type),
            "unfinished": dict(sorted(unfinished.items())), "gateway_calls": dict(sorted(calls.items())),
            "documents": documents, "set_aside": db.execute(_SET_ASIDE).fetchone()[0]}


def _message_types(counts: dict[str, int]) -> dict[str, int]:
    """Counts by message type: the :data:`MAX_MESSAGE_TYPES` most frequent well-formed ones by
    name, the rest as "other", none written (empty MSH-9) as "unknown"."""
    labels: dict[str, int] = {}
    well_formed = sorted(((t, n) for t, n in counts.items() if _MESSAGE_TYPE.fullmatch(t)),
                         key=lambda item: (-item[1], item[0]))
    labels.update(well_formed[:MAX_MESSAGE_TYPES])
    other = sum(n for _, n in well_formed[MAX_MESSAGE_TYPES:]) + sum(
        n for t, n in counts.items() if t and not _MESSAGE_TYPE.fullmatch(t))
    if other:
        labels["other"] = other
    if counts.get(""):
        labels["unknown"] = counts[""]
    return dict(sorted(labels.items()))
