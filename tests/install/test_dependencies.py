"""The product's install (no extras) carries everything bridge/ imports at run time.

A fresh machine has only what install_requires names: every third-party module
that a module of bridge/ imports must come from a distribution named there, and
the data the standard library needs (the time-zone database) too.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def declared_requirements() -> dict[str, set[str]]:
    """Normalised distribution name -> the extras asked for, from setup.cfg's install_requires."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    declared: dict[str, set[str]] = {}
    for line in cfg["options"]["install_requires"].splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"([A-Za-z0-9_.\-]+)(?:\[([^\]]*)\])?", line)
        name = normalise(match.group(1))
        declared.setdefault(name, set()).update(
            e.strip() for e in (match.group(2) or "").split(",") if e.strip())
    return declared


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_levels() -> dict[str, str]:
    """Top-level module -> one file of bridge/ importing it (absolute imports only)."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "bridge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared():
    declared = declared_requirements()
    providers = importlib.metadata.packages_distributions()
    missing = []
    for module, where in sorted(imported_top_levels().items()):
        if module in sys.stdlib_module_names or module == "bridge":
            continue
        dists = {normalise(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported by {where}) comes from no installed distribution"
        if not dists & declared.keys():
            missing.append(f"{module} ({where}) from {sorted(dists)}")
    assert not missing, "imported but not in install_requires: " + "; ".join(missing)


def test_pikepdf_pdfa_extra_is_part_of_the_install():
    """bridge/ calls pikepdf.pdfa, which needs pikepdf's [pdfa] extra at run time."""
    uses_pdfa = any("pikepdf.pdfa" in p.read_text(encoding="utf-8")
                    for p in (ROOT / "bridge").rglob("*.py"))
    assert uses_pdfa
    assert "pdfa" in declared_requirements().get("pikepdf", set())


def test_time_zone_database_is_declared():
    uses_zoneinfo = "zoneinfo" in imported_top_levels()
    assert uses_zoneinfo
    assert "tzdata" in declared_requirements()
