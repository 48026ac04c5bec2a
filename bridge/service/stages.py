"""The loaded stages (:class:`Stages`), and the CPU-heavy calls a worker process answers
(bridge.service.workers).

:class:`Stages` is the one wiring object for what the stages read: routing rules, mappings,
the CDA templates, the validation rules and the signer. The service loads it at start
(:meth:`Stages.load`, bridge.publish.context) and the pipeline's
:class:`~bridge.publish.pipeline.Publisher` holds it; a worker process has its own, loaded on
first use from the configuration the service sends it; ``fse-bridge render`` and the
accreditation run make their own.

Each call is ``fn(stages, *args)``: run in a worker process, or in a thread with the
service's own :class:`Stages` when there are no worker processes.
"""

from __future__ import annotations

import functools
import logging

import jinja2

from bridge import certs
from bridge.cda.render import make_environment, render_cda
from bridge.cda.validate import Rules, RulesError, ValidationReport, load_rules, no_rules_message, validate_cda
from bridge.config import Config
from bridge.gateway.identifiers import DocumentIds
from bridge.mapping.tables import Mappings, load_mappings
from bridge.mapping.route import RoutingRules, load_routing
from bridge.model import DocumentType, Report
from bridge.pdf.package import package_pdf
from bridge.pdf.sign import PdfSigner

log = logging.getLogger(__name__)


class Stages:
    """Routing rules, mappings, templates, validation rules and the signer, loaded on first use."""

    def __init__(self, config: Config):
        self.config = config

    @functools.cached_property
    def routing(self) -> RoutingRules:
        return load_routing(self.config.mapping.dir)

    @functools.cached_property
    def mappings(self) -> Mappings:
        return load_mappings(self.config.mapping.dir, self.config.mapping.practitioners)

    @functools.cached_property
    def env(self) -> jinja2.Environment:
        """The Jinja2 environment of the CDA templates."""
        return make_environment(self.config.mapping.templates)

    @functools.cached_property
    def rules(self) -> Rules | None:
        """The XSD and schematrons, compiled; None: no rules installed, local validation OFF."""
        rules = load_rules(self.config.validation.rules_dir)
        if rules is not None:
            rules.warm()
        return rules

    @functools.cached_property
    def signer(self) -> PdfSigner:
        """The PAdES signer (the signing certificate of the configuration)."""
        _, sign = certs.load_credentials(self.config)
        return PdfSigner.from_credential(sign)

    def load(self) -> Stages:
        """Everything now (a broken file fails the start, not the first message), saying
        whether local validation is ON."""
        for name in ("routing", "mappings", "env", "rules", "signer"):
            getattr(self, name)
        rules_dir = self.config.validation.rules_dir
        if self.rules is None:
            log.warning("%s", no_rules_message(rules_dir))
        else:
            log.info("local validation ON: CDA XSD and schematrons from %s", rules_dir)
        return self


def render(stages: Stages, report: Report, ids: DocumentIds) -> bytes:
    """The CDA of *report* (bridge.cda.render)."""
    return render_cda(report, stages.env, ids)


def validate(stages: Stages, cda: bytes, doc_type: DocumentType) -> ValidationReport:
    """XSD + schematron (bridge.cda.validate); the service checks that rules are installed first."""
    if stages.rules is None:
        raise RulesError(f"no validation rules in {stages.config.validation.rules_dir}")
    return validate_cda(cda, stages.rules, doc_type)


def package(stages: Stages, cda: bytes) -> bytes:
    """The signed PDF/A holding *cda* (bridge.pdf.package)."""
    return package_pdf(cda, stages.signer)
