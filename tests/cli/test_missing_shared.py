"""Without ../shared beside the checkout, the tests stop at once with one message that says so."""

from __future__ import annotations

import shutil
import subprocess
import sys

from fse_helpers import CHECKOUT, MISSING_SHARED_STATUS

NEEDS_SHARED = '''
from fse_helpers import REFERENCE


def test_reads_a_sample():
    assert (REFERENCE / "cda" / "samples" / "LAB.xml").read_bytes()
'''


def test_a_checkout_without_shared_beside_it_stops_with_one_message(tmp_path):
    checkout = tmp_path / "main"
    (checkout / "tests").mkdir(parents=True)
    for name in ("conftest.py", "shared_data.py"):
        shutil.copy(CHECKOUT / "tests" / name, checkout / "tests" / name)
    shutil.copytree(CHECKOUT / "tests" / "oracles", checkout / "tests" / "oracles",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (checkout / "tests" / "test_needs_shared.py").write_text(NEEDS_SHARED)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=checkout, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == MISSING_SHARED_STATUS, output
    assert output.count("../shared is missing beside the checkout") == 1, output
    assert f"({tmp_path / 'shared'} not found)" in output
    assert "passed" not in output and "skipped" not in output and "failed" not in output, output
