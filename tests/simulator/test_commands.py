"""`fse-bridge simulator` and `fse-bridge submit` as an engineer runs them (subprocesses, loopback, mutual TLS)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway_kit import OPERATOR, STRUCTURE, doc_id

CHECKOUT = Path(__file__).resolve().parents[2]


def write_config(tmp_path, pki) -> Path:
    for name in ("mappings", "templates", "var"):
        (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / "mappings" / "practitioners.csv").write_text("id\n")
    path = tmp_path / "bridge.toml"
    path.write_text(f'''
state_dir = "var"
[gateway]
base_url = "embedded"
timeout_s = 10
[certificates]
auth_cert = "{pki.auth_cert}"
auth_key = "{pki.auth_key}"
sign_cert = "{pki.sign_cert}"
sign_key = "{pki.sign_key}"
gateway_ca = "{pki.ca_cert}"
[structure]
fiscal_code = "{STRUCTURE}"
locality = "LAB ROSSI^^^^^&2.16.840.1.113883.2.9.4.1.3&ISO^^^^090201123456"
[operator]
fiscal_code = "{OPERATOR}"
[mapping]
dir = "mappings"
templates = "templates"
practitioners = "mappings/practitioners.csv"
[validation]
rules_dir = "no-rules"
[simulator]
port = 0
tls_cert = "{pki.server_cert}"
tls_key = "{pki.server_key}"
tls_client_ca = "{pki.ca_cert}"
''')
    return path


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=CHECKOUT, capture_output=True,
                          text=True, timeout=60, **kwargs)


@pytest.fixture
def running_simulator(tmp_path, pki):
    config = write_config(tmp_path, pki)
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "simulator", "--config", str(config)],
                            cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()  # blocks until the simulator prints its URL (or exits)
        match = re.search(r"listening on (https://\S+)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield config, match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        proc.stdout.close()
        proc.stderr.close()


def test_submit_create_then_delete_by_hand(running_simulator, tmp_path, package):
    config, url = running_simulator
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(package)
    created = cli("submit", str(pdf), "--op", "create", "--url", url, "--config", str(config))
    assert created.returncode == 0, created.stderr + created.stdout
    assert re.search(r"attempt 1: status 202  X-Cart-id [0-9a-f-]{36}", created.stdout)
    assert '"workflowInstanceId": "2.16.840.1.113883.2.9.2.90.4.4.' in created.stdout
    assert "outcome: published" in created.stdout

    again = cli("submit", str(pdf), "--op", "create", "--url", url, "--config", str(config))
    assert again.returncode == 1
    assert "status 409" in again.stdout and "/msg/ini-error" in again.stdout and "outcome: refused" in again.stdout

    deleted = cli("submit", "--op", "delete", "--id", doc_id(), "--type", "LAB", "--patient",
                  "RMSLSO31M04Z404R", "--url", url, "--config", str(config))
    assert deleted.returncode == 0, deleted.stderr + deleted.stdout
    assert "status 200" in deleted.stdout


def test_submit_usage_errors(tmp_path, pki):
    config = write_config(tmp_path, pki)
    missing = cli("submit", "--op", "create", "--config", str(config))
    assert missing.returncode == 2 and "needs FILE.pdf" in missing.stderr
    embedded = cli("submit", "--op", "delete", "--id", doc_id(), "--type", "LAB", "--patient", "X",
                   "--config", str(config))
    assert embedded.returncode == 2 and "gateway.base_url" in embedded.stderr
