"""The accreditation run's report for people: report.md, rendered from templates/report.md.j2
(the steps, what failed, and the email draft with the four X-Cart-ids the Region wants)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import jinja2

if TYPE_CHECKING:   # the run imports this module
    from bridge.accredit.run import Accreditation

#: Where RT wants the four X-Cart-ids (gateway.md section 9).
REGION_EMAIL = "fseprivati@regione.toscana.it"

_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("bridge.accredit", "templates"), autoescape=False,
                                undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                keep_trailing_newline=True)
_TEMPLATES.filters["pretty_json"] = lambda value: json.dumps(value, ensure_ascii=False, indent=2)


def report_markdown(result: Accreditation) -> str:
    return _TEMPLATES.get_template("report.md.j2").render(result=result, region_email=REGION_EMAIL)
