"""The CART v2 gateway client (gateway.md sections 1, 2, 8).

One :class:`GatewayClient` per installation, on an ``httpx.AsyncClient``
(awaited from Twisted's asyncio reactor). Each operation is one *call* made
of bounded *attempts*; every attempt gets new JWTs, is announced to the
``on_send`` hook just before it leaves (so the journal can mark it sent) and
has its answer recorded (X-Cart-id, status, traceID, spanID,
workflowInstanceId, warning, RFC 7807 body). The call ends in a
:class:`GatewayResult` whose ``outcome_class`` is one of section 8's three.

Waiting between attempts goes through the injected ``sleep`` coroutine
function (the service waits on the reactor's clock; tests pass a fake).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import email.utils
import inspect
import json
import logging
import secrets
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives import serialization
from twisted.internet import task

from bridge import certs
from bridge.config import GatewayPaths
from bridge.errors import BridgeError, ConfigError, GatewayRejected, GatewayUnavailable
from bridge.gateway import bodies, tokens
from bridge.gateway.bodies import Submission

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
CLOCK_PROBLEMS = ("/TokenInTheFuture.html", "/TokenExpired.html")
#: What the operator is told when the gateway refuses our credentials or clock.
CREDENTIALS_ALERT = "the gateway refused our credentials or clock; check the certificates and NTP"


class OutcomeClass(enum.Enum):
    """Section 8's outcome classes for the ACK."""

    PUBLISHED = "published"
    REFUSED = "refused"
    """Content refused: AE, resending it unchanged fails again."""
    NOT_NOW = "not_now"
    """AR: the gateway could not take it now (or our credentials/clock are wrong)."""


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the ``on_send`` hook learns just before an attempt leaves."""

    operation: str
    method: str
    url: str
    document_id: str
    """identificativoDoc of the body (create, replace) or the path id (metadata, delete)."""
    path_id: str | None
    attempt: int
    jti: tuple[str, str]
    submission_id: str | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP exchange (or its failure)."""

    number: int
    jti: tuple[str, str]
    status: int | None = None
    x_cart_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    workflow_instance_id: str | None = None
    warning: str | None = None
    problem: dict | None = None
    error: str | None = None
    """Network failure (class name and text; never patient data)."""
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """The whole call: the last answer's fields, every attempt, the outcome class."""

    operation: str
    document_id: str
    path_id: str | None
    outcome_class: OutcomeClass
    attempts: tuple[Attempt, ...]
    operator_alert: bool = False
    reconciled: bool = False
    """True when a 409 (create) or 404 (replace/delete) on a resend proved an earlier attempt landed."""
    alert: str = ""
    """Why an operator must look (with ``operator_alert``): no patient data."""

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]

    @property
    def status(self) -> int | None:
        return self.last.status

    @property
    def x_cart_id(self) -> str | None:
        return self.last.x_cart_id

    @property
    def x_cart_ids(self) -> tuple[str, ...]:
        return tuple(a.x_cart_id for a in self.attempts if a.x_cart_id)

    @property
    def trace_id(self) -> str | None:
        return self.last.trace_id

    @property
    def span_id(self) -> str | None:
        return self.last.span_id

    @property
    def workflow_instance_id(self) -> str | None:
        return self.last.workflow_instance_id

    @property
    def warning(self) -> str | None:
        return self.last.warning

    @property
    def problem(self) -> dict | None:
        return self.last.problem

    @property
    def error(self) -> str | None:
        return self.last.error

    @property
    def published(self) -> bool:
        return self.outcome_class is OutcomeClass.PUBLISHED

    def summary(self) -> str:
        """One line for logs and ACK texts: status, problem type/title, X-Cart-id (no detail: it may name the patient)."""
        last = self.last
        if last.status is None:
            what = f"no answer ({last.error})"
        else:
            what = f"HTTP {last.status}"
            if last.problem:
                what += f" {problem_name(last.problem)}"
        cart = f" X-Cart-id {last.x_cart_id}" if last.x_cart_id else ""
        return f"gateway {self.operation}: {what}{cart}"

    def to_error(self) -> BridgeError | None:
        """The error for the ACK (None when published)."""
        if self.outcome_class is OutcomeClass.PUBLISHED:
            return None
        if self.outcome_class is OutcomeClass.REFUSED:
            return GatewayRejected(self.summary())
        return GatewayUnavailable(self.summary(), operator_alert=self.operator_alert)


def proves_landed(operation: str, status: int | None, problem: dict | None, *, document_id: str,
                  path_id: str | None) -> bool:
    """Section 8, uncertain outcomes: does this answer to a resend prove an earlier attempt landed?

    Only a create's 409 whose problem names this identificativoDoc as already registered,
    or a replace's or delete's 404 record-not-found about the path id. Any other 409 or
    404 (a held submission set id, another patient, a front end's route) proves nothing.
    """
    detail = str((problem or {}).get("detail") or "")
    kind = str((problem or {}).get("type") or "")
    if operation == "create" and status == 409:
        return bool(document_id) and document_id in detail
    if operation in ("replace", "delete") and status == 404 and path_id:
        # The dispatcher's own answer about the record; if its detail names an id, it is this one.
        return kind.endswith("/msg/record-not-found") and ("^" not in detail or path_id in detail)
    return False


def problem_name(problem: dict) -> str:
    """``/msg/jwt-validation`` or the GovWay name (``TokenExpired``), plus the title."""
    kind = str(problem.get("type") or "")
    if "/msg/" in kind:
        kind = kind[kind.index("/msg/"):]
    elif kind.endswith(".html"):
        kind = kind.rsplit("/", 1)[-1][:-5]
    title = problem.get("title")
    return f"{kind} ({title})" if title and title != kind else kind


def classify(status: int, problem: dict | None) -> tuple[OutcomeClass, bool]:
    """Section 8: (outcome class, operator alert) of a final HTTP answer."""
    kind = str((problem or {}).get("type") or "")
    if 200 <= status < 300:
        return OutcomeClass.PUBLISHED, False
    if status == 401:
        return OutcomeClass.NOT_NOW, True
    # The token problems are our own configuration's, whatever status the operation gives
    # them (missing-token is 400 on replace and delete): AR with an alert, as their 403 form.
    if kind.endswith(("/msg/missing-token", "/msg/mandatory-element-token")):
        return OutcomeClass.NOT_NOW, True
    if status == 403:
        if kind.endswith("/msg/jwt-validation"):
            return OutcomeClass.REFUSED, False
        return OutcomeClass.NOT_NOW, True
    if status in (400, 409, 413, 415, 422):
        return OutcomeClass.REFUSED, False
    return OutcomeClass.NOT_NOW, False


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, when.timestamp() - now)


def build_ssl_context(*, auth_cert, auth_key=None, passphrase: bytes | None = None,
                      ca_file=None) -> ssl.SSLContext:
    """Mutual TLS: the authentication certificate as client certificate, server checked against *ca_file*.

    PEM keys may be encrypted (*passphrase*); PKCS#12 files (.p12/.pfx) are supported too.
    """
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if Path(auth_cert).suffix.lower() in (".p12", ".pfx"):
        _load_pkcs12(context, Path(auth_cert), passphrase)
        return context
    try:
        context.load_cert_chain(str(auth_cert), str(auth_key) if auth_key else None,
                                password=passphrase)
    except ssl.SSLError:
        raise ConfigError("cannot use the authentication certificate/key for TLS "
                          "(wrong or missing passphrase, key not matching, or not PEM)",
                          file=str(auth_cert), key="certificates.auth_cert") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the authentication certificate: {exc.strerror}",
                          file=str(auth_cert), key="certificates.auth_cert") from None
    return context


def _load_pkcs12(context: ssl.SSLContext, path: Path, passphrase: bytes | None) -> None:
    """ssl reads only PEM files: write the chain and the key, encrypted with a one-time
    password, to a private temporary folder, load them, delete them."""
    credential = certs.load_credential(path, None, passphrase)
    one_time = secrets.token_bytes(32).hex().encode()
    key_pem = credential.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_time))
    with tempfile.TemporaryDirectory(prefix="fse-bridge-tls-") as folder:
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_bytes(credential.chain_pem)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(str(cert_file), str(key_file), password=one_time)


def ssl_context_from_config(config) -> ssl.SSLContext:
    certs = config.certificates
    return build_ssl_context(auth_cert=certs.auth_cert, auth_key=certs.auth_key,
                             passphrase=config.passphrase("auth"), ca_file=certs.gateway_ca)


class GatewayClient:
    """The four CART operations with section 8's retry and reconciliation rules."""

    def __init__(self, *, base_url: str, identity: tokens.TokenIdentity, sleep: Sleep,
                 paths=None, timeout_s: float = 60.0, max_attempts: int = 4, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, verify: ssl.SSLContext | bool = True,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time,
                 on_send: Callable[[CallInfo], object] | None = None):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.identity = identity
        self.paths = paths or GatewayPaths()
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.on_send = on_send
        self._sleep = sleep
        self._waits: set[asyncio.Future] = set()
        self._stopping = False
        # Enough kept-alive connections for every sender's call at once: a new mutual-TLS
        # handshake per call past httpx's default 20 would cost more than the call.
        self._http = httpx.AsyncClient(verify=verify, transport=transport,
                                       timeout=httpx.Timeout(timeout_s),
                                       limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
                                       headers={"Accept": "application/json"})

    @classmethod
    def from_config(cls, config, *, sleep: Sleep, base_url: str | None = None,
                    sign_credential=None, **kwargs) -> "GatewayClient":
        """Build from ``[gateway]`` and ``[certificates]``; *base_url* overrides (the embedded simulator's)."""
        if sign_credential is None:
            _, sign_credential = certs.load_credentials(config)
        url = base_url or config.gateway.base_url
        if url == "embedded":
            raise ConfigError("the embedded gateway's URL must be given once the simulator listens",
                              key="gateway.base_url")
        gw = config.gateway
        verify = ssl_context_from_config(config) if url.startswith("https:") else True
        return cls(base_url=url, identity=tokens.TokenIdentity.from_config(config, sign_credential),
                   sleep=sleep, paths=gw.paths, timeout_s=gw.timeout_s, max_attempts=gw.max_attempts,
                   backoff_s=gw.backoff_s, max_backoff_s=gw.max_backoff_s, verify=verify, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    def stop_waiting(self) -> None:
        """On stop: a call waiting to retry is cancelled (asyncio.CancelledError), now and from
        now on, so its message is left for recovery instead of holding up the stop."""
        self._stopping = True
        for wait in list(self._waits):
            wait.cancel()

    async def __aenter__(self) -> "GatewayClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ operations

    async def create(self, sub: Submission, pdf: bytes, *, resend: bool = False) -> GatewayResult:
        """validate-and-create: POST multipart. *resend*: an earlier call may have landed (409 = published)."""
        body = bodies.create_body(sub)
        return await self._call("create", "POST", self.paths.create, None, sub, body=body, pdf=pdf,
                                resend=resend)

    async def replace(self, old_id: str, sub: Submission, pdf: bytes, *,
                      resend: bool = False) -> GatewayResult:
        """PUT multipart on the old id; the body carries the new identificativoDoc."""
        body = bodies.replace_body(sub)
        return await self._call("replace", "PUT", self.paths.replace, old_id, sub, body=body, pdf=pdf,
                                resend=resend)

    async def metadata(self, sub: Submission, *, resend: bool = False) -> GatewayResult:
        """PUT JSON metadata of ``sub.document_id``."""
        body = bodies.metadata_body(sub)
        purpose = "ACCESS UPDATE" if sub.obscuring else None
        return await self._call("metadata", "PUT", self.paths.metadata, sub.document_id, sub, body=body,
                                resend=resend, purpose=purpose)

    async def delete(self, sub: Submission, *, resend: bool = False) -> GatewayResult:
        """DELETE ``sub.document_id`` (only document_id, patient and type are used)."""
        return await self._call("delete", "DELETE", self.paths.delete, sub.document_id, sub,
                                resend=resend)

    # ------------------------------------------------------------------ machinery

    def url_for(self, path_template: str, path_id: str | None) -> str:
        """The id percent-encoded exactly once (``^`` -> ``%5E``)."""
        path = path_template
        if path_id is not None:
            path = path.replace("{id}", quote(path_id, safe=""))
        return self.base_url + path.lstrip("/")

    def _delay(self, retry: int, retry_after: float | None) -> float:
        """The back-off, or the gateway's Retry-After when longer, never over the maximum
        back-off: a gateway cannot park a message (and the ACKs behind it) for an hour."""
        delay = min(self.backoff_s * (2 ** (retry - 1)), self.max_backoff_s)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff_s))
        return delay

    async def _wait(self, seconds: float) -> None:
        if self._stopping:
            raise asyncio.CancelledError("the client is stopping")
        wait = asyncio.ensure_future(self._sleep(seconds))
        self._waits.add(wait)
        try:
            await wait
        finally:
            self._waits.discard(wait)

    async def _call(self, operation: str, method: str, template: str, path_id: str | None,
                    sub: Submission, *, body: dict | None = None, pdf: bytes | None = None,
                    resend: bool, purpose: str | None = None) -> GatewayResult:
        url = self.url_for(template, path_id)
        token_request = tokens.TokenRequest(
            operation=operation, person_id=sub.person_id,
            resource_hl7_type=sub.document_type.resource_hl7_type, attachment=pdf,
            purpose_of_use=purpose)
        document_id = sub.document_id
        attempts: list[Attempt] = []
        uncertain = resend
        clock_retry_used = False
        retries = 0
        while True:
            number = len(attempts) + 1
            toks = tokens.build_tokens(self.identity, token_request, now=self.clock())
            headers = {"Authorization": f"Bearer {toks.authorization}",
                       "FSE-JWT-Signature": toks.signature}
            kwargs: dict = {}
            if pdf is not None:
                kwargs["data"] = {"requestBody": json.dumps(body, ensure_ascii=False)}
                kwargs["files"] = {"file": ("x.pdf", pdf, "application/pdf")}
            elif body is not None:
                kwargs["content"] = json.dumps(body, ensure_ascii=False).encode("utf-8")
                headers["Content-Type"] = "application/json"
            if self.on_send is not None:
                hook = self.on_send(CallInfo(operation, method, url, document_id, path_id, number,
                                             toks.jti, sub.submission_id))
                if inspect.isawaitable(hook):
                    await hook
            attempt, response_kind = await self._send(method, url, headers, kwargs, number, toks.jti)
            attempts.append(attempt)
            log.info("gateway %s %s attempt %d: %s X-Cart-id %s", operation, document_id, number,
                     attempt.status if attempt.status is not None else attempt.error, attempt.x_cart_id)

            status = attempt.status
            problem_type = str((attempt.problem or {}).get("type") or "")
            # Reconciliation (section 8): only an answer that proves an earlier attempt landed.
            if uncertain and (status == 409 and operation == "create"
                              or status == 404 and operation in ("replace", "delete")):
                if proves_landed(operation, status, attempt.problem, document_id=document_id,
                                 path_id=path_id):
                    return self._result(operation, document_id, path_id, attempts,
                                        OutcomeClass.PUBLISHED, reconciled=True)
                return self._result(operation, document_id, path_id, attempts, OutcomeClass.REFUSED,
                                    alert=f"an earlier {operation} of this document may have landed, and "
                                          f"HTTP {status} does not say it did: check the gateway before "
                                          f"sending it again")

            retryable = False
            if status is None:
                retryable = True
                # A request that may have left makes the outcome uncertain.
                uncertain = uncertain or response_kind == "after-send"
            elif status in RETRYABLE_STATUS:
                retryable = True
                uncertain = uncertain or status != 429
            elif status == 404 and operation != "create":
                retryable = True  # INI indexing lag right after a create
            elif status == 401 and problem_type.endswith(CLOCK_PROBLEMS):
                retryable = not clock_retry_used
                clock_retry_used = True

            if status is not None and 200 <= status < 300:
                return self._result(operation, document_id, path_id, attempts, OutcomeClass.PUBLISHED)
            if not retryable or number >= self.max_attempts:
                if status is None:
                    outcome, alert = OutcomeClass.NOT_NOW, attempt.error.startswith("TLS")
                else:
                    outcome, alert = classify(status, attempt.problem)
                return self._result(operation, document_id, path_id, attempts, outcome,
                                    alert=CREDENTIALS_ALERT if alert else "")
            retries += 1
            await self._wait(self._delay(retries, attempt.retry_after))

    def _result(self, operation, document_id, path_id, attempts, outcome, *, alert: str = "",
                reconciled=False) -> GatewayResult:
        return GatewayResult(operation=operation, document_id=document_id, path_id=path_id,
                             outcome_class=outcome, attempts=tuple(attempts), operator_alert=bool(alert),
                             reconciled=reconciled, alert=alert)

    async def _send(self, method, url, headers, kwargs, number, jti) -> tuple[Attempt, str]:
        try:
            response = await self._http.request(method, url, headers=headers, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            kind = "TLS" if _is_tls_failure(exc) else type(exc).__name__
            return Attempt(number=number, jti=jti, error=f"{kind}: {exc}"[:300]), "before-send"
        except httpx.TransportError as exc:
            kind = "TLS" if _is_tls_failure(exc) else type(exc).__name__
            return Attempt(number=number, jti=jti, error=f"{kind}: {exc}"[:300]), "after-send"
        except ssl.SSLError as exc:  # a TLS alert surfacing outside httpx's own mapping
            kind = "TLS" if _is_tls_failure(exc) else type(exc).__name__
            return Attempt(number=number, jti=jti, error=f"{kind}: {exc}"[:300]), "after-send"
        return _record(response, number, jti, self.clock()), "answered"


def _is_tls_failure(exc: BaseException) -> bool:
    """A certificate or handshake problem (our credential or trust store), not a dropped connection."""
    texts, seen = [], exc
    while seen is not None and len(texts) < 10:
        texts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    text = " ".join(texts).upper()
    return any(word in text for word in ("CERTIFICATE", "ALERT", "HANDSHAKE", "WRONG_VERSION"))


def _record(response: httpx.Response, number: int, jti, now: float) -> Attempt:
    """Every answer's fields, success or failure (section 8)."""
    payload: dict = {}
    try:
        parsed = response.json()
        if isinstance(parsed, dict):
            payload = parsed
    except (ValueError, UnicodeDecodeError):
        pass
    problem = None
    if response.status_code >= 400:
        problem = payload or {"status": response.status_code, "body": response.text[:2000]}
    return Attempt(
        number=number, jti=jti, status=response.status_code,
        x_cart_id=response.headers.get("X-Cart-id"),
        trace_id=_str(payload.get("traceID")), span_id=_str(payload.get("spanID")),
        workflow_instance_id=_str(payload.get("workflowInstanceId")),
        warning=_str(payload.get("warning")), problem=problem,
        retry_after=parse_retry_after(response.headers.get("Retry-After"), now))


def _str(value) -> str | None:
    return value if isinstance(value, str) else None


def reactor_sleep(reactor) -> Sleep:
    """A ``sleep`` that waits on the reactor's clock (for the service)."""
    async def sleep(seconds: float) -> None:
        await task.deferLater(reactor, seconds, lambda: None).asFuture(_loop_of(reactor))

    return sleep


def _loop_of(reactor):
    return getattr(reactor, "_asyncioEventloop", None) or asyncio.get_event_loop()
