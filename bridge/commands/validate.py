"""`fse-bridge validate FILE.xml`: the CDA XSD and the official schematron of its type.

Exit codes: 0 no errors (warnings allowed), 1 XSD or schematron errors,
2 usage or configuration error (unreadable file, bad configuration),
3 no rules installed (local validation is off: nothing was checked).
"""

from __future__ import annotations

import sys
from pathlib import Path

from bridge.commands._common import load_config
from bridge.errors import ExitCode
from bridge.model import DocumentType
from bridge.cda.validate import load_rules, no_rules_message, validate_cda


def add_arguments(parser) -> None:
    parser.add_argument("file", metavar="FILE.xml", help="the CDA document")
    parser.add_argument("--type", metavar="T", type=str.upper, choices=[t.name for t in DocumentType],
                        help="use this type's schematron (default: chosen by the first templateId, "
                             "as the gateway does)")
    parser.add_argument("--rules", metavar="DIR",
                        help="rules folder holding schema/ and schematron/ (default: validation.rules_dir)")


def run(args) -> int:
    rules_dir = Path(args.rules) if args.rules else load_config(args).validation.rules_dir
    try:
        xml = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"fse-bridge validate: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return ExitCode.USAGE
    rules = load_rules(rules_dir)
    if rules is None:
        print(no_rules_message(rules_dir), file=sys.stderr)
        return ExitCode.NO_RULES
    report = validate_cda(xml, rules, DocumentType[args.type] if args.type else None)
    print(f"{args.file}: {report.summary()}")
    for issue in report.xsd_errors:
        print(f"  XSD ERROR {issue.rule_id} at {issue.location}: {issue.message}")
    for issue in report.schematron_errors:
        print(f"  ERROR {issue.rule_id} at {issue.location}: {issue.message}")
    for issue in report.warnings:
        print(f"  WARNING {issue.rule_id} at {issue.location}: {issue.message}")
    return ExitCode.DONE if report.ok else ExitCode.FAILED

