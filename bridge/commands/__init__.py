"""The `fse-bridge` commands: this table, read without importing any of them.

Each command is the module ``bridge.commands.<name>`` with ``add_arguments(parser)``
and ``run(args) -> int``; the CLI imports it only when that command runs, so
`fse-bridge --help` and `fse-bridge send` load nothing they do not use (no PDF,
signature or XSLT library). ``failed`` says what exit status 1 means for the
command; ``exits`` lists the statuses it can give beyond 0, 1 and 2
(bridge.errors.ExitCode).
"""

from __future__ import annotations

from typing import NamedTuple

from bridge.errors import ExitCode


class Command(NamedTuple):
    help: str
    failed: str
    exits: tuple[ExitCode, ...] = ()


_JOURNAL = (ExitCode.JOURNAL_DAMAGED,)

COMMANDS: dict[str, Command] = {
    "accredit": Command(
        "the Region's stage accreditation run: create, replace, metadata, delete of a test document, "
        "and its report", "a step was not OK", _JOURNAL),
    "certs": Command(
        "generate development certificates (Region CN patterns) or check the configured pair",
        "cannot generate or read the certificates"),
    "config": Command(
        "check the configuration and print the resolved settings (no secrets)",
        "the configuration cannot be shown"),
    "journal": Command(
        "list, show, export or resubmit journaled messages; update a published document's metadata; "
        "purge old content",
        "no entry matches, or the resubmission or metadata update was not accepted", _JOURNAL),
    "package": Command(
        "render a CDA as a PDF/A-3b report with cda.xml embedded and sign it (PAdES B-B)",
        "the CDA cannot be packaged"),
    "render": Command(
        "turn one HL7 ORU^R01 into its CDA and validate it, without sending",
        "a mapping or validation failure (the HL7 field is named)"),
    "rules": Command(
        "install the CDA XSD and official schematrons (folder, zip/tar archive or archive URL)",
        "the source holds no usable rules"),
    "send": Command(
        "send HL7 files over MLLP and print each ACK (exit 0 only if all are AA/CA)",
        "an ACK is not AA or CA, none came, or the listener cannot be reached"),
    "serve": Command(
        "run the service (MLLP listener, journal, processing) until SIGTERM/SIGINT",
        "the service could not start (a port in use, an unreadable file)", _JOURNAL),
    "simulator": Command(
        "run the embedded gateway simulator (prints its URL)",
        "the simulator could not start"),
    "submit": Command(
        "send one document (or delete/metadata call) to the gateway and print status, X-Cart-id and body",
        "the gateway refused the call, or not now"),
    "validate": Command(
        "check a CDA against the CDA XSD and the official schematron of its type",
        "XSD or schematron errors", (ExitCode.NO_RULES,)),
}


def module_name(name: str) -> str:
    return f"bridge.commands.{name}"
