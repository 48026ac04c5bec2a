"""`fse-bridge accredit`: the Region's stage accreditation run (gateway.md section 9).

Runs create, replace, metadata update and delete of one test document against
the configured gateway (bridge.accredit.run), writes report.json, report.md (with
the email draft for fseprivati@regione.toscana.it) and the artifacts to
``--out`` (default ``<state_dir>/accreditation/<UTC time>``), and prints one line
per step with its X-Cart-id. Exit status: 0 all four OK, 1 a step not OK,
2 configuration error (a non-test fiscal code, a production gateway without
``--production``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.accredit import run as accredit
from bridge.commands._common import load_config
from bridge.errors import ExitCode


def add_arguments(parser) -> None:
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="report folder (default <state_dir>/accreditation/<UTC timestamp>)")
    parser.add_argument("--fiscal-code", metavar="CF", default=accredit.TEST_FISCAL_CODES[0],
                        help="stage test patient, one of RT §6's list: " + ", ".join(accredit.TEST_FISCAL_CODES)
                             + f" (default {accredit.TEST_FISCAL_CODES[0]})")
    parser.add_argument("--type", dest="doc_type", type=str.upper, default="LAB",
                        choices=list(accredit.SUPPORTED_TYPES), help="document type (default LAB)")
    parser.add_argument("--facility", metavar="MSH-4",
                        help="sending facility of the test message (default: the facilities table's first row)")
    parser.add_argument("--set", dest="metadata_settings", action="append", default=[], metavar="KEY=VALUE",
                        help="step 3: a metadata change with the gateway's field name (repeatable; "
                             "default: the same values under a new submission id)")
    parser.add_argument("--url", help="gateway base URL (default gateway.base_url; 'embedded': the running "
                                      "service's simulator)")
    parser.add_argument("--production", action="store_true",
                        help="allow the production gateway (still only stage test fiscal codes)")


def run(args) -> int:
    config = load_config(args)
    options = accredit.Options(fiscal_code=args.fiscal_code, doc_type=args.doc_type, out_dir=args.out,
                               production=args.production, facility=args.facility,
                               metadata_settings=tuple(args.metadata_settings), base_url=args.url)
    accredit.check_options(config, options)   # refusals before any loop or connection
    result = asyncio.run(accredit.run_accreditation(config, options))
    for line in accredit.summary_lines(result):
        print(line)
    failed = result.failed_step
    if failed is not None and failed.error:
        print(f"step {failed.number} ({failed.operation}) failed: "
              f"{failed.error if isinstance(failed.error, str) else accredit.problem_text(failed.error)}")
    print(f"report: {result.out_dir / 'report.md'}")
    return ExitCode.DONE if result.ok else ExitCode.FAILED
