"""The journal: every received message, durably, before anything else happens.

architecture.md, "The way a message travels", step 2: the raw bytes are
stored before any ACK reporting success; a restart resumes unfinished work.
interface.md, "ACK contract", fixes the resend rules that :meth:`Journal.admit`
applies. The service speaks only to the :class:`Journal` protocol, so another
store (PostgreSQL) can stand in for :class:`~bridge.journal.sqlite.SqliteJournal`.

Every method returns a Deferred: a store must never block the reactor.

Retention (:meth:`Journal.purge`): after the configured time the raw bytes of
finished messages and the contents of their artifacts are emptied and
stamped ``purged_at``; what audit and later operations need stays (see
:class:`PurgeReport`).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

from bridge.outcome import Outcome


class State:
    """Message states (a message's ``state`` and its transitions). An unfinished message is
    ``received`` or in a stage's state; a finished one ``done``, ``failed``, ``refused`` or
    ``set aside``."""

    RECEIVED = "received"
    PROCESSING = "processing"
    ROUTED = "routed"       # the stages' own, in the order they run (bridge.publish.pipeline)
    RENDERED = "rendered"
    VALIDATED = "validated"
    PACKAGED = "packaged"
    SUBMITTING = "submitting"  # a gateway call is about to be made
    DONE = "done"           # outcome AA
    FAILED = "failed"       # outcome AE
    REFUSED = "refused"     # outcome AR
    SET_ASIDE = "set aside"  # terminal: recovery will not try it again; an operator decides
    WAITING = "waiting"     # acknowledged, to be tried again (a temporary failure)


class DocumentState:
    """States of a row of the document registry (the schema's CHECK constraint)."""

    PENDING = "pending"      # a call made or about to be made, its answer not journaled yet
    PUBLISHED = "published"  # the current version at the gateway
    REPLACED = "replaced"    # superseded by a later version
    DELETED = "deleted"      # withdrawn at the gateway
    ALL = (PUBLISHED, REPLACED, DELETED, PENDING)
    LIVE = (PENDING, PUBLISHED)
    """A document the gateway holds, or may hold."""


class ArtifactStage:
    """The stage an artifact is journaled under (``Journal.add_artifact``)."""

    ROUTE = "route"
    PLAN = "plan"
    RENDER = "render"
    VALIDATE = "validate"
    PACKAGE = "package"
    SUBMIT = "submit"
    METADATA = "metadata"   # an operator's metadata update


class ArtifactName:
    """Names of the artifacts a message's processing journals (``Journal.add_artifact``)."""

    ROUTE = "route.json"              # routing: type, action, accession
    PLAN = "plan.json"                # the wrong-patient plan
    VALIDATION = "validation.json"    # the local validation's report
    CDA = "cda.xml"
    PDF = "document.pdf"              # signed, the CDA embedded
    PDF_SHA256 = "pdf.sha256"         # its digest, hex
    SUBMISSION = "submission.json"    # the metadata submitted (what a metadata update starts from)
    GATEWAY = "gateway.json"          # one per gateway call: its answer
    METADATA_REQUEST = "metadata-request.json"
    NOTE = "note.txt"


def state_for(outcome_code: str) -> str:
    """The final state of a message whose outcome has this ACK code."""
    return {"AA": State.DONE, "CA": State.DONE, "AE": State.FAILED, "CE": State.FAILED}.get(
        outcome_code, State.REFUSED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """What the listener knows of a message when it arrives."""

    raw: bytes
    peer: str = ""
    msh4: str = ""
    msh10: str = ""
    message_type: str = ""
    charset: str = ""
    ack: bytes | None = None
    """An ACK sent as soon as the message is journaled ("commit" or enhanced mode): stored
    with a new entry by the same commit, and what a resend then gets."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One journaled message (a row of ``messages``)."""

    id: int
    received_at: str
    peer: str
    raw: bytes
    msh4: str
    msh10: str
    message_type: str
    charset: str
    state: str
    updated_at: str
    resend_of: int | None = None
    ack: bytes | None = None
    ack_code: str | None = None
    outcome: str | None = None
    """The processing outcome's code (AA/AE/AR); None while unfinished."""
    document_id: str | None = None
    operation: str | None = None
    x_cart_id: str | None = None
    trace_id: str | None = None
    workflow_instance_id: str | None = None
    error: str | None = None
    raw_sha256: str | None = None
    """Hex SHA-256 of the message as received: kept after a purge, so a resend is still recognised."""
    purged_at: str | None = None
    """When the retention purge emptied ``raw`` (None: the bytes are held)."""

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def purged(self) -> bool:
        return self.purged_at is not None


class Admit(enum.Enum):
    """What :meth:`Journal.admit` decided (interface.md, ACK contract, "Resends")."""

    NEW = "new"
    """Journaled as a new entry: process it (also a resend of an earlier AR)."""
    REPLAY = "replay"
    """Same facility, control id and bytes, earlier outcome final: answer ``entry.ack`` again."""
    IN_FLIGHT = "in-flight"
    """Same message still being processed as ``entry``: wait for its ACK."""
    CONFLICT = "conflict"
    """Same facility and control id, different bytes: journaled as ``entry``, answer AE 205."""


@dataclass(frozen=True, slots=True)
class Admission:
    kind: Admit
    entry: Entry
    """The new entry (NEW, CONFLICT) or the earlier one (REPLAY, IN_FLIGHT)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    message_id: int
    state: str
    at: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    message_id: int
    stage: str
    name: str
    content: bytes
    at: str
    purged_at: str | None = None
    """When the retention purge emptied ``content`` (None: the content is held)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeReport:
    """What a retention purge removed (or, ``dry_run``, would remove): counts and bytes only.

    Never purged: anything of an unfinished message; the messages' metadata, ACKs,
    transitions, gateway calls and document registry; the ``submission.json``
    and ``route.json`` of messages whose document is still pending or published (the base
    of a later metadata update, replacement or delete).
    """

    artifacts: int = 0
    artifact_bytes: int = 0
    messages: int = 0
    """Messages whose raw bytes were emptied."""
    message_bytes: int = 0
    dry_run: bool = False
    artifacts_before: str | None = None
    """The cut-off (ISO 8601 UTC) for artifacts; None: artifacts are kept."""
    messages_before: str | None = None
    """The cut-off for raw messages; None: raw messages are kept."""
    free_bytes: int = 0
    """Free space inside the database file afterwards (reused by later writes; VACUUM returns it)."""

    @property
    def total_bytes(self) -> int:
        return self.artifact_bytes + self.message_bytes

    def plus(self, other: PurgeReport) -> PurgeReport:
        """The sum of two reports of the same purge (batches)."""
        return dataclasses.replace(self, artifacts=self.artifacts + other.artifacts,
                                   artifact_bytes=self.artifact_bytes + other.artifact_bytes,
                                   messages=self.messages + other.messages,
                                   message_bytes=self.message_bytes + other.message_bytes,
                                   free_bytes=other.free_bytes)

    def summary(self) -> str:
        """One line without patient data, for the log and the CLI."""
        verb = "would purge" if self.dry_run else "purged"
        parts = []
        if self.artifacts_before is not None:
            parts.append(f"{self.artifacts} artifact(s) ({_size(self.artifact_bytes)}) "
                         f"made before {self.artifacts_before[:19]}Z")
        if self.messages_before is not None:
            parts.append(f"the raw bytes of {self.messages} message(s) ({_size(self.message_bytes)}) "
                         f"finished before {self.messages_before[:19]}Z")
        if not parts:
            return "retention is off: nothing to purge"
        return (f"{verb} {' and '.join(parts)}; {_size(self.total_bytes)} in all; "
                f"{_size(self.free_bytes)} free in the journal file")


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 * 1024 else f"{n / (1024 * 1024):.1f} MB"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayCall:
    id: int
    message_id: int | None
    operation: str
    document_id: str | None
    state: str
    """'sent' before the request leaves, then 'answered'."""
    at: str
    http_status: int | None = None
    x_cart_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    workflow_instance_id: str | None = None
    warning: str | None = None
    problem: str | None = None
    """The gateway's problem body, JSON text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Document:
    """One entry of the document registry, keyed by (structure, doc_type, accession, seq)."""

    structure: str
    doc_type: str
    accession: str
    document_id: str
    set_id: str
    seq: int = 0
    version: int = 1
    state: str = DocumentState.PENDING
    """A :class:`DocumentState`."""
    content_hash: str | None = None
    message_id: int | None = None
    updated_at: str = ""


class Journal(Protocol):
    """The store behind the service. Every method returns a Deferred."""

    def admit(self, received: Received) -> Deferred[Admission]:
        """Journal a message durably, applying the resend rules of the ACK contract."""

    def set_state(self, message_id: int, state: str, detail: str = "") -> Deferred[None]:
        """Record a state change (with its time) for a stage."""

    def record_ack(self, message_id: int, ack: bytes, ack_code: str) -> Deferred[None]:
        """Store the ACK sent before the outcome is known ("commit" mode, enhanced mode)."""

    def finish(self, message_id: int, outcome: Outcome, ack: bytes | None = None, *,
               urgent: bool = True) -> Deferred[bytes | None]:
        """Record the outcome (and the ACK, unless one was already stored); fires with the
        ACK stored for the entry, the one a resend gets, once durable.

        ``urgent=False``: the caller goes on without waiting; the store may hold the
        write briefly to commit it with the next operations. Operations still apply
        in submission order: anything submitted later sees this outcome.
        """

    def set_aside(self, message_id: int, outcome: Outcome, reason: str) -> Deferred[None]:
        """Close an entry that recovery must not try again (state ``set aside``), keeping the
        outcome it came to and *reason*; an ACK already stored stays the one a resend gets."""

    def count_state(self, state: str) -> Deferred[int]:
        """How many entries are in *state* (e.g. ``set aside``, for /healthz)."""

    def add_artifact(self, message_id: int, stage: str, name: str, content: bytes) -> Deferred[None]: ...

    def gateway_call_sent(self, message_id: int | None, operation: str,
                          document_id: str | None) -> Deferred[int]:
        """Record a call before its request leaves; returns the call id."""

    def gateway_call_answered(self, call_id: int, *, http_status: int | None,
                              x_cart_id: str | None = None, trace_id: str | None = None,
                              span_id: str | None = None, workflow_instance_id: str | None = None,
                              warning: str | None = None, problem: str | None = None) -> Deferred[None]: ...

    def get_document(self, structure: str, doc_type: str, accession: str,
                     seq: int = 0) -> Deferred[Document | None]: ...

    def documents_for(self, structure: str, doc_type: str, accession: str) -> Deferred[list[Document]]:
        """Every registry entry of one accession (all seq), by seq."""

    def put_document(self, document: Document) -> Deferred[None]:
        """Insert or update the registry entry with the same key."""

    def get(self, message_id: int) -> Deferred[Entry | None]: ...

    def find(self, key: str) -> Deferred[list[Entry]]:
        """Entries whose id, control id, document id or X-Cart-id (of any of their gateway calls)
        is *key*."""

    def entries(self, limit: int = 50, before: int | None = None) -> Deferred[list[Entry]]:
        """Newest first."""

    def transitions(self, message_id: int) -> Deferred[list[Transition]]: ...

    def artifacts(self, message_id: int) -> Deferred[list[Artifact]]: ...

    def gateway_calls(self, message_id: int) -> Deferred[list[GatewayCall]]: ...

    def unfinished(self) -> Deferred[list[Entry]]:
        """Entries journaled but without an outcome, oldest first (restart recovery)."""

    def resubmit(self, message_id: int) -> Deferred[Entry]:
        """Journal entry *message_id*'s bytes again as a new unfinished entry (``resend_of`` it);
        fails with KeyError (no such entry) or ValueError (its message was purged)."""

    def purge(self, *, artifacts_before: datetime.datetime | None,
              messages_before: datetime.datetime | None, dry_run: bool = False) -> Deferred[PurgeReport]:
        """Retention: empty the artifact contents made before *artifacts_before* and the raw
        bytes of messages finished before *messages_before* (None: keep), except what
        :class:`PurgeReport` lists as never purged. In short transactions, between the
        other operations, so it neither holds up the service nor blocks the reactor."""

    def close(self) -> Deferred[None]: ...
