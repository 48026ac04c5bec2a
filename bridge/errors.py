"""The exceptions of fse-bridge, each knowing the ACK it leads to.

    BridgeError                  ack_code, err_code (HL7 table 0357), location
    ├── MessageError             AE: resending it unchanged fails again
    │   ├── ParseError           102 bad format (also: undecodable charset)
    │   ├── MissingField         101
    │   ├── InvalidValue         102 (e.g. invalid codice fiscale)
    │   ├── UnknownCode          103 (code not in a table, unknown practitioner)
    │   ├── DocumentTooLarge     207 the signed PDF over the gateway's 1 MB (pdf.md)
    │   ├── DuplicateControlId   205 same control id, different bytes
    │   ├── ValidationFailed     207 local XSD / schematron failure
    │   └── GatewayRejected      207 the gateway refused the content
    ├── NotProcessable           AR: not here, or not now
    │   ├── UnsupportedMessage   200 message type / 201 event / 203 version
    │   ├── UnknownDocumentType  207
    │   ├── FrameTooLarge        207
    │   └── GatewayUnavailable   207 unreachable after retries, credentials, clock
    ├── ConfigError              start-up and CLI: names the file and the key
    └── JournalDamaged           the journal file is not a readable SQLite database

ExitCode: the exit status of every `fse-bridge` command (README, "Exit status").

`bridge.publish.record.classify` is the one place that turns these (and gateway
results) into an Outcome, the ACK's data; anything that is not a BridgeError
becomes AR 207 (InternalError), its traceback logged by the caller. `temporary`
marks a failure that may pass by itself (tried again when already acknowledged).
Exception texts must never carry patient data: they reach logs and ACKs.
"""

from __future__ import annotations

import enum


class BridgeError(Exception):
    ack_code = "AR"
    err_code = "207"
    severity = "E"
    #: The failure may pass by itself (bridge.service.retry tries an acknowledged message again).
    temporary = False

    def __init__(self, message: str, *, location: str = "", code: str | None = None):
        super().__init__(message)
        self.message = message
        #: HL7 location of the problem, ``SEG^rep^field^component`` (e.g. ``PID^1^3``).
        self.location = location
        if code is not None:
            self.err_code = code

    def __str__(self) -> str:
        return f"{self.message} ({self.location})" if self.location else self.message


class MessageError(BridgeError):
    ack_code = "AE"


class ParseError(MessageError):
    err_code = "102"


class MissingField(MessageError):
    err_code = "101"


class InvalidValue(MessageError):
    err_code = "102"


class UnknownCode(MessageError):
    err_code = "103"


class DocumentTooLarge(MessageError):
    """The signed PDF would be over the gateway's size ceiling (pdf.md section 1)."""
    err_code = "207"


class DuplicateControlId(MessageError):
    err_code = "205"


class ValidationFailed(MessageError):
    err_code = "207"

    def __init__(self, message: str, *, findings: tuple[str, ...] = (), summary: str = "", **kwargs):
        super().__init__(message, **kwargs)
        #: One text per finding, rule id first: each becomes an ERR (bridge.publish.record.classify).
        self.findings = tuple(findings)
        self.summary = summary


class GatewayRejected(MessageError):
    err_code = "207"


class NotProcessable(BridgeError):
    ack_code = "AR"


class UnsupportedMessage(NotProcessable):
    err_code = "200"


class UnknownDocumentType(NotProcessable):
    err_code = "207"


class FrameTooLarge(NotProcessable):
    err_code = "207"


class InternalError(NotProcessable):
    """Something unexpected (a bug, a crashed stage): AR 207; the traceback is in the log."""

    err_code = "207"

    def __init__(self, message: str = "internal error, see the service log", **kwargs):
        super().__init__(message, **kwargs)


class GatewayUnavailable(NotProcessable):
    err_code = "207"
    temporary = True

    def __init__(self, message: str, *, location: str = "", code: str | None = None,
                 operator_alert: bool = False):
        super().__init__(message, location=location, code=code)
        #: True when the cause is our own configuration or clock (credentials, tokens).
        self.operator_alert = operator_alert


class ConfigError(BridgeError):
    """A configuration problem: names the file and the key; the CLI exits 2."""

    def __init__(self, message: str, *, file: str = "", key: str = ""):
        super().__init__(message)
        self.file = file
        self.key = key

    def __str__(self) -> str:
        where = ", ".join(p for p in (self.file, f"key {self.key}" if self.key else "") if p)
        return f"{where}: {self.message}" if where else self.message


class JournalDamaged(BridgeError):
    """The journal file is damaged (SQLite: not a database, or malformed); the CLI exits 4."""

    def __init__(self, path, cause: str):
        super().__init__(
            f"the journal {path} is damaged ({cause}): stop the service, move the file aside (with its "
            f"-wal and -shm files, if any) and restore it from the last backup; with no backup, moving it "
            f"aside lets the service start a new, empty journal (`fse-bridge journal check` lists the damage)")
        self.path = path


class ExitCode(enum.IntEnum):
    """The exit status of every command; the systemd unit does not restart on USAGE and JOURNAL_DAMAGED."""

    DONE = 0
    FAILED = 1              # the checked thing failed: validation errors, a NAK, a refusal
    USAGE = 2               # usage or configuration error
    NO_RULES = 3            # no validation rules installed: nothing was checked
    JOURNAL_DAMAGED = 4
    INTERRUPTED = 130       # Ctrl-C (128 + SIGINT), as shells report it


#: What each status means, for --help and the README (status 1 is worded per command).
EXIT_MEANINGS = {
    ExitCode.DONE: "done",
    ExitCode.FAILED: "the checked thing failed",
    ExitCode.USAGE: "usage or configuration error",
    ExitCode.NO_RULES: "no validation rules installed (nothing was checked)",
    ExitCode.JOURNAL_DAMAGED: "the journal is damaged",
}
