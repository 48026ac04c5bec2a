"""The embedded gateway simulator: Twisted Web over the checks of :mod:`bridge.simulator.checks`.

The official API's paths of the four operations, and the Region's
(:data:`bridge.simulator.contract.ROUTES`), under a base path (default the
Region's ``/gateway/v2/``) and the national one: the client's configured paths
are its own business, the simulator answers 404 to any other;
``X-Cart-id`` on every answer, success bodies as the real gateway's
(gateway.md section 8), optional mutual TLS. Checks run in a worker thread
(PDF signatures, XSD and schematron are blocking).

Test hooks under ``/_sim/``:

- ``GET /_sim/registry``: the registry of documents (JSON list);
- ``GET /_sim/requests``: the requests seen (operation, path id, status,
  X-Cart-id, both jti);
- ``POST /_sim/faults``: append scripted faults (JSON list of :class:`Fault`
  fields); ``DELETE /_sim/faults`` clears them;
- ``POST /_sim/release``: the answers a fault's ``delay_s`` holds go out now
  (a test holds an answer with a long delay and ends it when it chooses).
"""

from __future__ import annotations

import collections
import json
import logging
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, fields
from urllib.parse import unquote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from zope.interface import implementer
from twisted.internet import defer, threads
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.web import resource, server

from bridge.cda import validate
from bridge.simulator import checks, contract
from bridge.simulator.problems import Problem
from bridge.simulator.registry import Registry

log = logging.getLogger(__name__)

#: gateway.md section 8: delete/update answered 202 when INI failed and the gateway retries alone.
INI_ASYNC_WARNING = "Attenzione, transazione presa in carico. Nuovo tentativo in corso"
#: ErrorResponseDTO.instance maxLength (the official OpenAPI).
MAX_INSTANCE = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One scripted misbehaviour, used by the next matching request(s)."""

    operation: str | None = None
    """Only requests of this operation (None: any)."""
    status: int | None = None
    """Answer this status without processing (a problem body; 5xx as generic errors)."""
    problem: str | None = None
    """Problem name for *status* (default: generic-error, or a GovWay name for 401)."""
    retry_after: str | None = None
    """Retry-After header value for *status*."""
    delay_s: float = 0.0
    """Wait this long before answering (or before dropping the connection)."""
    action: str = "answer"
    """answer | reset (drop before processing) | drop-after-processing (process, then drop) |
    ini-async (delete/metadata: processed, answered 202 with the gateway's "retrying INI" warning)."""
    times: int = 1

    @classmethod
    def from_dict(cls, data: dict) -> "Fault":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault field {sorted(unknown)[0]}")
        fault = cls(**data)
        if fault.action not in ("answer", "reset", "drop-after-processing", "ini-async"):
            raise ValueError(f"unknown fault action {fault.action!r}")
        return fault


class GatewaySimulator(resource.Resource):
    """The HTTP resource: routes, faults, answers."""

    isLeaf = True

    def __init__(self, *, reactor, registry: Registry, audience: str, rules=None, validate=None,
                 base_path: str = contract.REGION_BASE_PATH, faults=()):
        super().__init__()
        self.reactor = reactor
        self.registry = registry
        self.audience = audience
        self.rules = rules
        self.validate = validate
        self.base_path = "/" + base_path.strip("/") + "/" if base_path.strip("/") else "/"
        self.routes = []
        # The same operations under the national gateway's base too (the Region forwards to it).
        bases = dict.fromkeys((self.base_path, contract.NATIONAL_BASE_PATH))
        # Longer templates first so documents/{idDoc}/metadata is not taken for documents/{idDoc}.
        for method, template, op, _source in sorted(contract.ROUTES, key=lambda r: -len(r[1])):
            for base in bases:
                pattern = re.escape(base + template).replace(re.escape("{idDoc}"), "([^/]+)")
                self.routes.append((method, re.compile(f"^{pattern}$"), op, base + template))
        self._faults: list[list] = [[f, f.times] for f in faults]
        self._lock = threading.Lock()
        self.seen: collections.deque[dict] = collections.deque(maxlen=1000)
        """The last requests (operation, path id, status, X-Cart-id, jti): no patient data."""
        self._pending = set()

    # ------------------------------------------------------------------ faults

    def add_faults(self, faults) -> None:
        with self._lock:
            self._faults.extend([f, f.times] for f in faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, operation: str) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                fault, left = entry
                if left > 0 and fault.operation in (None, operation):
                    entry[1] -= 1
                    return fault
        return None

    def release(self) -> int:
        """Send the delayed answers (and resets) now; how many."""
        held = [call for call in self._pending if call.active()]
        for call in held:
            call.reset(0)
        return len(held)

    def stop(self) -> None:
        """Cancel delayed answers (tests and shutdown)."""
        for call in list(self._pending):
            if call.active():
                call.cancel()
        self._pending.clear()

    # ------------------------------------------------------------------ HTTP

    def render(self, request):
        x_cart = str(uuid.uuid4())
        request.setHeader(b"X-Cart-id", x_cart.encode())
        raw_path = request.path.decode("latin-1")
        method = request.method.decode("latin-1")
        if raw_path.startswith("/_sim/"):
            return self._admin(request, method, raw_path)
        for route_method, pattern, op, template in self.routes:
            match = pattern.match(raw_path)
            if match and method == route_method:
                path_id = unquote(match.group(1)) if match.groups() else None
                return self._operation(request, op, path_id, raw_path, template, x_cart)
        return self._json(request, 404, {"type": "/msg/generic-error", "title": "Not found",
                                         "status": 404, "detail": "no such operation",
                                         "instance": raw_path[:MAX_INSTANCE]})

    def _json(self, request, status: int, payload, content_type: bytes = b"application/json") -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", content_type)
        return json.dumps(payload, ensure_ascii=False).encode("utf-8")

    def _admin(self, request, method: str, path: str) -> bytes:
        if path == "/_sim/registry" and method == "GET":
            return self._json(request, 200, self.registry.all())
        if path == "/_sim/requests" and method == "GET":
            return self._json(request, 200, list(self.seen))
        if path == "/_sim/release" and method == "POST":
            return self._json(request, 200, {"released": self.release()})
        if path == "/_sim/faults" and method == "DELETE":
            self.clear_faults()
            return self._json(request, 200, {"faults": 0})
        if path == "/_sim/faults" and method == "POST":
            try:
                data = json.loads(request.content.read() or b"[]")
                faults = [Fault.from_dict(d) for d in (data if isinstance(data, list) else [data])]
            except (ValueError, TypeError) as exc:
                return self._json(request, 400, {"error": str(exc)})
            self.add_faults(faults)
            return self._json(request, 200, {"added": len(faults)})
        return self._json(request, 404, {"error": "unknown simulator endpoint"})

    def _operation(self, request, op: str, path_id, raw_path: str, instance: str, x_cart: str):
        """*instance*: the problem bodies' ``instance``, the operation's path template (the OpenAPI
        caps it at 100 characters, which a path holding a 256-character id would exceed)."""
        if request.content is not None:
            request.content.seek(0)
        body = request.content.read() if request.content is not None else b""
        headers = {k.decode("latin-1").lower(): v[-1].decode("latin-1")
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        sim_request = checks.SimRequest(
            operation=op, path_id=path_id, headers=headers,
            content_type=headers.get("content-type", ""), body=body, path=raw_path,
            client_cert=_peer_certificate(request))
        record = {"operation": op, "path_id": path_id, "x_cart_id": x_cart,
                  "jti": [_jti(headers.get("authorization", "")[7:]),
                          _jti(headers.get("fse-jwt-signature", ""))]}
        self.seen.append(record)
        fault = self._take_fault(op)
        trace_id, span_id = secrets.token_hex(8), secrets.token_hex(8)

        if fault is not None and fault.action == "reset":
            record["status"] = None
            self._later(fault.delay_s, request.channel.transport.abortConnection)
            return server.NOT_DONE_YET
        if fault is not None and fault.status is not None:
            name = fault.problem or ("TokenAuthenticationFailed" if fault.status == 401 else "generic-error")
            problem = Problem(name, "scripted by the simulator", status=fault.status)
            payload = problem.body(op, instance=instance, trace_id=trace_id, span_id=span_id)
            record["status"] = fault.status

            def answer_fault():
                if fault.retry_after is not None:
                    request.setHeader(b"Retry-After", fault.retry_after.encode())
                _finish(request, self._json(request, fault.status, payload, b"application/problem+json"))

            self._later(fault.delay_s, answer_fault)
            return server.NOT_DONE_YET

        ctx = checks.Context(audience=self.audience, now=self.reactor.seconds(), registry=self.registry,
                             rules=self.rules, validate=self.validate)
        state = checks.State(sim_request, ctx)
        d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                      checks.check_request, sim_request, ctx, state)

        def done(accepted: checks.Accepted):
            log.info("simulator %s %s: %d X-Cart-id %s", op, accepted.document_id, accepted.status, x_cart)
            status, warning = accepted.status, accepted.warning
            if fault is not None and fault.action == "ini-async" and op in ("delete", "metadata"):
                status, warning = 202, INI_ASYNC_WARNING
            record["status"] = status
            payload = {"traceID": trace_id, "spanID": span_id,
                       "workflowInstanceId": accepted.workflow_instance_id}
            if warning is not None:
                payload["warning"] = warning
            return status, payload, b"application/json"

        def refused(failure):
            failure.trap(Problem)
            problem = failure.value
            wif = None
            if op == "create" and not problem.govway:
                wif = state.workflow_instance_id or checks.UNKNOWN_WORKFLOW_ID
            status = problem.status_for(op)
            record["status"] = status
            record["problem"] = problem.name
            log.info("simulator %s refused: %d %s X-Cart-id %s", op, status, problem.name, x_cart)
            return status, problem.body(op, instance=instance, trace_id=trace_id, span_id=span_id,
                                        workflow_instance_id=wif), b"application/problem+json"

        def crashed(failure):
            log.error("simulator %s crashed: %s", op, failure.getTraceback())
            record["status"] = 500
            return 500, {"type": "/msg/generic-error", "title": "Errore generico.", "status": 500,
                         "detail": "unexpected error", "instance": instance, "traceID": trace_id,
                         "spanID": span_id}, b"application/problem+json"

        def respond(answer):
            status, payload, content_type = answer
            if fault is not None and fault.action == "drop-after-processing":
                record["dropped"] = True
                self._later(fault.delay_s, request.channel.transport.abortConnection)
                return
            self._later(fault.delay_s if fault else 0.0,
                        lambda: _finish(request, self._json(request, status, payload, content_type)))

        d.addCallbacks(done, refused).addErrback(crashed).addCallback(respond)
        d.addErrback(lambda f: log.error("simulator answer failed: %s", f.getTraceback()))
        return server.NOT_DONE_YET

    def _later(self, delay: float, fn) -> None:
        if delay <= 0:
            fn()
            return
        call = self.reactor.callLater(delay, lambda: (self._pending.discard(call), fn()))
        self._pending.add(call)


def _peer_certificate(request):
    """The TLS client certificate (cryptography), None without mutual TLS."""
    transport = getattr(request.channel, "transport", None)
    get = getattr(transport, "getPeerCertificate", None)
    peer = get() if get is not None else None
    return peer.to_cryptography() if peer is not None else None


def _finish(request, data: bytes) -> None:
    if request.finished or request.channel is None:
        return
    request.write(data)
    request.finish()


def _jti(token: str) -> str | None:
    try:
        value = jwt.decode(token.strip(), options={"verify_signature": False}).get("jti")
    except jwt.PyJWTError:
        return None
    return value if isinstance(value, str) else None


@dataclass
class SimulatorHandle:
    """A listening simulator: its URL, port, registry and resource; ``stop()`` closes it."""

    url: str
    port: int
    registry: Registry
    simulator: GatewaySimulator
    listening: object

    @property
    def base_url(self) -> str:
        return self.url

    def stop(self) -> defer.Deferred:
        self.simulator.stop()
        d = defer.maybeDeferred(self.listening.stopListening)
        d.addBoth(lambda r: (self.registry.close(), r)[1])
        return d

    def as_dict(self) -> dict:
        return {"url": self.url, "port": self.port}


@implementer(IOpenSSLServerConnectionCreator)
class _ServerTls:
    """A server TLS connection creator over pyOpenSSL with cryptography objects.

    With tls_client_ca, client certificates are required and verified (mutual TLS).
    """

    def __init__(self, settings):
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.use_certificate(x509.load_pem_x509_certificate(settings.tls_cert.read_bytes()))
        context.use_privatekey(serialization.load_pem_private_key(settings.tls_key.read_bytes(),
                                                                  password=None))
        context.check_privatekey()
        if settings.tls_client_ca:
            context.load_verify_locations(str(settings.tls_client_ca))
            context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: args[-1])
        self._context = context

    def serverConnectionForTLS(self, tls_protocol):
        return SSL.Connection(self._context, None)


def start_simulator(config, reactor, *, rules=None, faults=(), base_path: str = contract.REGION_BASE_PATH,
                    registry: Registry | None = None) -> SimulatorHandle:
    """Listen on ``[simulator]`` host/port (TLS when tls_cert/tls_key are set).

    *rules*: :class:`bridge.cda.validate.Rules` for the XSD/schematron step; None
    loads ``validation.rules_dir`` (skipped when nothing is installed); False
    skips it.

    The CDA step shares the product's validator on purpose: what it runs are the
    official XSD and schematron files, not the client's rules; the one part that
    is the project's own, the schematron-to-XSLT translation, is checked outcome
    by outcome against an independent engine (../shared/tools/validate_cda.py):
    tests/validate/test_second_engine.py on samples, renders and mutations, and
    tests/oracles/collector.py on every CDA a test session validates, this
    simulator's verdicts included. A second translator here would only copy the
    first one's reading of the same files.
    """
    settings = config.simulator
    if rules is None:
        rules = validate.load_rules(config.validation.rules_dir)
    rules = rules or None
    registry = registry or Registry(settings.registry)
    sim = GatewaySimulator(reactor=reactor, registry=registry, audience=config.gateway.audience,
                           rules=rules, validate=validate.validate_cda if rules else None,
                           base_path=base_path, faults=faults)
    site = server.Site(sim)
    site.displayTracebacks = False
    site.noisy = False
    if settings.tls_cert and settings.tls_key:
        listening = reactor.listenSSL(settings.port, site, _ServerTls(settings), interface=settings.host)
        scheme = "https"
    else:
        listening = reactor.listenTCP(settings.port, site, interface=settings.host)
        scheme = "http"
    port = listening.getHost().port
    host = "localhost" if scheme == "https" and settings.host in ("127.0.0.1", "localhost") else settings.host
    return SimulatorHandle(url=f"{scheme}://{host}:{port}{sim.base_path}", port=port, registry=registry,
                           simulator=sim, listening=listening)
