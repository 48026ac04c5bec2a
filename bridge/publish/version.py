"""One version of a report: render, validate, package (architecture.md, "The way a message
travels", steps 4 to 6), the rule written once.

The pipeline (bridge.publish.pipeline) and the accreditation run (bridge.accredit.run) both
call :func:`make_version`. *run_stage(fn, *args)* runs a stage of bridge.service.stages
(in a worker process or a thread) and is awaited; *steps* keeps each result as it comes
(the pipeline journals it, accredit writes it to its report folder), so a failure later
still leaves what came before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from bridge.cda.validate import ValidationReport
from bridge.errors import ValidationFailed
from bridge.model import DocumentType, Report
from bridge.outcome import Outcome
from bridge.publish.plan import content_hash
from bridge.service import stages

#: At most this many validation findings become ERR segments (the journal keeps them all).
MAX_ERR_SEGMENTS = 10

RunStage = Callable[..., Awaitable[Any]]


class Steps(Protocol):
    """What a caller does with each stage's result as it comes."""

    async def rendered(self, cda: bytes, digest: str) -> Outcome | None:
        """The CDA is made; an Outcome stops here with it (nothing to publish)."""

    async def validated(self, validation: ValidationReport | None) -> None:
        """The validation's report (None: local validation OFF, no rules installed)."""

    async def packaging(self, digest: str) -> None:
        """The CDA is valid and about to be packaged."""

    async def packaged(self, pdf: bytes) -> None:
        """The signed PDF/A is made."""


@dataclass(frozen=True, slots=True)
class Version:
    cda: bytes
    digest: str
    """bridge.publish.plan.content_hash of the CDA (what a replace compares)."""
    pdf: bytes


def findings(validation: ValidationReport) -> list[dict]:
    """Every finding (errors, then warnings) as journaled and saved."""
    return [{"rule": i.rule_id, "message": i.message, "location": i.location, "severity": i.severity}
            for i in (*validation.xsd_errors, *validation.schematron_errors, *validation.warnings)]


def validation_record(validation: ValidationReport) -> dict:
    """The validation artifact: the summary and every finding."""
    return {"summary": validation.summary(), "findings": findings(validation)}


def validation_failed(validation: ValidationReport) -> ValidationFailed:
    """The error of a CDA that failed: one finding per ERR (up to the limit), rule id first."""
    errors = validation.errors
    return ValidationFailed(
        f"local validation failed: {errors[0].rule_id or 'XSD'}", summary=validation.summary(),
        findings=tuple(f"{i.rule_id}: {i.message}" if i.rule_id else i.message for i in errors[:MAX_ERR_SEGMENTS]))


async def make_version(run_stage: RunStage, steps: Steps, report: Report, ids, doc_type: DocumentType, *,
                       validate: bool) -> Version | Outcome:
    """Render *report* under *ids*, validate it (when *validate*: rules are installed) and package it.

    The Outcome *steps.rendered* stops with, else the :class:`Version`. Raises
    :class:`ValidationFailed` when the CDA fails validation: it is not packaged.
    """
    cda: bytes = await run_stage(stages.render, report, ids)
    digest = content_hash(cda)
    stop = await steps.rendered(cda, digest)
    if stop is not None:
        return stop
    validation = await run_stage(stages.validate, cda, doc_type) if validate else None
    await steps.validated(validation)
    if validation is not None and not validation.ok:
        raise validation_failed(validation)
    await steps.packaging(digest)
    pdf: bytes = await run_stage(stages.package, cda)
    await steps.packaged(pdf)
    return Version(cda=cda, digest=digest, pdf=pdf)
