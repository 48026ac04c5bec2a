"""The Region's stage accreditation run (gateway.md section 9, "Accreditation (RT §5-6)").

RT asks every structure to run the gateway's four methods in stage with an OK
outcome and to send the four X-Cart-ids to fseprivati@regione.toscana.it.
:func:`run_accreditation` does exactly that on one test document: create,
replace (version 2 of the same set), metadata update, delete, stopping at the
first step that is not OK (each depends on the one before).

The document is made the way the service makes documents: an HL7 v2 ORU^R01
built from the type's template (:mod:`bridge.accredit.message`) goes through
:func:`bridge.mapping.analysis.analyse`, :func:`bridge.publish.plan.decide`, the render,
validate and package sequence of :func:`bridge.publish.version.make_version` (the
pipeline's own) and the gateway client,
with the request bodies of :func:`bridge.publish.submission.build_submission`. The
patient is always one of RT §6's stage test fiscal codes, so the run can
never publish for a real citizen; a production gateway is refused unless
asked for explicitly.

Every step is journaled as its own entry (peer ``accredit``, finished before
its call leaves so a restarting service never processes it) with its gateway
calls, so ``fse-bridge journal show <X-Cart-id>`` finds each of them; the
documents registry follows the versions as for any message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from bridge import certs
from bridge.accredit.message import test_message
from bridge.accredit.report import report_markdown
from bridge.config import is_production_gateway
from bridge.errors import BridgeError, ConfigError
from bridge.gateway import bodies
from bridge.gateway.client import CallInfo, GatewayClient, GatewayResult, problem_name
from bridge.gateway.identifiers import new_submission_id, repository_id
from bridge.journal import ArtifactName, ArtifactStage, DocumentState, Received
from bridge.journal.sqlite import SqliteStore
from bridge.mapping.analysis import analyse
from bridge.model import AckCode, Action, DocumentType
from bridge.outcome import Outcome
from bridge.publish.context import gateway_url
from bridge.publish.metadata import FIELDS, apply_settings
from bridge.publish.plan import decide, pending_row
from bridge.publish.record import answer_fields, classify, gateway_record
from bridge.publish.recovery import settled_published
from bridge.publish.submission import build_submission, submission_record
from bridge.publish.version import make_version, validation_record
from bridge.service.stages import Stages

#: RT §6: the stage test fiscal codes. The run publishes for these only.
TEST_FISCAL_CODES = ("RMSLSO31M04Z404R", "MNTMRA03M71C615V", "MNZLSN99E05F205J",
                     "DRCGNN12A46A326K", "BRGLRZ80D58H501Q")
#: Types the built-in test message is written for (bridge/accredit/templates/message/<TYPE>.hl7.j2).
SUPPORTED_TYPES = ("LAB", "RAD", "RSA", "RAP", "LDO")
STEPS = ("create", "replace", "metadata", "delete")
PEER = "accredit"


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    fiscal_code: str | None = None
    """The test patient (default: RT §6's first)."""
    doc_type: str = "LAB"
    out_dir: Path | None = None
    """Default ``<state_dir>/accreditation/<UTC timestamp>``."""
    production: bool = False
    """Allow a production gateway (still only test fiscal codes)."""
    facility: str | None = None
    """MSH-4 of the test message (default: the facilities table's first row)."""
    metadata_settings: tuple[str, ...] = ()
    """``KEY=VALUE`` changes for step 3 (bridge.publish.metadata); none: same values, new submission id."""
    base_url: str | None = None
    """The gateway (default: bridge.publish.context.gateway_url of the configuration)."""


@dataclass(slots=True, kw_only=True)
class Step:
    number: int
    operation: str
    document_id: str | None = None
    path_id: str | None = None
    http_status: int | None = None
    outcome: str = "not run"
    """published | refused | not_now (gateway.md section 8), or local-error."""
    x_cart_id: str | None = None
    x_cart_ids: tuple[str, ...] = ()
    """Every attempt's (retries included); the report quotes the last."""
    trace_id: str | None = None
    span_id: str | None = None
    workflow_instance_id: str | None = None
    warning: str | None = None
    error: dict | str | None = None
    """The gateway's error body (RFC 7807) or what failed before the call."""
    attempts: int = 0
    journal_entry: int | None = None
    started_at: str = ""
    ended_at: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "published"

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["x_cart_ids"] = list(self.x_cart_ids)
        data["ok"] = self.ok
        return data


@dataclass(slots=True, kw_only=True)
class Accreditation:
    """What the run did: identity, gateway, the steps (ran ones only), where the report is."""

    out_dir: Path
    started_at: str
    structure: dict
    application: dict
    operator: dict
    gateway_url: str
    fiscal_code: str
    doc_type: str
    accession: str
    local_validation: bool
    paths: dict = field(default_factory=dict)
    """gateway.paths per operation (under the base URL)."""
    production: bool = False
    """The gateway is a production one (--production given)."""
    steps: list[Step] = field(default_factory=list)
    ended_at: str = ""

    @property
    def ok(self) -> bool:
        return len(self.steps) == len(STEPS) and all(s.ok for s in self.steps)

    @property
    def failed_step(self) -> Step | None:
        return next((s for s in self.steps if not s.ok), None)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "started_at": self.started_at, "ended_at": self.ended_at,
                "structure": self.structure, "application": self.application, "operator": self.operator,
                "gateway_url": self.gateway_url, "gateway_paths": self.paths, "production": self.production,
                "test_fiscal_code": self.fiscal_code,
                "document_type": self.doc_type, "accession": self.accession,
                "local_validation": "ON" if self.local_validation else "OFF (no rules installed)",
                "steps": [s.as_dict() for s in self.steps]}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- checks

def check_fiscal_code(fiscal_code: str | None) -> str:
    """The test CF to publish for; refuses anything outside RT §6's list."""
    cf = (fiscal_code or TEST_FISCAL_CODES[0]).strip().upper()
    if cf not in TEST_FISCAL_CODES:
        raise ConfigError(f"--fiscal-code must be one of the Region's stage test fiscal codes "
                          f"({', '.join(TEST_FISCAL_CODES)}): the accreditation run never publishes "
                          f"for a real citizen")
    return cf


def check_gateway(url: str, *, production: bool) -> None:
    """Refuse a production gateway (compared by host) unless *production* is given."""
    host = (urlparse(url).hostname or "").lower()
    if is_production_gateway(url) and not production:
        raise ConfigError(f"the gateway {host} is the production one: the accreditation run is for "
                          f"stage; pass --production to run it there anyway (test fiscal codes only)",
                          key="gateway.base_url")


def check_options(config, options: Options) -> tuple[str, DocumentType, str]:
    """(test CF, type, gateway URL) of a run, or ConfigError before anything is sent."""
    fiscal_code = check_fiscal_code(options.fiscal_code)
    doc_type = _doc_type(options.doc_type)
    for setting in options.metadata_settings:
        key = setting.partition("=")[0].strip()
        if "=" not in setting or key not in FIELDS:
            raise ConfigError(f"--set {setting!r}: expected KEY=VALUE with KEY one of {', '.join(FIELDS)}")
    url = options.base_url or gateway_url(config)
    check_gateway(url, production=options.production)
    return fiscal_code, doc_type, url


def _doc_type(name: str) -> DocumentType:
    name = name.upper()
    if name not in SUPPORTED_TYPES:
        raise ConfigError(f"--type must be one of {', '.join(SUPPORTED_TYPES)}")
    return DocumentType[name]


def _default_facility(mappings) -> str:
    rows = mappings.tables.get("facilities.csv") or ()
    for row in rows:
        if row.get("facility"):
            return row["facility"]
    raise ConfigError("the facilities table has no row: give --facility",
                      file=str(mappings.directory / "facilities.csv"))


# --------------------------------------------------------------------------- the run

class _Run:
    """One accreditation run's state: config, stages, journal, client, output folder."""

    def __init__(self, config, options: Options, store, client: GatewayClient, result: Accreditation,
                 stages, now: Callable[[], dt.datetime]):
        self.config = config
        self.options = options
        self.store = store
        self.client = client
        self.result = result
        self.stages = stages
        self.now = now
        self.calls: list[int] = []
        self.entry_id: int | None = None
        """The journal entry of the step under way."""
        self.submissions: dict[str, object] = {}
        """The last submission sent for each document id (what its metadata update and delete reuse)."""
        self.facility = options.facility or _default_facility(stages.mappings)

    # -- journal -----------------------------------------------------------

    def transaction(self, fn, *args, **kwargs):
        """*fn* in one committed journal transaction (the service may be writing the same journal)."""
        self.store.begin()
        try:
            value = fn(*args, **kwargs)
        except BaseException:
            self.store.rollback()
            raise
        self.store.commit()
        return value

    def open_entry(self, raw: bytes, control_id: str, step: Step) -> int:
        """A finished journal entry for the step (finished now: a restart must not process it)."""
        def work():
            admission = self.store.admit(Received(raw=raw, peer=PEER, msh4=self.facility, msh10=control_id,
                                                  message_type="ORU^R01", charset="utf-8"))
            entry_id = admission.entry.id
            self.store.finish(entry_id, Outcome(code=AckCode.AR, operation=step.operation,
                                                text=f"accreditation step {step.number}: {step.operation} "
                                                     f"sent, no answer recorded"))
            return entry_id
        return self.transaction(work)

    def on_send(self, info: CallInfo) -> None:
        self.calls.append(self.transaction(self.store.gateway_call_sent, self.entry_id, info.operation,
                                      info.document_id))

    def record_answer(self, step: Step, result: GatewayResult) -> None:
        """The step's answers, as the pipeline records a message's (bridge.publish.record)."""
        def work():
            for call_id, attempt in zip(self.calls, result.attempts):
                self.store.gateway_call_answered(call_id, **answer_fields(attempt))
            self.store.add_artifact(self.entry_id, ArtifactStage.SUBMIT, ArtifactName.GATEWAY,
                                    gateway_record(result, step.operation, step.document_id).to_json())
            self.store.finish(self.entry_id, classify(result, document_id=step.document_id,
                                                      operation=step.operation))
        self.transaction(work)

    # -- files -------------------------------------------------------------

    def save(self, name: str, content: bytes | str | dict) -> None:
        if isinstance(content, dict):
            content = _json(content, indent=2)
        if isinstance(content, str):
            content = content.encode("utf-8")
        (self.result.out_dir / name).write_bytes(content)

    # -- steps -------------------------------------------------------------

    def message(self, number: int, status: str, *, corrected: bool = False) -> tuple[bytes, str]:
        control_id = f"{self.result.accession}-{number}"
        raw = test_message(doc_type=self.result.doc_type, facility=self.facility,
                           patient=self.result.fiscal_code, accession=self.result.accession,
                           control_id=control_id, status=status, when=self.now(),
                           corrected_value=corrected)
        return raw, control_id

    def run_stage(self, fn, *args):
        """A stage of bridge.service.stages in a thread (the run's event loop goes on meanwhile)."""
        return asyncio.to_thread(fn, self.stages, *args)

    def key(self) -> tuple[str, str, str]:
        return (self.config.structure.fiscal_code, self.result.doc_type, self.result.accession)

    def plan(self, action: Action):
        structure = self.config.structure
        return decide(action, self.store.documents_for(*self.key()), structure_cf=structure.fiscal_code,
                      doc_type=self.result.doc_type, repository=structure.repository,
                      accession=self.result.accession, repository_index=structure.repository_index)

    async def publish(self, step: Step, version: int) -> bool:
        """Steps 1 and 2: message → analysis → plan → render → validate → package → call."""
        raw, control_id = self.message(step.number, "F" if version == 1 else "C", corrected=version > 1)
        analysis = analyse(self.stages, raw)
        routed = analysis.routed()
        if routed.action is not Action.PUBLISH:
            raise BridgeError(f"the test message routed to {routed.action.value}, not publish "
                              f"({routed.reason}): check the routing rules")
        report = analysis.mapped_report()
        plan = self.plan(Action.PUBLISH)
        expected = Action.CREATE if version == 1 else Action.REPLACE
        if plan.action is not expected:
            raise BridgeError(f"the registry plans {plan.action.value} for version {version}, not "
                              f"{expected.value}")
        step.document_id = plan.ids.document_id
        made = await make_version(self.run_stage, _SavedSteps(self, version), report, plan.ids, routed.doc_type,
                                  validate=self.result.local_validation)
        cda, pdf = made.cda, made.pdf

        self.entry_id = self.open_entry(raw, control_id, step)
        step.journal_entry = self.entry_id
        structure, doc_type, accession = self.key()
        document = pending_row(plan, structure=structure, doc_type=doc_type, accession=accession,
                               content_hash=made.digest, message_id=self.entry_id)
        sub = build_submission(report, plan.ids.document_id, self.config, new_submission_id())

        def journal_version():
            self.store.put_document(document)
            self.store.add_artifact(self.entry_id, ArtifactStage.RENDER, ArtifactName.CDA, cda)
            self.store.add_artifact(self.entry_id, ArtifactStage.PACKAGE, ArtifactName.PDF, pdf)
            self.store.add_artifact(self.entry_id, ArtifactStage.SUBMIT, ArtifactName.SUBMISSION,
                                    _json(submission_record(sub)))
        self.transaction(journal_version)
        self.submissions[plan.ids.document_id] = sub
        if version == 1:
            body = bodies.create_body(sub)
            step.path_id = None
            call = self.client.create(sub, pdf)
        else:
            body = bodies.replace_body(sub)
            step.path_id = plan.target.document_id
            call = self.client.replace(plan.target.document_id, sub, pdf)
        self.save_request(step, body, pdf=pdf)
        result = await call
        self.take(step, result)
        if result.published:
            def settle():
                for row in settled_published(document, self.store.documents_for(*self.key())):
                    self.store.put_document(row)
            self.transaction(settle)
        return result.published

    async def metadata(self, step: Step) -> bool:
        plan = self.plan(Action.METADATA)
        if plan.action is not Action.METADATA:
            raise BridgeError(f"nothing to update: {plan.reason}")
        target = plan.target
        step.document_id = step.path_id = target.document_id
        sub = apply_settings(self.submissions[target.document_id], list(self.options.metadata_settings),
                             submission_id=new_submission_id())
        raw, control_id = self.message(step.number, "C", corrected=True)
        self.entry_id = self.open_entry(raw, control_id, step)
        step.journal_entry = self.entry_id
        self.transaction(self.store.add_artifact, self.entry_id, ArtifactStage.SUBMIT, ArtifactName.SUBMISSION,
                    _json(submission_record(sub)))
        self.save_request(step, bodies.metadata_body(sub))
        result = await self.client.metadata(sub)
        self.take(step, result)
        if result.published:
            self.submissions[target.document_id] = sub
        return result.published

    async def delete(self, step: Step) -> bool:
        raw, control_id = self.message(step.number, "X")
        routed = analyse(self.stages, raw).routed()
        if routed.action is not Action.DELETE:
            raise BridgeError(f"the cancellation routed to {routed.action.value}, not delete: check the "
                              f"routing rules' [action] delete")
        plan = self.plan(Action.DELETE)
        if plan.action is not Action.DELETE:
            raise BridgeError(f"nothing to delete: {plan.reason}")
        target = plan.target
        step.document_id = step.path_id = target.document_id
        sub = self.submissions[target.document_id]
        self.entry_id = self.open_entry(raw, control_id, step)
        step.journal_entry = self.entry_id
        self.transaction(self.store.add_artifact, self.entry_id, ArtifactStage.SUBMIT, ArtifactName.SUBMISSION,
                    _json(submission_record(sub)))
        self.save_request(step, None)
        result = await self.client.delete(sub)
        self.take(step, result)
        if result.published:
            self.transaction(self.store.put_document,
                        dataclasses.replace(target, state=DocumentState.DELETED, message_id=self.entry_id))
        return result.published

    def save_request(self, step: Step, body: dict | None, *, pdf: bytes | None = None) -> None:
        """What the call sends, without the tokens: operation, URL, path id, body, file hash."""
        method = {"create": "POST", "replace": "PUT", "metadata": "PUT", "delete": "DELETE"}[step.operation]
        template = getattr(self.client.paths, step.operation)
        record = {"operation": step.operation, "method": method,
                  "url": self.client.url_for(template, step.path_id), "path_id": step.path_id,
                  "document_id": step.document_id, "requestBody": body}
        if pdf is not None:
            record["file"] = {"name": "x.pdf", "bytes": len(pdf), "sha256": hashlib.sha256(pdf).hexdigest()}
        self.save(f"request-{step.number}-{step.operation}.json", record)
        self.calls = []

    def take(self, step: Step, result: GatewayResult) -> None:
        step.http_status = result.status
        step.outcome = result.outcome_class.value
        step.x_cart_id = result.x_cart_id
        step.x_cart_ids = result.x_cart_ids
        step.trace_id, step.span_id = result.trace_id, result.span_id
        step.workflow_instance_id = result.workflow_instance_id
        step.warning = result.warning
        step.attempts = len(result.attempts)
        if not result.published:
            step.error = result.problem or result.error
        self.record_answer(step, result)


async def run_accreditation(config, options: Options = Options(), *, sleep=asyncio.sleep,
                            now: Callable[[], dt.datetime] = _utc_now) -> Accreditation:
    """Run the four steps against the configured (or *options.base_url*) gateway; write the
    report (report.json, report.md, artifacts) and return what happened.

    Raises ConfigError before anything is sent: a CF outside RT §6's list, a production gateway
    without *options.production*, an unsupported type. Steps stop at the first not OK.
    """
    fiscal_code, doc_type, url = check_options(config, options)

    started = now()
    out_dir = Path(options.out_dir) if options.out_dir else \
        config.state_dir / "accreditation" / started.strftime("%Y%m%dT%H%M%SZ")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the report folder: {exc.strerror}", file=str(out_dir)) from None
    stages = Stages(config)
    _, sign = certs.load_credentials(config)
    structure = config.structure
    result = Accreditation(
        out_dir=out_dir, started_at=_iso(started),
        structure={"fiscal_code": structure.fiscal_code, "name": structure.name,
                   "repository": structure.repository,
                   "repository_id": repository_id(structure.fiscal_code, structure.repository,
                                                  structure.repository_index),
                   "locality": structure.locality},
        application={"id": config.application.id, "vendor": config.application.vendor,
                     "version": config.application.version},
        operator={"fiscal_code": config.operator.fiscal_code, "role": config.operator.role,
                  "certificate_cn": sign.cn},
        gateway_url=url, fiscal_code=fiscal_code, doc_type=doc_type.name,
        accession=f"ACCR-{started.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2).upper()}",
        local_validation=stages.rules is not None, paths=dataclasses.asdict(config.gateway.paths),
        production=is_production_gateway(url))

    store = SqliteStore(config.journal.path)
    client = GatewayClient.from_config(config, sleep=sleep, base_url=url, sign_credential=sign)
    try:
        run = _Run(config, options, store, client, result, stages, now)
        client.on_send = run.on_send
        actions = (lambda s: run.publish(s, 1), lambda s: run.publish(s, 2), run.metadata, run.delete)
        for number, (operation, action) in enumerate(zip(STEPS, actions), start=1):
            step = Step(number=number, operation=operation, started_at=_iso(now()))
            result.steps.append(step)
            try:
                ok = await action(step)
            except ConfigError:
                raise
            except BridgeError as exc:
                step.outcome, step.error, ok = "local-error", str(exc), False
                if run.entry_id is not None and step.journal_entry == run.entry_id:
                    run.transaction(store.finish, run.entry_id, classify(exc, operation=operation))
            step.ended_at = _iso(now())
            if not ok:
                break
    finally:
        await client.aclose()
        store.close()
        result.ended_at = _iso(now())
        write_report(result)
    return result


@dataclass
class _SavedSteps:
    """A version's stages as the report folder keeps them (bridge.publish.version.Steps): the
    journal gets the version once its entry is opened, just before the call."""

    run: _Run
    version: int

    async def rendered(self, cda: bytes, digest: str) -> None:
        self.run.save(f"cda-v{self.version}.xml", cda)

    async def validated(self, validation) -> None:
        if validation is not None:
            self.run.save(f"validation-v{self.version}.json", validation_record(validation))

    async def packaging(self, digest: str) -> None:
        pass

    async def packaged(self, pdf: bytes) -> None:
        self.run.save(f"document-v{self.version}.pdf", pdf)


# --------------------------------------------------------------------------- the report

def write_report(result: Accreditation) -> None:
    """report.json for programs, report.md for people (bridge.accredit.report)."""
    (result.out_dir / "report.json").write_bytes(_json(result.as_dict(), indent=2))
    (result.out_dir / "report.md").write_text(report_markdown(result), encoding="utf-8")


def summary_lines(result: Accreditation) -> list[str]:
    """One line per step (the command's output)."""
    lines = []
    for step in result.steps:
        status = step.http_status if step.http_status is not None else "-"
        lines.append(f"step {step.number} {step.operation:<8} {'OK ' if step.ok else 'NOT OK'} "
                     f"HTTP {status}  X-Cart-id {step.x_cart_id or '-'}")
    return lines


def problem_text(problem: dict) -> str:
    """The gateway's error in one line: type and title, then its detail."""
    detail = problem.get("detail")
    return problem_name(problem) + (f": {detail}" if detail else "")


def _json(value, indent=None) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=indent is None, indent=indent, default=str).encode()
