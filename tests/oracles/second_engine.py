"""A second CDA validator, run as an external program, and the comparison with ours.

../shared/tools/validate_cda.py (lxml XSD + its own schematron compiler on
saxonche; see ../shared/tools/README.md) is run in batch mode, several files
per call, with ``--type`` so both engines run the same schematron. Its report
and bridge.cda.validate's are reduced to an :class:`Outcome` (XSD pass/fail,
then the failed asserts and fired reports as rule id + location) and
:func:`disagreements` names every difference.

The two engines write rule ids and locations in their own styles; only the
spelling is normalised: ids without whitespace (``ERRORE 8`` / ``ERRORE8``),
locations without the ``*:`` wildcard prefix (``/*:ClinicalDocument[1]`` /
``/ClinicalDocument[1]``). The schematron is compared only where both XSD
checks pass: ours stops at an XSD error, as the gateway does.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from shared_data import REFERENCE
from shared_data import VALIDATOR as TOOL


@dataclass(frozen=True)
class Outcome:
    xsd_ok: bool
    errors: frozenset = frozenset()
    """(rule id, location) of each failed assert."""
    warnings: frozenset = frozenset()
    """(rule id, location) of each fired report."""


def rule_key(rule_id: str, location: str) -> tuple[str, str]:
    return re.sub(r"\s+", "", rule_id or ""), (location or "").replace("*:", "")


def ours(report) -> Outcome:
    """The Outcome of a :class:`bridge.cda.validate.ValidationReport`."""
    return Outcome(xsd_ok=not report.xsd_errors,
                   errors=frozenset(rule_key(i.rule_id, i.location) for i in report.schematron_errors),
                   warnings=frozenset(rule_key(i.rule_id, i.location) for i in report.warnings))


def run_second_engine(files: list[Path], doc_type: str, *, timeout_s: float = 600) -> dict[Path, Outcome]:
    """Validate *files* (all of *doc_type*) in one call of the second engine."""
    if not files:
        return {}
    command = [sys.executable, str(TOOL), *map(str, files), "--type", doc_type, "--reference", str(REFERENCE)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"the second engine could not run (exit {done.returncode}): {done.stderr.strip()}")
    outcomes = parse_report(done.stdout)
    missing = [f for f in files if str(f) not in outcomes]
    if missing:
        raise RuntimeError(f"the second engine said nothing about {missing[0]}:\n{done.stdout[-2000:]}")
    return {f: outcomes[str(f)] for f in files}


_HEADER = re.compile(r"^# (?P<file>.+): type=\S+ schematron=\S+$")
_FINDING = re.compile(r"^(?P<kind>ERROR|WARNING) \[(?P<id>[^\]]*)\] ")
_SUMMARY = re.compile(r"^xsd=(?P<xsd>ok|fail) schematron_errors=(?P<errors>\d+) warnings=(?P<warnings>\d+)$")


def parse_report(text: str) -> dict[str, Outcome]:
    """The second engine's printed report, file by file."""
    results: dict[str, Outcome] = {}
    current, found, pending = None, {"ERROR": [], "WARNING": []}, None
    for line in text.splitlines():
        if (header := _HEADER.match(line)) is not None:
            current, found, pending = header.group("file"), {"ERROR": [], "WARNING": []}, None
        elif (finding := _FINDING.match(line)) is not None:
            pending = (finding.group("kind"), "" if finding.group("id") == "-" else finding.group("id"))
        elif line.startswith("    at ") and pending is not None:
            kind, rule_id = pending
            found[kind].append(rule_key(rule_id, line[len("    at "):].strip()))
            pending = None
        elif (summary := _SUMMARY.match(line)) is not None and current is not None:
            errors, warnings = frozenset(found["ERROR"]), frozenset(found["WARNING"])
            # A finding the parser missed would make two different reports look alike.
            assert len(found["ERROR"]) == int(summary.group("errors")), (current, found)
            assert len(found["WARNING"]) == int(summary.group("warnings")), (current, found)
            results[current] = Outcome(xsd_ok=summary.group("xsd") == "ok", errors=errors, warnings=warnings)
            current = None
    return results


def disagreements(mine: Outcome, theirs: Outcome) -> list[str]:
    """Every difference between the two engines' outcomes (empty: they agree)."""
    if mine.xsd_ok != theirs.xsd_ok:
        return [f"XSD: ours {'passes' if mine.xsd_ok else 'fails'}, "
                f"the second engine's {'passes' if theirs.xsd_ok else 'fails'}"]
    if not mine.xsd_ok:
        return []  # ours stops at the XSD, as the gateway does
    found = []
    for kind, a, b in (("failed assert", mine.errors, theirs.errors),
                       ("fired report", mine.warnings, theirs.warnings)):
        found += [f"{kind} {rule} at {where}: only ours" for rule, where in sorted(a - b)]
        found += [f"{kind} {rule} at {where}: only the second engine" for rule, where in sorted(b - a)]
    return found
