"""Recording a gateway call's answers, and :func:`classify`: the one place that turns a
processing failure or a gateway call's result into an Outcome (the ACK's data).

Written once for every caller: the Receiver (bridge.service.receiver), the pipeline
(bridge.publish.pipeline), the operator's in-process metadata update
(bridge.commands.journal) and the accreditation run (bridge.accredit.run).
interface.md, ACK contract: any ACK that follows a gateway call has MSA-3
``X-Cart-id <uuid>`` and the reason in ERR.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from bridge.alerts import Kind as AlertKind, raise_alert
from bridge.errors import BridgeError, InternalError, ValidationFailed
from bridge.gateway.client import Attempt, GatewayResult, OutcomeClass
from bridge.model import AckCode
from bridge.outcome import ErrItem, Outcome

#: HL7 table 0357 "message accepted", for the informational ERR naming the document id.
ACCEPTED = "0"
#: The past participle of each operation, for ACK texts.
VERBS = {"create": "published", "replace": "replaced", "delete": "deleted", "metadata": "metadata updated"}


def answer_fields(attempt: Attempt) -> dict:
    """The journal's gateway_call_answered fields of one attempt (the problem body as JSON text,
    or the network error)."""
    return dict(http_status=attempt.status, x_cart_id=attempt.x_cart_id, trace_id=attempt.trace_id,
                span_id=attempt.span_id, workflow_instance_id=attempt.workflow_instance_id,
                warning=attempt.warning,
                problem=json.dumps(attempt.problem) if attempt.problem else attempt.error)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayRecord:
    """What the journal keeps of one call's answers (the ``gateway.json`` artifact, JSON with
    sorted keys): recovery reads it back."""

    operation: str
    document_id: str
    outcome: str
    """The gateway client's :class:`OutcomeClass` value."""
    reconciled: bool = False
    operator_alert: bool = False
    attempts: tuple[dict, ...] = ()
    """Each attempt's answer (:class:`~bridge.gateway.client.Attempt` fields), in order."""
    plan: str | None = None
    """The plan the call is a step of (``wrong-patient``), if any."""

    @property
    def taken(self) -> bool:
        """The gateway took the call."""
        return self.outcome == OutcomeClass.PUBLISHED.value

    @property
    def last_attempt(self) -> dict:
        return self.attempts[-1] if self.attempts else {}

    def to_json(self) -> bytes:
        data = {"operation": self.operation, "document_id": self.document_id, "outcome": self.outcome,
                "reconciled": self.reconciled, "operator_alert": self.operator_alert,
                "attempts": list(self.attempts)} | ({"plan": self.plan} if self.plan else {})
        return json.dumps(data, ensure_ascii=False, sort_keys=True, default=str).encode()

    @classmethod
    def from_json(cls, content: bytes) -> GatewayRecord:
        data = json.loads(content)
        return cls(operation=data["operation"], document_id=data["document_id"], outcome=data["outcome"],
                   reconciled=bool(data.get("reconciled")), operator_alert=bool(data.get("operator_alert")),
                   attempts=tuple(data.get("attempts") or ()), plan=data.get("plan"))


def gateway_record(result: GatewayResult, operation: str, document_id: str, *,
                   plan_name: str | None = None) -> GatewayRecord:
    """What the journal keeps of a call's answers (``gateway.json``)."""
    return GatewayRecord(operation=operation, document_id=document_id, outcome=result.outcome_class.value,
                         reconciled=result.reconciled, operator_alert=result.operator_alert,
                         attempts=tuple(dataclasses.asdict(a) for a in result.attempts), plan=plan_name)


def alert_for(result: GatewayResult, what: str) -> None:
    """The OPERATOR ALERT a call's answer asks for, if any (*what*: the message or entry, no patient data)."""
    if result.operator_alert:
        kind = AlertKind.CREDENTIALS if result.outcome_class is OutcomeClass.NOT_NOW else AlertKind.UNCERTAIN
        raise_alert(kind, f"{what}: {result.alert or 'check the gateway'} ({result.summary()})")


def classify(failure: BaseException | GatewayResult, *, document_id: str | None = None,
             operation: str | None = None) -> Outcome:
    """The one classifier: the Outcome a failure or a gateway call's result comes to.

    A :class:`GatewayResult`: AA when published, else the AE or AR its class gives. A
    :class:`~bridge.errors.BridgeError`: the ACK code, ERR code and location it knows
    (ValidationFailed: one ERR per finding). Anything else is a bug: AR 207
    (:class:`~bridge.errors.InternalError`); the caller logs its traceback.
    """
    if isinstance(failure, GatewayResult):
        return _call_outcome(failure, document_id=document_id, operation=operation)
    extra = {"document_id": document_id} if document_id else {}
    extra |= {"operation": operation} if operation else {}
    if isinstance(failure, ValidationFailed) and failure.findings:
        # interface.md: every finding (up to the limit) is an ERR; ERR-8 starts with the rule id.
        return Outcome(code=AckCode(failure.ack_code), text=failure.message,
                       errors=tuple(ErrItem(code=failure.err_code, text=f) for f in failure.findings),
                       details={"validation": failure.summary}, **extra)
    if not isinstance(failure, BridgeError):
        failure = InternalError()
    return Outcome.from_error(failure, **extra)


def temporary(failure: BaseException | None, outcome: Outcome) -> bool:
    """Whether the failure behind *outcome* may pass by itself (retry.after_processing's
    *temporary*): an error that says so (the gateway unreachable, a worker lost), or an
    AR the gateway gave (it was called: operation set), its "not now"."""
    return bool(getattr(failure, "temporary", False)) or (outcome.code is AckCode.AR and bool(outcome.operation))


def _call_outcome(result: GatewayResult, *, document_id: str, operation: str) -> Outcome:
    """The Outcome of a call: AA when published, else the AE or AR its class gives."""
    if result.published:
        return published_outcome(document_id, operation, x_cart_id=result.x_cart_id, trace_id=result.trace_id,
                                 workflow_instance_id=result.workflow_instance_id)
    error = result.to_error()
    text = f"X-Cart-id {result.x_cart_id}" if result.x_cart_id else error.message
    return Outcome(code=AckCode(error.ack_code), text=text,
                   errors=(ErrItem(code=error.err_code, text=error.message),),
                   document_id=document_id, operation=operation, x_cart_id=result.x_cart_id,
                   trace_id=result.trace_id, workflow_instance_id=result.workflow_instance_id,
                   details={"problem": result.problem} if result.problem else {})


def published_outcome(document_id: str, operation: str, *, x_cart_id: str | None, trace_id: str | None,
                      workflow_instance_id: str | None) -> Outcome:
    """AA for a call the gateway took (also one journaled before a restart): MSA-3 the X-Cart-id,
    an informational ERR naming the document."""
    verb = VERBS[operation]
    return Outcome(code=AckCode.AA, text=f"X-Cart-id {x_cart_id}" if x_cart_id else verb,
                   errors=(ErrItem(code=ACCEPTED, severity="I", text=f"{verb} {document_id}"),),
                   document_id=document_id, operation=operation, x_cart_id=x_cart_id,
                   trace_id=trace_id, workflow_instance_id=workflow_instance_id)
