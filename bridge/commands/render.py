"""`fse-bridge render FILE.hl7`: route + map + render + validate, without sending.

For an interface engineer testing a mapping (interface.md, Commands). Prints
the document type, the action and the validation summary; writes the CDA as
DIR/<document id, filesystem-safe>.xml. With ``--previous-id`` and
``--previous-version`` it renders the replacement of that version (the same
inputs the pipeline takes from its registry).

Exit codes: 0 rendered (and valid when rules are installed), 1 mapping or
validation failure (the HL7 field is named), 2 usage or configuration error.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from bridge.commands._common import load_config
from bridge.errors import ExitCode, MessageError, NotProcessable
from bridge.hl7.message import parse_message
from bridge.gateway.identifiers import document_ids
from bridge.mapping.mapper import map_report
from bridge.model import Action
from bridge.cda.validate import load_rules, no_rules_message, validate_cda
from bridge.mapping.route import route
from bridge.service.stages import Stages, render


def add_arguments(parser) -> None:
    parser.add_argument("file", metavar="FILE.hl7", help="one HL7 v2 ORU^R01 message")
    parser.add_argument("--out", metavar="DIR", default=".", help="folder for the CDA (default: .)")
    parser.add_argument("--previous-id", metavar="ID",
                        help="identificativoDoc (root^extension) of the version this one replaces")
    parser.add_argument("--previous-version", metavar="N", type=int,
                        help="versionNumber of that previous version")
    parser.add_argument("--rules", metavar="DIR",
                        help="validation rules folder (default: validation.rules_dir)")


def safe_name(document_id: str) -> str:
    """A file name for a document id (``^`` and other unsafe characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", document_id)


def run(args) -> int:
    if (args.previous_id is None) != (args.previous_version is None):
        print("fse-bridge render: --previous-id and --previous-version go together", file=sys.stderr)
        return ExitCode.USAGE
    config = load_config(args)
    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"fse-bridge render: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return ExitCode.USAGE
    stages = Stages(config)
    try:
        parsed = parse_message(raw, config.mllp.default_charset)
        routed = route(parsed, stages.routing)
        print(f"document type: {routed.doc_type.name}")
        print(f"action: {routed.action.value} ({routed.reason})")
        if routed.action is not Action.PUBLISH:
            # Deletions and non-final reports produce no document.
            return 0
        report = map_report(parsed, routed, stages.mappings, config.structure)
    except (MessageError, NotProcessable) as exc:
        print(f"fse-bridge render: mapping failed at {exc.location or '?'} "
              f"(HL7 error {exc.err_code}): {exc.message}", file=sys.stderr)
        return ExitCode.FAILED
    structure = config.structure
    ids = document_ids(structure.fiscal_code, routed.doc_type.name, structure.repository, routed.accession,
                       repository_index=structure.repository_index, previous_id=args.previous_id,
                       previous_version=args.previous_version)
    xml = render(stages, report, ids)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{safe_name(ids.document_id)}.xml"
    target.write_bytes(xml)
    print(f"document id: {ids.document_id} (version {ids.version_number})")
    print(f"written: {target}")
    for notice in report.notices:   # what the ACK will add to the AA
        print(f"ACK ERR {notice.severity} at {notice.location}: {notice.text}")
    return _validate(xml, Path(args.rules) if args.rules else config.validation.rules_dir)


def _validate(xml: bytes, rules_dir: Path) -> int:
    rules = load_rules(rules_dir)
    if rules is None:
        print(f"validation: OFF\n{no_rules_message(rules_dir)}")
        return 0
    result = validate_cda(xml, rules)
    print(f"validation: {result.summary()}")
    for issue in result.errors:
        print(f"  ERROR {issue.rule_id} at {issue.location}: {issue.message}")
    for issue in result.warnings:
        print(f"  WARNING {issue.rule_id} at {issue.location}: {issue.message}")
    return ExitCode.DONE if result.ok else ExitCode.FAILED
