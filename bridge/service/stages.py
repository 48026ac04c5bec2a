"""The CPU-heavy stages as calls a worker process answers (bridge.service.workers).

Each is ``fn(stages, *args)``: *stages* holds what the stage needs, loaded
once. A worker process has its own :class:`Stages`, loaded on first use from
the configuration the service sends it; the service without worker processes
passes its :class:`~bridge.publish.pipeline.Publisher` (the same attributes, loaded at
start) and runs these in a thread.
"""

from __future__ import annotations

import functools

from bridge.model import DocumentType, Report


class Stages:
    """Routing rules, mappings, templates, validation rules and the signer, loaded on first use."""

    def __init__(self, config):
        self.config = config

    @functools.cached_property
    def routing(self):
        from bridge.mapping.route import load_routing
        return load_routing(self.config.mapping.dir)

    @functools.cached_property
    def mappings(self):
        from bridge.mapping.mapper import load_mappings
        return load_mappings(self.config.mapping.dir, self.config.mapping.practitioners)

    @functools.cached_property
    def env(self):
        from bridge.cda.render import make_environment
        return make_environment(self.config.mapping.templates)

    @functools.cached_property
    def rules(self):
        from bridge.cda.validate import load_rules
        rules = load_rules(self.config.validation.rules_dir)
        if rules is not None:
            rules.warm()
        return rules

    @functools.cached_property
    def signer(self):
        from bridge import certs
        from bridge.pdf.sign import PdfSigner
        _, sign = certs.load_credentials(self.config)
        return PdfSigner.from_credential(sign)


def render(stages, report: Report, ids) -> bytes:
    """The CDA of *report* (bridge.cda.render)."""
    from bridge.cda.render import render_cda
    return render_cda(report, stages.env, ids)


def validate(stages, cda: bytes, doc_type: DocumentType):
    """XSD + schematron (bridge.cda.validate); the service checks that rules are installed first."""
    from bridge.cda.validate import RulesError, validate_cda
    if stages.rules is None:
        raise RulesError(f"no validation rules in {stages.config.validation.rules_dir}")
    return validate_cda(cda, stages.rules, doc_type)


def package(stages, cda: bytes) -> bytes:
    """The signed PDF/A holding *cda* (bridge.pdf.package)."""
    from bridge.pdf.package import package_pdf
    return package_pdf(cda, stages.signer)
