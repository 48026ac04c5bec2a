"""Recovery decisions: pure functions over what the journal holds for one accession.

architecture.md (issue 6, "a kill at any point loses nothing"): a restart
processes again every message without a recorded outcome. What the journal
kept of it (its ``gateway.json`` records, its gateway calls, the accession's
registry rows) is loaded by the driver (bridge.publish.pipeline); these
functions say what it means: which rows to record, and whether the message's
own journaled gateway success is its outcome. They never touch the journal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from bridge.journal import Document, DocumentState, GatewayCall
from bridge.publish.plan import previous_of
from bridge.publish.record import GatewayRecord

#: The plan name journaled with the calls of the wrong-patient plan (gateway.md section 9).
WRONG_PATIENT = "wrong-patient"


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a message's journaled answers mean for the registry and its outcome."""

    writes: tuple[Document, ...] = ()
    """Registry rows to record, in this order."""
    answer: GatewayRecord | None = None
    """The gateway.json record that is the message's outcome (the gateway took it); None:
    the message is processed on."""


def settle_earlier(records: Sequence[GatewayRecord], documents: Sequence[Document], message_id: int) -> Settlement:
    """The settlement of a message's own gateway success from before the last stop, if any.

    The gateway's answer (*records*, in order) is journaled before the registry is
    updated and long before the outcome: a kill in between must neither lose the
    publication nor make it again.
    """
    if not records or not records[-1].taken:
        return Settlement()
    record = records[-1]
    by_id = {d.document_id: d for d in documents}
    operation, document = record.operation, by_id.get(record.document_id)
    if document is None:
        return Settlement()
    if operation == "delete" and record.plan == WRONG_PATIENT:
        # The wrong-patient plan's first step landed: its create is still to be made.
        writes = (dataclasses.replace(document, state=DocumentState.DELETED, message_id=message_id),) \
            if document.state == DocumentState.PUBLISHED else ()
        return Settlement(writes=writes)
    writes: tuple[Document, ...] = ()
    if operation == "delete":
        if document.state == DocumentState.PENDING:
            # The cancelled version was uncertain (its deletion settled by the driver's cancellation).
            previous = previous_of(document, documents)
            if record.reconciled and previous is not None and previous.state == DocumentState.PUBLISHED:
                return Settlement()   # it never landed: the live version it was to replace is still to delete
            writes = settled_deleted(message_id, document, previous, previous_deleted=False)
        elif document.state == DocumentState.PUBLISHED:
            uncertain = [by_id[r.document_id] for r in records[:-1] if r.operation == "delete"
                         and r.document_id in by_id and by_id[r.document_id].state == DocumentState.PENDING]
            writes = settled_deleted(message_id, uncertain[-1], document, previous_deleted=True) if uncertain \
                else (dataclasses.replace(document, state=DocumentState.DELETED, message_id=message_id),)
    elif operation in ("create", "replace"):
        writes = settled_published(document, documents)
        if document.message_id != message_id:
            # A resumed version that landed with another message's content: this
            # message's own content is still to be published.
            return Settlement(writes=writes)
    return Settlement(writes=writes, answer=record)


def settled_published(document: Document, documents: Sequence[Document]) -> tuple[Document, ...]:
    """*document* recorded as landed (published, unless a later message replaced or deleted it
    since) and the version it replaced as replaced; what is already recorded is kept."""
    writes = []
    if document.state == DocumentState.PENDING:
        writes.append(dataclasses.replace(document, state=DocumentState.PUBLISHED))
    previous = previous_of(document, documents)
    if previous is not None and previous.state == DocumentState.PUBLISHED:
        writes.append(dataclasses.replace(previous, state=DocumentState.REPLACED))
    return tuple(writes)


def settled_deleted(message_id: int, uncertain: Document, previous: Document | None, *,
                    previous_deleted: bool) -> tuple[Document, ...]:
    """The end of the cancellation of an *uncertain* version: the version it was to replace
    deleted (the uncertain one never landed) or replaced (it had), then the uncertain one
    deleted (last: until then a restart finds the same uncertainty)."""
    writes = []
    if previous is not None and previous.state == DocumentState.PUBLISHED:
        writes.append(dataclasses.replace(previous, state=DocumentState.DELETED, message_id=message_id)
                      if previous_deleted else dataclasses.replace(previous, state=DocumentState.REPLACED))
    writes.append(dataclasses.replace(uncertain, state=DocumentState.DELETED, message_id=message_id))
    return tuple(writes)


def was_sent(calls: Sequence[GatewayCall], document_id: str, operation: str | None = None) -> bool:
    """True when a call for *document_id* left and may have landed (or did) without the
    registry saying so: no final answer, 5xx, 404/409/429, or a 2xx not recorded before a stop."""
    for call in calls:
        if call.document_id != document_id or (operation and call.operation != operation):
            continue
        if call.state == "sent" or call.http_status is None or call.http_status >= 500 \
                or call.http_status in (404, 409, 429) or 200 <= call.http_status < 300:
            return True
    return False
