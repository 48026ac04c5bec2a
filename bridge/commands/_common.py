"""What several commands share: the configuration named by --config; a failure as one line."""

from __future__ import annotations

import sqlite3

from bridge import config as config_module
from bridge.errors import BridgeError, ConfigError, ExitCode, JournalDamaged

#: SQLite's names for a file that is not, or no longer, a database.
DAMAGE_ERRORS = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}
#: Longest cause shown on the one line (some libraries put whole objects in their messages).
MAX_CAUSE = 300


def load_config(args) -> config_module.Config:
    return config_module.load(getattr(args, "config", None))


def describe_failure(exc: BaseException, args) -> tuple[ExitCode, str]:
    """The exit status and the one line telling the user what failed, for any exception."""
    if isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorname", "") in DAMAGE_ERRORS:
        exc = _damaged_journal(exc, args) or exc
    if isinstance(exc, ConfigError):
        return ExitCode.USAGE, f"configuration error: {exc}"
    if isinstance(exc, JournalDamaged):
        return ExitCode.JOURNAL_DAMAGED, str(exc)
    if isinstance(exc, BridgeError):
        return ExitCode.FAILED, one_line(str(exc))
    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    where = input_of(args)
    return ExitCode.FAILED, (f"{where}: " if where else "") + \
        f"{one_line(cause)} (unexpected; run with --debug for the traceback)"


def input_of(args) -> str:
    """What the command was given to work on (a file, an entry), as the user wrote it."""
    for name in ("file", "files", "key", "source"):
        value = getattr(args, name, None)
        if value:
            return " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return ""


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_CAUSE else text[:MAX_CAUSE - 1] + "…"


def journal_damage(path) -> str | None:
    """Why the journal file at *path* is not a sound database, or None when it is (or is absent)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        rows = db.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.DatabaseError as error:
        return str(error)
    finally:
        db.close()
    return None if rows == [("ok",)] else str(rows[0][0])


def _damaged_journal(exc: sqlite3.DatabaseError, args) -> JournalDamaged | None:
    """The damage named after the journal's file, when the configured journal is what is damaged
    (the embedded simulator keeps a SQLite registry too)."""
    try:
        path = load_config(args).journal.path
    except BridgeError:
        return None
    return JournalDamaged(path, str(exc)) if journal_damage(path) else None
