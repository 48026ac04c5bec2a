"""``GET /messages/<id>``: one journal entry explained (state transitions, gateway calls, the
names of its artifacts), never the message, the ACK or an artifact's content."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.web import pages, resource

from bridge.service.context import ServiceContext
from bridge.web.answer import JSON, answer, to_json
from bridge.web.operator import TOKEN_FILE, OperatorEndpoint
from bridge.web.redact import redact

#: Fields of a gateway problem body shown; "detail" may quote the document, so it is left out.
PROBLEM_FIELDS = ("type", "title", "status")


def entry_summary(entry) -> dict[str, Any]:
    """The fields of a journal entry that say how it was processed (no message content)."""
    return {
        "id": entry.id, "received_at": entry.received_at, "updated_at": entry.updated_at,
        "peer": entry.peer, "facility": entry.msh4, "control_id": entry.msh10,
        "message_type": entry.message_type, "charset": entry.charset, "state": entry.state,
        "outcome": entry.outcome, "ack_code": entry.ack_code, "resend_of": entry.resend_of,
        "operation": entry.operation, "document_id": entry.document_id, "x_cart_id": entry.x_cart_id,
        "trace_id": entry.trace_id, "workflow_instance_id": entry.workflow_instance_id,
        "error": redact(entry.error), "purged_at": entry.purged_at,
    }


#: In place of the gateway's warning text for a reader without the operator token.
WARNING_WITHHELD = ("withheld: the gateway's text may name the patient; read it with the operator token "
                    f"(Authorization: Bearer <state_dir/{TOKEN_FILE}>) from this host, or `fse-bridge journal show`")


def call_summary(call, *, operator: bool = False) -> dict[str, Any]:
    """One gateway call; its warning text verbatim only for the *operator* (it may name the patient)."""
    return {
        "id": call.id, "operation": call.operation, "document_id": call.document_id, "state": call.state,
        "at": call.at, "http_status": call.http_status, "x_cart_id": call.x_cart_id,
        "trace_id": call.trace_id, "span_id": call.span_id, "workflow_instance_id": call.workflow_instance_id,
        "warning": call.warning if operator or not call.warning else WARNING_WITHHELD,
        "problem": _problem(call.problem),
    }


def _problem(text: str | None) -> dict | str | None:
    """The gateway's problem type/title/status; a network error text as it is (it names no patient)."""
    if not text:
        return None
    try:
        problem = json.loads(text)
    except ValueError:
        return redact(text)
    if not isinstance(problem, dict):
        return None
    return {k: problem[k] for k in PROBLEM_FIELDS if k in problem}


@defer.inlineCallbacks
def message_detail(journal, key: str, *, operator: bool = False):
    """``(status, body)`` for /messages/<key>: the entry, its transitions, gateway calls and
    the names of the artifacts recorded for it (the gateway's warnings only for the *operator*)."""
    if key.isdigit():
        entry = yield journal.get(int(key))
        entries = [entry] if entry is not None else []
    else:
        entries = yield journal.find(key)
    if not entries:
        return 404, {"error": f"no journal entry {key}"}
    if len(entries) > 1:
        return 300, {"error": f"{len(entries)} journal entries match {key}",
                     "matches": [entry_summary(e) for e in entries]}
    entry = entries[0]
    transitions = yield journal.transitions(entry.id)
    calls = yield journal.gateway_calls(entry.id)
    artifacts = yield journal.artifacts(entry.id)
    body = entry_summary(entry)
    body["transitions"] = [{"state": t.state, "at": t.at, "detail": redact(t.detail)} for t in transitions]
    body["gateway_calls"] = [call_summary(c, operator=operator) for c in calls]
    # Retention (bridge.journal.retention) empties contents, never the rows: say so.
    body["artifacts"] = [{"stage": a.stage, "name": a.name, "at": a.at,
                          **({"purged": f"purged on {a.purged_at[:10]}"} if a.purged_at else
                             {"bytes": len(a.content)})}
                         for a in artifacts]
    if entry.purged_at:
        body["message"] = f"purged on {entry.purged_at[:10]}"
    return 200, body


class MessageResource(resource.Resource):
    isLeaf = True

    def __init__(self, ctx: ServiceContext, key: str, operator: OperatorEndpoint | None = None):
        super().__init__()
        self.ctx, self.key, self.operator = ctx, key, operator

    def render_GET(self, request):
        if self.ctx.journal is None:
            return answer(request, defer.succeed((503, JSON, to_json({"error": "journal not open"}))),
                           what="/messages")
        operator = self.operator is not None and self.operator.from_operator(request)
        d = message_detail(self.ctx.journal, self.key, operator=operator)
        d.addCallback(lambda r: (r[0], JSON, to_json(r[1])))
        return answer(request, d, what="/messages")


class MessagesResource(resource.Resource):
    def __init__(self, ctx: ServiceContext, operator: OperatorEndpoint | None = None):
        super().__init__()
        self.ctx, self.operator = ctx, operator

    def getChild(self, path: bytes, request):
        key = path.decode("utf-8", "replace").strip()
        if not key:
            return pages.notFound(detail="give a message id: /messages/<id>")
        return MessageResource(self.ctx, key, self.operator)
