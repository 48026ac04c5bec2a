"""The processing pipeline: route, map, render, validate, package, submit, record.

architecture.md, "The way a message travels", steps 3 to 8. Each stage is a
plain function of the previous one's output; this module calls them in
order (parse, route and map come done: bridge.mapping.analysis), sends the CPU-heavy
ones (render, validate, package: bridge.publish.version, the sequence accredit shares)
to a worker process (``ctx.run_stage``),
journals every stage's result so any message can be explained afterwards,
and turns the gateway's answer into the :class:`~bridge.outcome.Outcome`
the ACK is built from (interface.md, ACK contract).

Messages for the same structure + type + accession are processed one at a
time (a lock per key), so the registry decisions of :mod:`bridge.publish.plan`
never race; an operator's metadata update (:func:`update_metadata`, asked for
by ``journal update-metadata`` through the status page) takes the same lock.

Recovery (issue 6, "a kill at any point loses nothing"): a restart processes
again every message without a recorded outcome. Such a message first takes
its own journaled gateway success as its outcome (settling the registry rows
the kill left behind); it is not applied again when a later message already
changed its accession (its ACK may have gone out before its outcome was
committed); a version whose call left without a final answer is sent again
with the same ids and reconciled (409/404), never under a new id; and a
cancellation deletes whatever such a version left live. The decisions are pure
functions of what the journal holds (bridge.publish.recovery); this module
loads it and records what they decide.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer

from bridge.aio import as_deferred
from bridge.alerts import Kind as AlertKind, raise_alert
from bridge.publish.metadata import APPLIED_STAGE, NotCurrentVersion, UnknownTarget, apply_settings, check_settings
from bridge.publish.recovery import (WRONG_PATIENT, settle_earlier, settled_deleted, settled_published,
                                     was_sent)
from bridge.publish.record import (ACCEPTED, GatewayRecord, alert_for, answer_fields, classify, gateway_record,
                                   published_outcome)
from bridge.publish.version import make_version, validation_record
from bridge.publish.submission import (build_submission, current_submission, keep_hidden, person_code,
                                       submission_record)
from bridge.publish.plan import Plan, current, decide, pending_row, previous_of
from bridge.cda.validate import Rules
from bridge.config import Config
from bridge.errors import GatewayUnavailable, ValidationFailed
from bridge.gateway.bodies import Submission
from bridge.gateway.client import GatewayClient, GatewayResult, OutcomeClass
from bridge.gateway.identifiers import new_submission_id
from bridge.journal import ArtifactName, ArtifactStage, Document, DocumentState, Entry, State
from bridge.model import AckCode, Action, Report
from bridge.outcome import ErrItem, Outcome
from bridge.mapping.route import Route
from bridge.service.stages import Stages

if TYPE_CHECKING:  # the service's context holds the Publisher: imported for the annotations only
    from bridge.service.context import ServiceContext

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Publisher:
    """What the pipeline needs, built once at start (bridge.publish.context.PublishingService):
    the loaded stages, the gateway client and the accessions' locks."""

    stages: Stages
    client: GatewayClient
    locks: dict = field(default_factory=dict)
    submission_ids: Callable[[], str] = new_submission_id
    """identificativoSottomissione for each call (gateway.md section 5: fresh, random)."""

    @property
    def config(self) -> Config:
        return self.stages.config

    @property
    def rules(self) -> Rules | None:
        """The validation rules; None: local validation OFF."""
        return self.stages.rules

    def lock(self, key) -> defer.DeferredLock:
        return self.locks.setdefault(key, defer.DeferredLock())

    def forget_lock(self, key, lock: defer.DeferredLock) -> None:
        """Drop a lock nobody holds or waits for (one per accession would otherwise pile up)."""
        if not lock.locked and not lock.waiting and self.locks.get(key) is lock:
            del self.locks[key]


def process(ctx: ServiceContext, entry: Entry, analysis) -> defer.Deferred:
    """Process one journaled message (its :class:`~bridge.mapping.analysis.Analysis`); a Deferred of
    its :class:`Outcome`."""
    return defer.ensureDeferred(_process(ctx, entry, analysis))


async def _process(ctx: ServiceContext, entry: Entry, analysis) -> Outcome:
    pub: Publisher = ctx.publisher
    journal = ctx.journal
    routed = analysis.routed()
    await journal.add_artifact(entry.id, ArtifactStage.ROUTE, ArtifactName.ROUTE, _json({
        "doc_type": routed.doc_type.name, "action": routed.action.value, "accession": routed.accession,
        "reason": routed.reason, "corrected": routed.corrected}))
    await journal.set_state(entry.id, State.ROUTED, f"{routed.doc_type.name} {routed.action.value}")
    if routed.action is Action.IGNORE:
        return Outcome(code=AckCode.AA, text=f"not published: {routed.reason}", operation="ignore")
    structure = pub.config.structure
    key = (structure.fiscal_code, routed.doc_type.name, routed.accession)
    lock = pub.lock(key)
    await lock.acquire()
    try:
        # A restart processes again a message whose outcome was not recorded; it may
        # have been published, or answered and followed by later messages, before the stop.
        documents = await journal.documents_for(*key)
        earlier = await _earlier_outcome(journal, entry, documents)
        if earlier is not None:
            return await _with_plan(journal, entry, earlier)
        if any(d.message_id is not None and d.message_id > entry.id for d in documents):
            return Outcome(code=AckCode.AA, operation="ignore",
                           text="not published: a later message for this accession was processed first")
        # Twice at most: a resumed uncertain version that turns out to have landed
        # with other content is then replaced by this message's content; another
        # patient's, settled as it was sent, then gives way to the wrong-patient plan.
        for _ in range(2):
            outcome = await _publish_once(ctx, pub, entry, analysis, routed, key)
            if outcome is not None:
                return await _with_plan(journal, entry, outcome)
        raise GatewayUnavailable("the registry did not settle; the message will be processed again")
    finally:
        lock.release()
        pub.forget_lock(key, lock)


async def _publish_once(ctx: ServiceContext, pub: Publisher, entry: Entry, analysis, routed: Route,
                        key) -> Outcome | None:
    journal = ctx.journal
    structure = pub.config.structure
    documents = await journal.documents_for(*key)
    uncertain = await _uncertain_version(journal, documents) \
        if routed.action in (Action.PUBLISH, Action.DELETE) else None
    if routed.action is Action.DELETE and uncertain is not None:
        return await _delete_uncertain(ctx, pub, entry, uncertain, documents)
    report: Report | None = None
    patient = live_patient = None
    if routed.action is Action.PUBLISH:
        report = analysis.mapped_report()
        patient = person_code(report.patient.person_id)[0]
        if uncertain is not None and await _patient_of(journal, uncertain) not in (None, patient):
            # Another patient's version may have landed: settle it as it was sent, then
            # decide again (the wrong-patient plan), never resend it with this content.
            return await _resend_as_sent(ctx, pub, entry, uncertain, documents)
        live = current(documents)
        if live is not None and uncertain is None:
            live_patient = await _patient_of(journal, live)
    plan = decide(routed.action, documents, structure_cf=structure.fiscal_code, doc_type=routed.doc_type.name,
                  repository=structure.repository, accession=routed.accession,
                  repository_index=structure.repository_index, uncertain=uncertain,
                  patient=patient, live_patient=live_patient)
    if plan.action is Action.IGNORE:
        return Outcome(code=AckCode.AA, text=f"not published: {plan.reason}", operation="ignore")
    if plan.action is Action.DELETE:
        return await _delete(ctx, pub, entry, plan)
    if plan.action is Action.METADATA:
        return await _update_metadata(ctx, pub, entry, plan, routed.settings)
    if plan.wrong_patient:
        refusal = await _delete_wrong_patient(ctx, pub, entry, plan)
        if refusal is not None:
            return refusal

    steps = _JournalSteps(journal, entry, plan, key)
    try:
        made = await make_version(ctx.run_stage, steps, report, plan.ids, routed.doc_type,
                                  validate=pub.rules is not None)
    except ValidationFailed as exc:
        return classify(exc)
    if isinstance(made, Outcome):
        return made
    digest, pdf, document = made.digest, made.pdf, steps.document

    sub = build_submission(report, plan.ids.document_id, pub.config, pub.submission_ids())
    if plan.target is not None:
        sub = keep_hidden(sub, await _stored_submission(journal, plan.target))
    await journal.add_artifact(entry.id, ArtifactStage.SUBMIT, ArtifactName.SUBMISSION, _json(submission_record(sub)))
    operation = "replace" if plan.action is Action.REPLACE else "create"
    resend = plan.resumed is not None
    if operation == "create":
        call = pub.client.create(sub, pdf, resend=resend)
    else:
        call = pub.client.replace(plan.target.document_id, sub, pdf, resend=resend)
    result = await _submit(ctx, entry, operation, plan.ids.document_id, call)

    if result.outcome_class is not OutcomeClass.PUBLISHED:
        return classify(result, document_id=plan.ids.document_id, operation=operation)
    if plan.resumed is not None and result.reconciled and plan.resumed.content_hash != digest:
        # The earlier attempt landed with its own content: record it, then replace it with ours.
        await journal.put_document(dataclasses.replace(document, state=DocumentState.PUBLISHED))
        if plan.target is not None:
            await journal.put_document(dataclasses.replace(plan.target, state=DocumentState.REPLACED))
        return None
    await journal.put_document(dataclasses.replace(document, state=DocumentState.PUBLISHED, content_hash=digest,
                                                   message_id=entry.id))
    if plan.target is not None:
        await journal.put_document(dataclasses.replace(plan.target, state=DocumentState.REPLACED))
    published = classify(result, document_id=plan.ids.document_id, operation=operation)
    # What the mapping left out (deleted results, attachments not carried) is said in the ACK.
    notices = tuple(ErrItem(code=n.code, text=n.text, location=n.location, severity=n.severity)
                    for n in report.notices)
    return dataclasses.replace(published, errors=published.errors + notices)


async def _resend_as_sent(ctx: ServiceContext, pub: Publisher, entry: Entry, uncertain: Document,
                          documents) -> Outcome | None:
    """Send an uncertain version again exactly as it was sent (its journaled PDF and
    submission, the same ids), so the registry is certain; None once it is recorded as
    landed (the caller decides again), else the AE or AR to answer."""
    journal = ctx.journal
    previous = previous_of(uncertain, documents)
    sub = await _stored_submission(journal, uncertain)
    pdf = await _stored_pdf(journal, uncertain)
    if pdf is None:
        raise GatewayUnavailable(f"{uncertain.document_id} may have been published and its PDF is no longer "
                                 f"in the journal: an operator must check the gateway", operator_alert=True)
    if previous is None:
        operation, call = "create", pub.client.create(sub, pdf, resend=True)
    else:
        operation, call = "replace", pub.client.replace(previous.document_id, sub, pdf, resend=True)
    result = await _submit(ctx, entry, operation, uncertain.document_id, call)
    if result.outcome_class is not OutcomeClass.PUBLISHED:
        return classify(result, document_id=uncertain.document_id, operation=operation)
    await _record_rows(journal, settled_published(uncertain, documents))
    return None


async def _stored_pdf(journal, document: Document) -> bytes | None:
    """The PDF *document*'s message packaged last (its artifact), None when absent or purged."""
    for artifact in reversed(await journal.artifacts(document.message_id)):
        if artifact.name == ArtifactName.PDF:
            return artifact.content or None
    return None


async def _patient_of(journal, document: Document) -> str | None:
    """The patient (person_id code) *document* was published for, from its recorded submission."""
    try:
        return (await _stored_submission(journal, document)).patient_id
    except GatewayUnavailable:
        return None


async def _delete_wrong_patient(ctx: ServiceContext, pub: Publisher, entry: Entry, plan: Plan) -> Outcome | None:
    """The first step of the wrong-patient plan: delete the live version (another patient's).

    Its call is journaled with the plan's name, so the message's ACK names it and a
    restart after it goes on with the create (:func:`_earlier_outcome`); a restart
    before its answer sends it again (a 404 about this id then proves it landed).
    The AE or AR to answer when the gateway does not delete it; None once deleted.
    """
    journal = ctx.journal
    old = plan.deletes
    raise_alert(AlertKind.WRONG_PATIENT,
                f"message {entry.msh10 or entry.id} (entry {entry.id}) corrects {old.document_id} for "
                f"another patient: deleting it and publishing {plan.ids.document_id} as a new set "
                f"(RT section 4.2); check whether the first patient was shown the report")
    await journal.add_artifact(entry.id, ArtifactStage.PLAN, ArtifactName.PLAN, _json({
        "plan": WRONG_PATIENT, "delete": old.document_id, "create": plan.ids.document_id}))
    result = await _send_delete(ctx, pub, entry, old, plan_name=WRONG_PATIENT)
    if result.outcome_class is not OutcomeClass.PUBLISHED:
        return classify(result, document_id=old.document_id, operation="delete")
    await journal.put_document(dataclasses.replace(old, state=DocumentState.DELETED, message_id=entry.id))
    return None


async def _plan_deletion(journal, entry: Entry) -> GatewayRecord | None:
    """The wrong-patient plan's delete this message made (its gateway.json record), if any."""
    if not any(call.operation == "delete" for call in await journal.gateway_calls(entry.id)):
        return None   # the common case, without reading the artifacts
    for artifact in reversed(await journal.artifacts(entry.id)):
        if artifact.name == ArtifactName.GATEWAY:
            record = GatewayRecord.from_json(artifact.content)
            if record.plan == WRONG_PATIENT and record.operation == "delete" and record.taken:
                return record
    return None


async def _with_plan(journal, entry: Entry, outcome: Outcome) -> Outcome:
    """*outcome* with an ERR naming the wrong-patient plan's delete (its document id and
    X-Cart-id) when this message made one: MSA-3 names the last call (the create's)."""
    record = await _plan_deletion(journal, entry)
    if record is None:
        return outcome
    x_cart_id = record.last_attempt.get("x_cart_id")
    text = f"deleted {record.document_id} (another patient's)" + (f" X-Cart-id {x_cart_id}" if x_cart_id else "")
    return dataclasses.replace(outcome, errors=(*outcome.errors, ErrItem(code=ACCEPTED, severity="W", text=text)),
                               details={**outcome.details, WRONG_PATIENT: {
                                   "deleted": record.document_id, "delete_x_cart_id": x_cart_id,
                                   "create_x_cart_id": outcome.x_cart_id}})


async def _delete(ctx: ServiceContext, pub: Publisher, entry: Entry, plan: Plan) -> Outcome:
    journal = ctx.journal
    target = plan.target
    result = await _send_delete(ctx, pub, entry, target)
    if result.outcome_class is not OutcomeClass.PUBLISHED:
        return classify(result, document_id=target.document_id, operation="delete")
    # The deleting message is recorded: the registry row was last changed by it.
    await journal.put_document(dataclasses.replace(target, state=DocumentState.DELETED, message_id=entry.id))
    return classify(result, document_id=target.document_id, operation="delete")


async def _send_delete(ctx: ServiceContext, pub: Publisher, entry: Entry, document: Document, *,
                       resend: bool | None = None, plan_name: str | None = None) -> GatewayResult:
    """DELETE *document* with the submission that published it; *resend* defaults to
    whether this message already sent that call (it may have landed)."""
    journal = ctx.journal
    sub = await _stored_submission(journal, document)
    await journal.add_artifact(entry.id, ArtifactStage.SUBMIT, ArtifactName.SUBMISSION, _json(submission_record(sub)))
    if resend is None:
        resend = was_sent(await journal.gateway_calls(entry.id), document.document_id, "delete")
    return await _submit(ctx, entry, "delete", document.document_id, pub.client.delete(sub, resend=resend),
                         plan_name=plan_name)


async def _delete_uncertain(ctx: ServiceContext, pub: Publisher, entry: Entry, uncertain: Document,
                            documents) -> Outcome:
    """A cancellation while a version's publication is uncertain (its call left without a final
    answer, e.g. after an AR): that version is deleted if it landed; if it did not (the
    resent delete's 404), the version it was to replace is the live one and is deleted.

    Rows are marked at the end, the uncertain one last: until then a restart finds the
    same uncertainty and does the same again.
    """
    journal = ctx.journal
    previous = previous_of(uncertain, documents)
    result = await _send_delete(ctx, pub, entry, uncertain, resend=True)
    if result.outcome_class is not OutcomeClass.PUBLISHED:
        return classify(result, document_id=uncertain.document_id, operation="delete")
    target = uncertain
    if result.reconciled and previous is not None and previous.state == DocumentState.PUBLISHED:
        target = previous
        result = await _send_delete(ctx, pub, entry, previous)
        if result.outcome_class is not OutcomeClass.PUBLISHED:
            return classify(result, document_id=previous.document_id, operation="delete")
    await _record_rows(journal, settled_deleted(entry.id, uncertain, previous, previous_deleted=target is previous))
    return classify(result, document_id=target.document_id, operation="delete")


async def _update_metadata(ctx: ServiceContext, pub: Publisher, entry: Entry, plan: Plan, settings) -> Outcome:
    journal = ctx.journal
    target = plan.target
    sub = await _metadata_submission(journal, target, settings, pub.submission_ids())
    await journal.add_artifact(entry.id, ArtifactStage.SUBMIT, ArtifactName.SUBMISSION, _json(submission_record(sub)))
    result = await _submit(ctx, entry, "metadata", target.document_id, pub.client.metadata(sub))
    if result.outcome_class is not OutcomeClass.PUBLISHED:
        return classify(result, document_id=target.document_id, operation="metadata")
    await _metadata_applied(journal, target, sub)
    return classify(result, document_id=target.document_id, operation="metadata")


async def _metadata_applied(journal, document: Document, sub: Submission) -> None:
    """Record *sub* as *document*'s metadata now (the gateway took it): the next update or the
    delete starts from it, whichever way it was made (bridge.publish.metadata.APPLIED_STAGE)."""
    await journal.add_artifact(document.message_id, APPLIED_STAGE, ArtifactName.SUBMISSION,
                               _json(submission_record(sub)))


async def _metadata_submission(journal, target: Document, settings, submission_id: str) -> Submission:
    """The submission that published *target* with the ``KEY=VALUE`` *settings* applied, under a
    new submission id (bridge.publish.metadata.apply_settings)."""
    return apply_settings(await _stored_submission(journal, target), list(settings),
                          submission_id=submission_id)


@dataclass(frozen=True, slots=True)
class MetadataCall:
    """An operator's metadata update as made: the journal entry it is recorded under (the
    message that published the document) and the gateway's answer."""

    entry_id: int
    result: GatewayResult


def update_metadata(ctx: ServiceContext, target: str, settings) -> defer.Deferred:
    """An operator's metadata update (``journal update-metadata``, through the status page's
    operator endpoint); a Deferred of a :class:`MetadataCall`.

    *target* names the document as the CLI does (journal entry id, control id, document
    id or X-Cart-id); *settings* are ``KEY=VALUE`` in the gateway's field names
    (bridge.publish.metadata). Like a message, it takes the accession's lock, so it never
    races a correction or cancellation of the same accession; it then updates the
    named document only if that is still the current version. The call is journaled
    as ``journal update-metadata`` journals it in-process: under the publishing message,
    the new submission as a ``metadata`` artifact.

    Raises bridge.publish.metadata.UnknownTarget, NotCurrentVersion, or InvalidValue (a setting).
    """
    return defer.ensureDeferred(_operator_metadata(ctx, target, tuple(settings)))


async def _operator_metadata(ctx: ServiceContext, target: str, settings: tuple[str, ...]) -> MetadataCall:
    pub: Publisher = ctx.publisher
    journal = ctx.journal
    check_settings(settings)   # a mistyped key is refused before waiting for any lock
    document_id, key = await _document_named(journal, pub.config, target)
    lock = pub.lock(key)
    await lock.acquire()
    try:
        # Decided under the lock: a correction that held it may have replaced the version.
        documents = await journal.documents_for(*key)
        live = current(documents)
        if live is None or live.document_id != document_id or live.message_id is None:
            named = next((d for d in documents if d.document_id == document_id), None)
            now = f"; the current version is {live.document_id}" if live is not None else ""
            raise NotCurrentVersion(f"{document_id} is not the published version "
                                    f"({named.state if named else 'unknown'}): metadata can be updated "
                                    f"only on the current version{now}")
        sub = await _metadata_submission(journal, live, settings, pub.submission_ids())
        entry_id = live.message_id
        call_id = await journal.gateway_call_sent(entry_id, "metadata", document_id)
        await journal.add_artifact(entry_id, ArtifactStage.METADATA, ArtifactName.METADATA_REQUEST,
                                   _json(submission_record(sub)))
        call = pub.client.metadata(sub)
        result: GatewayResult = await as_deferred(call)
        await _record_answers(journal, entry_id, "metadata", document_id, call_id, result)
        if result.outcome_class is OutcomeClass.PUBLISHED:
            await _metadata_applied(journal, live, sub)
    finally:
        lock.release()
        pub.forget_lock(key, lock)
    log.info("operator metadata update (entry %d): %s", entry_id, result.summary())
    alert_for(result, f"entry {entry_id}")
    return MetadataCall(entry_id=entry_id, result=result)


async def _document_named(journal, config, target: str) -> tuple[str, tuple[str, str, str]]:
    """The document *target* names (the newest matching entry's) and its accession's lock key,
    from the route the pipeline journaled for that entry."""
    target = target.strip()
    found = await journal.find(target) if target else []
    if not found:
        raise UnknownTarget(f"no journal entry matches {target!r}")
    entry = next((e for e in reversed(found) if e.document_id), None)
    if entry is None:
        raise UnknownTarget(f"{target!r} names no published document")
    routes = [a for a in await journal.artifacts(entry.id) if a.name == ArtifactName.ROUTE]
    if not routes:
        raise UnknownTarget(f"entry {entry.id} has no recorded route: its document is not in the registry")
    try:
        route = json.loads(routes[-1].content)
        return entry.document_id, (config.structure.fiscal_code, route["doc_type"], route["accession"])
    except (ValueError, KeyError, TypeError):
        raise UnknownTarget(f"entry {entry.id}: its recorded route does not name an accession") from None


@dataclass
class _JournalSteps:
    """The journal's record of each stage of a version (bridge.publish.version.Steps): the
    CDA, the validation, the pending registry row before packaging, the PDF."""

    journal: Any
    entry: Entry
    plan: Plan
    key: tuple[str, str, str]
    document: Document | None = None
    """The version's pending registry row, once written."""

    async def rendered(self, cda: bytes, digest: str) -> Outcome | None:
        await self.journal.add_artifact(self.entry.id, ArtifactStage.RENDER, ArtifactName.CDA, cda)
        await self.journal.set_state(self.entry.id, State.RENDERED, self.plan.ids.document_id)
        plan = self.plan
        if plan.action is Action.REPLACE and plan.resumed is None and digest == plan.target.content_hash:
            return Outcome(code=AckCode.AA, text="already published: identical to the published version",
                           document_id=plan.target.document_id, operation="ignore")
        return None

    async def validated(self, validation) -> None:
        if validation is None:
            await journal_note(self.journal, self.entry, ArtifactStage.VALIDATE,
                               "local validation OFF: no rules installed")
            return
        await self.journal.add_artifact(self.entry.id, ArtifactStage.VALIDATE, ArtifactName.VALIDATION,
                                        _json(validation_record(validation)))
        await self.journal.set_state(self.entry.id, State.VALIDATED, validation.summary())

    async def packaging(self, digest: str) -> None:
        self.document = pending_row(self.plan, structure=self.key[0], doc_type=self.key[1],
                                    accession=self.key[2], content_hash=digest, message_id=self.entry.id)
        await self.journal.put_document(self.document)

    async def packaged(self, pdf: bytes) -> None:
        await self.journal.add_artifact(self.entry.id, ArtifactStage.PACKAGE, ArtifactName.PDF, pdf)
        await self.journal.add_artifact(self.entry.id, ArtifactStage.PACKAGE, ArtifactName.PDF_SHA256,
                                        hashlib.sha256(pdf).hexdigest().encode())
        await self.journal.set_state(self.entry.id, State.PACKAGED, self.plan.ids.document_id)


async def journal_note(journal, entry: Entry, stage: str, text: str) -> None:
    await journal.add_artifact(entry.id, stage, ArtifactName.NOTE, text.encode())


async def _submit(ctx: ServiceContext, entry: Entry, operation: str, document_id: str, call, *,
                  plan_name: str | None = None) -> GatewayResult:
    """Journal the call as sent (it may land even if no answer comes), await it, journal every answer."""
    journal = ctx.journal
    call_id = await journal.gateway_call_sent(entry.id, operation, document_id)
    await journal.set_state(entry.id, State.SUBMITTING, f"{operation} {document_id}")
    result: GatewayResult = await as_deferred(call)
    await _record_answers(journal, entry.id, operation, document_id, call_id, result)
    await journal.add_artifact(entry.id, ArtifactStage.SUBMIT, ArtifactName.GATEWAY,
                               gateway_record(result, operation, document_id, plan_name=plan_name).to_json())
    log.info("message %s: %s", entry.msh10 or entry.id, result.summary())
    alert_for(result, f"message {entry.msh10 or entry.id} (entry {entry.id})")
    return result


async def _record_answers(journal, message_id: int, operation: str, document_id: str, call_id: int,
                         result: GatewayResult) -> None:
    """Journal every attempt's answer: the first on the call journaled as sent, each retry as a call of its own."""
    for index, attempt in enumerate(result.attempts):
        if index:
            call_id = await journal.gateway_call_sent(message_id, operation, document_id)
        await journal.gateway_call_answered(call_id, **answer_fields(attempt))


async def _earlier_outcome(journal, entry: Entry, documents) -> Outcome | None:
    """This message's own gateway success from before the last stop, if any, with the
    registry settled (bridge.publish.recovery.settle_earlier)."""
    records = [GatewayRecord.from_json(a.content) for a in await journal.artifacts(entry.id)
               if a.name == ArtifactName.GATEWAY]
    settlement = settle_earlier(records, documents, entry.id)
    await _record_rows(journal, settlement.writes)
    if settlement.answer is None:
        return None
    record = settlement.answer
    last = record.last_attempt
    return published_outcome(record.document_id, record.operation, x_cart_id=last.get("x_cart_id"),
                             trace_id=last.get("trace_id"), workflow_instance_id=last.get("workflow_instance_id"))


async def _record_rows(journal, rows) -> None:
    for row in rows:
        await journal.put_document(row)


async def _uncertain_version(journal, documents) -> Document | None:
    """The newest pending version whose gateway call may have landed, if any."""
    for document in sorted((d for d in documents if d.state == DocumentState.PENDING), key=lambda d: -d.seq):
        if document.message_id is not None and was_sent(await journal.gateway_calls(document.message_id),
                                                        document.document_id):
            return document
    return None


async def _stored_submission(journal, document: Document) -> Submission:
    """*document*'s current submission (bridge.publish.submission.current_submission)."""
    sub = current_submission(await journal.artifacts(document.message_id), document.document_id)
    if sub is None:
        raise GatewayUnavailable(f"no recorded submission for {document.document_id}")
    return sub


def _json(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str).encode()
