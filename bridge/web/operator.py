"""The operator API, for ``fse-bridge journal update-metadata`` and ``journal resubmit``
(interface.md, "Commands"): ``POST /operator/metadata`` and ``POST /operator/resubmit``, from
this host only, with ``Authorization: Bearer <token>`` (the token in state_dir/operator.token,
written at start by the WebService)."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging

from twisted.internet import defer
from twisted.web import resource

from bridge.inflight import InFlight
from bridge.errors import BridgeError, InvalidValue
from bridge.publish import pipeline
from bridge.publish.metadata import UnknownTarget
from bridge.service.context import ServiceContext
from bridge.web.answer import JSON, answer, to_json
from bridge.web.redact import redact

log = logging.getLogger(__name__)

#: Files in state_dir telling `journal update-metadata` where the running service is.
TOKEN_FILE = "operator.token"
URL_FILE = "web.url"
#: An operator request body larger than this is refused (a target and a few settings).
MAX_OPERATOR_BODY = 64 * 1024
#: How long a stopping service waits for operator updates in flight.
OPERATOR_GRACE_S = 20.0


class OperatorEndpoint:
    """The operator token and the updates in flight (a stop waits for them)."""

    def __init__(self, token: str):
        self.token = token
        self.in_flight = InFlight()

    def authorised(self, request) -> bool:
        given = request.getHeader("authorization") or ""
        scheme, _, value = given.partition(" ")
        # Constant time: the answer's timing must not reveal how much of a guess matched.
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    def from_operator(self, request) -> bool:
        """From this host with the token: the token never crosses the network (plain HTTP)."""
        client = getattr(request.getClientAddress(), "host", "")
        return same_host(client, getattr(request.getHost(), "host", "")) and self.authorised(request)

    def track(self, d: defer.Deferred) -> defer.Deferred:
        return self.in_flight.track(d)

    def drain(self, reactor, timeout: float = OPERATOR_GRACE_S) -> defer.Deferred:
        return self.in_flight.drain(reactor, timeout)


def read_operator_body(body: bytes, content_type: str | None, fields: tuple[str, ...]) -> dict:
    """The JSON object of an operator request whose fields are among *fields*, with a valid
    ``target``; InvalidValue naming the field (``body`` when it is not such an object)."""
    names = " and ".join(fields)
    if not (content_type or "").split(";")[0].strip().lower() == "application/json":
        raise InvalidValue("body: expected JSON (Content-Type: application/json)")
    if len(body) > MAX_OPERATOR_BODY:
        raise InvalidValue(f"body: over {MAX_OPERATOR_BODY} bytes")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidValue("body: not JSON") from None
    if not isinstance(data, dict):
        raise InvalidValue(f"body: expected a JSON object with {names}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InvalidValue(f"{unknown[0]}: unknown field (expected {names})")
    target = data.get("target")
    if not isinstance(target, (str, int)) or isinstance(target, bool) or not str(target).strip():
        raise InvalidValue("target: expected a journal entry id, control id, document id or X-Cart-id")
    return data | {"target": str(target).strip()}


def read_operator_request(body: bytes, content_type: str | None) -> tuple[str, list[str]]:
    """``(target, settings)`` of a ``POST /operator/metadata`` body; InvalidValue naming the field."""
    data = read_operator_body(body, content_type, ("target", "settings"))
    settings = data.get("settings")
    if not isinstance(settings, list) or not settings or not all(isinstance(v, str) for v in settings):
        raise InvalidValue('settings: expected a non-empty list of "KEY=VALUE" strings')
    return data["target"], settings


def read_resubmit_request(body: bytes, content_type: str | None) -> str:
    """The target of a ``POST /operator/resubmit`` body; InvalidValue naming the field."""
    return read_operator_body(body, content_type, ("target",))["target"]


def metadata_answer(call: pipeline.MetadataCall) -> tuple[int, dict]:
    """``(HTTP status, body)`` for a metadata call made: 200 when the gateway took it, 502 otherwise."""
    result = call.result
    error = result.to_error()
    body = {"operation": result.operation, "document_id": result.document_id, "entry": call.entry_id,
            "ok": result.published, "http_status": result.status, "x_cart_id": result.x_cart_id,
            "warning": result.warning, "summary": result.summary(),
            "error": error.message if error is not None else None}
    return (200 if result.published else 502), body


def _refusal(failure) -> tuple[int, dict]:
    """The answer for an update refused before (or without) a gateway call."""
    if not failure.check(BridgeError):
        log.error("operator metadata update failed:\n%s", failure.getTraceback())
        return failure
    error = failure.value
    # A bad setting; no such entry; a document not the current version (or without its submission).
    status = 400 if isinstance(error, InvalidValue) else 404 if isinstance(error, UnknownTarget) else 409
    log.info("operator metadata update refused (HTTP %d): %s", status, error.message)
    return status, {"error": error.message} | ({"field": "settings"} if status == 400 else {})


class OperatorResource(resource.Resource):
    """An operator action: ``POST`` only, with the operator token (403 without it, checked
    first so that nothing is said to a caller without it; 405 for another method)."""

    isLeaf = True
    what = "/operator"
    """The resource, as the log names it."""

    def __init__(self, ctx: ServiceContext, operator: OperatorEndpoint):
        super().__init__()
        self.ctx, self.operator = ctx, operator

    def render(self, request):
        client = getattr(request.getClientAddress(), "host", "")
        if not same_host(client, getattr(request.getHost(), "host", "")):
            # The token is read from state_dir, so the CLI runs on this host; the page may
            # listen beyond it (for /metrics), over plain HTTP: operator actions never do.
            log.warning("operator endpoint: a request from another host (%s) refused", client)
            return self._now(request, 403, {"error": "forbidden: operator actions are taken from this "
                                                     "host only"})
        if not self.operator.authorised(request):
            log.warning("operator endpoint: a request from %s without the operator token refused",
                        getattr(request.getClientAddress(), "host", "?"))
            return self._now(request, 403, {"error": "forbidden: give Authorization: Bearer <the token in "
                                                     f"state_dir/{TOKEN_FILE}>"})
        if request.method != b"POST":
            request.setHeader(b"Allow", b"POST")
            return self._now(request, 405, {"error": "method: only POST"})
        request.content.seek(0)
        try:
            d = self.act(request.content.read(MAX_OPERATOR_BODY + 1), request.getHeader("content-type"))
        except InvalidValue as error:
            return self._now(request, 400, {"error": error.message, "field": error.message.split(":")[0]})
        if isinstance(d, tuple):
            return self._now(request, *d)
        d = self.operator.track(d)
        d.addCallback(lambda answer: (answer[0], JSON, to_json(answer[1])))
        return answer(request, d, what=self.what)

    def act(self, body: bytes, content_type: str | None) -> defer.Deferred | tuple[int, dict]:
        """A Deferred of ``(HTTP status, body)``, or at once ``(status, body)``; InvalidValue: 400."""
        raise NotImplementedError

    def _now(self, request, status: int, body: dict):
        return answer(request, defer.succeed((status, JSON, to_json(body))), what=self.what)


class MetadataResource(OperatorResource):
    """``POST /operator/metadata``: one metadata update through the running service."""

    what = "/operator/metadata"

    def act(self, body, content_type):
        target, settings = read_operator_request(body, content_type)
        if getattr(self.ctx, "publisher", None) is None or self.ctx.journal is None:
            return 503, {"error": "this service publishes no documents"}
        return pipeline.update_metadata(self.ctx, target, settings).addCallbacks(metadata_answer, _refusal)


class ResubmitResource(OperatorResource):
    """``POST /operator/resubmit``: ``journal resubmit`` through the running service, which
    journals the entry's bytes again and processes the new entry at once (its Receiver)."""

    what = "/operator/resubmit"

    def __init__(self, ctx: ServiceContext, operator: OperatorEndpoint, listener):
        super().__init__(ctx, operator)
        self.listener = listener

    def act(self, body, content_type):
        target = read_resubmit_request(body, content_type)
        receiver = getattr(self.listener, "receiver", None)
        if receiver is None or self.ctx.journal is None:
            return 503, {"error": "this service processes no messages"}
        return resubmit(self.ctx.journal, receiver, target)


@defer.inlineCallbacks
def resubmit(journal, receiver, target: str):
    """``(HTTP status, body)`` of an operator's resubmit of the entry *target* names (id,
    control id, document id or X-Cart-id): 200 once the new entry is processed, whatever its
    outcome (the body says it); 404 no such entry; 409 several entries, a purged message, or an
    entry not finished yet (the service is processing it: a copy would run beside it)."""
    found = yield journal.find(target)
    if not found:
        return _refused(404, f"no journal entry matches {target!r}")
    if len(found) > 1:
        ids = [e.id for e in found]
        return _refused(409, f"{target!r} matches entries {', '.join(map(str, ids))}: give the id",
                        matches=ids)
    entry = found[0]
    if entry.purged:
        return _refused(409, f"entry {entry.id}: the message was purged on {entry.purged_at[:10]}; "
                             "ask the sender to send it again")
    if not entry.finished:
        return _refused(409, f"entry {entry.id} is not finished yet (state {entry.state}): "
                             "the service is processing it")
    try:
        new = yield receiver.resubmit(entry.id)
    except KeyError:      # gone or purged since it was found
        return _refused(404, f"no journal entry {entry.id}")
    except ValueError as error:
        return _refused(409, str(error))
    status, body = resubmit_answer(new)
    log.info("operator resubmit of entry %d: entry %d, outcome %s, ACK %s", entry.id, new.id,
             new.outcome or "none (see above)", body["ack_code"] or "none")
    return status, body


def _refused(status: int, error: str, **extra) -> tuple[int, dict]:
    log.info("operator resubmit refused (HTTP %d): %s", status, error)
    return status, {"error": error, **extra}


def resubmit_answer(entry) -> tuple[int, dict]:
    """``(200, body)`` for an entry resubmitted and processed: its outcome, the ACK's MSA-1 and
    MSA-3, and what was published (never the message itself; fiscal codes masked)."""
    code, text = ack_fields(entry.ack, entry.charset)
    text = redact(text)
    summary = f"entry {entry.id} (resubmitted from entry {entry.resend_of}): " + (
        f"{entry.outcome} {text or ''}".rstrip() if entry.outcome else "not finished (see the service log)")
    if entry.document_id:
        summary += f"; document {entry.document_id}"
        if entry.operation:
            summary += f" ({entry.operation})"
    if entry.x_cart_id:
        summary += f"; X-Cart-id {entry.x_cart_id}"
    return 200, {"entry": entry.id, "resend_of": entry.resend_of, "state": entry.state,
                 "outcome": entry.outcome, "ack_code": code, "ack_text": text,
                 "document_id": entry.document_id, "operation": entry.operation,
                 "x_cart_id": entry.x_cart_id, "summary": summary}


def ack_fields(ack: bytes | None, charset: str | None) -> tuple[str | None, str | None]:
    """MSA-1 and MSA-3 of an ACK (None when there is none)."""
    if not ack:
        return None, None
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA") and len(segment) > 4:
            try:
                text = segment.decode(charset or "iso-8859-1", "replace")
            except LookupError:   # a codec this Python does not know: the ASCII parts still read
                text = segment.decode("iso-8859-1")
            fields = text.split(segment[3:4].decode("latin-1"))
            return (fields[1] or None), (fields[3] if len(fields) > 3 else "") or None
    return None, None


def same_host(client: str, server: str) -> bool:
    """Is a connection from *client* to our *server* address one from this host (loopback, or
    from the very address it reached)?"""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback) or client == server
