"""Which gateway operation a routed message becomes, from the document registry.

architecture.md: one message makes one document, keyed by structure + type +
accession. gateway.md section 5 fixes the ids: local id ``<accession>_<seq>``,
seq never reused; a replacement keeps the set id and raises versionNumber;
after a delete, a new publication starts a new set. A new version for another
patient than the live one's (gateway.md section 9, "Wrong patient") is never a
replace: the plan deletes the live document, then publishes the new one as a
new set. This module is pure: the registry rows come in, a :class:`Plan` goes out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from lxml import etree

from bridge.gateway.identifiers import DocumentIds, document_ids
from bridge.journal import Document, DocumentState
from bridge.model import Action

@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    action: Action
    """CREATE, REPLACE, DELETE, METADATA or IGNORE."""
    reason: str = ""
    """For IGNORE: what the sender is told (MSA-3)."""
    seq: int = 0
    ids: DocumentIds | None = None
    """The version to publish (CREATE, REPLACE)."""
    target: Document | None = None
    """The version replaced, deleted or updated."""
    resumed: Document | None = None
    """A pending version whose outcome is unknown: published again with the same ids."""
    deletes: Document | None = None
    """The wrong-patient plan (CREATE): the live version, another patient's, deleted first."""

    @property
    def wrong_patient(self) -> bool:
        return self.deletes is not None


def current(documents: Sequence[Document]) -> Document | None:
    """The version the citizen sees now: the newest version that reached the gateway, if published.

    Only the newest can be: an older row still marked published (a stop between
    recording a replacement and marking the version it replaced) is not live.
    """
    landed = [d for d in documents if d.state != DocumentState.PENDING]
    newest = max(landed, key=lambda d: d.seq) if landed else None
    return newest if newest is not None and newest.state == DocumentState.PUBLISHED else None


def decide(action: Action, documents: Sequence[Document], *, structure_cf: str, doc_type: str,
           repository: str, accession: str, repository_index: int | None = None,
           uncertain: Document | None = None, patient: str | None = None,
           live_patient: str | None = None) -> Plan:
    """The plan for a routed *action* (PUBLISH, DELETE, METADATA, IGNORE) given the registry rows.

    *uncertain*: a pending version whose gateway call may have landed (the
    request left and no final answer was recorded). It is published again with
    the same ids, never under a new id (gateway.md section 8).

    *patient*, *live_patient*: the patient (PID-3 fiscal code) of the message and of
    the live version. When both are known and differ, PUBLISH is the wrong-patient
    plan: delete the live version, then create a new set (next seq, version 1).
    After that delete the live version is gone, so deciding again (recovery) gives
    a plain CREATE of the same new set.
    """
    if action is Action.IGNORE:
        return Plan(action=Action.IGNORE, reason="not final: not published yet")
    live = current(documents)
    if action is Action.DELETE:
        if live is None:
            return Plan(action=Action.IGNORE, reason="nothing to delete: accession never published")
        return Plan(action=Action.DELETE, target=live)
    if action is Action.METADATA:
        if live is None:
            return Plan(action=Action.IGNORE, reason="no metadata to update: accession not published")
        return Plan(action=Action.METADATA, target=live)
    if uncertain is not None:
        previous = previous_of(uncertain, documents)
        ids = _ids(uncertain, previous)
        return Plan(action=Action.REPLACE if previous else Action.CREATE, seq=uncertain.seq, ids=ids,
                    target=previous, resumed=uncertain)
    seq = max((d.seq for d in documents), default=0) + 1
    wrong_patient = live is not None and bool(patient) and bool(live_patient) and patient != live_patient
    if live is None or wrong_patient:
        ids = document_ids(structure_cf, doc_type, repository, accession, seq=seq,
                           repository_index=repository_index)
        return Plan(action=Action.CREATE, seq=seq, ids=ids, deletes=live if wrong_patient else None)
    ids = document_ids(structure_cf, doc_type, repository, accession, seq=seq,
                       repository_index=repository_index, previous_id=live.document_id,
                       previous_version=live.version, set_id=live.set_id)
    return Plan(action=Action.REPLACE, seq=seq, ids=ids, target=live)


def pending_row(plan: Plan, *, structure: str, doc_type: str, accession: str, content_hash: str,
                message_id: int) -> Document:
    """The registry row of the version *plan* publishes, pending until the gateway takes it
    (a resumed version keeps its own content hash and message)."""
    return Document(structure=structure, doc_type=doc_type, accession=accession, seq=plan.seq,
                    document_id=plan.ids.document_id, set_id=f"{plan.ids.set_root}^{plan.ids.set_extension}",
                    version=plan.ids.version_number, state=DocumentState.PENDING,
                    content_hash=plan.resumed.content_hash if plan.resumed else content_hash,
                    message_id=plan.resumed.message_id if plan.resumed else message_id)


def previous_of(pending: Document, documents: Sequence[Document]) -> Document | None:
    """The version *pending* replaces: the same set's previous version that reached the gateway.

    A pending row of that version number left behind by a crash before its call
    (a later seq then took its place) is not it.
    """
    if pending.version <= 1:
        return None
    earlier = [d for d in documents if d.set_id == pending.set_id and d.version == pending.version - 1
               and d.state != DocumentState.PENDING and d.seq < pending.seq]
    return max(earlier, key=lambda d: d.seq, default=None)


def _ids(pending: Document, previous: Document | None) -> DocumentIds:
    root, _, extension = pending.document_id.rpartition("^")
    set_root, _, set_extension = pending.set_id.rpartition("^")
    prev = tuple(previous.document_id.rsplit("^", 1)) if previous else None
    return DocumentIds(root=root, extension=extension, set_root=set_root, set_extension=set_extension,
                       version_number=pending.version, previous=prev)


#: Header elements that differ between versions of the same content.
_VERSION_ELEMENTS = ("id", "setId", "versionNumber", "relatedDocument", "effectiveTime")
_HL7 = "urn:hl7-org:v3"


def content_hash(cda: bytes) -> str:
    """SHA-256 of the CDA without what identifies its version (ids, version, time, RPLC).

    Two renderings of the same report content hash the same, so a re-sent
    final result identical to the published version is recognised.
    """
    root = etree.fromstring(cda, etree.XMLParser(resolve_entities=False, no_network=True))
    for child in list(root):
        if isinstance(child.tag, str) and etree.QName(child).localname in _VERSION_ELEMENTS \
                and etree.QName(child).namespace == _HL7:
            root.remove(child)
    return hashlib.sha256(etree.tostring(root, method="c14n")).hexdigest()
