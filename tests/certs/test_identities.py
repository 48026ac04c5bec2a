"""The A1 and S1 certificates are the structure's: their CN's P.IVA is [structure] fiscal_code.

`certs check` says so as an error; `serve` and `twist fse-bridge` refuse the production gateway
with certificates of another structure and warn loudly anywhere else (issue 11 item 5)."""

import subprocess
import sys
import threading
import time

import pytest

from bridge import certs, cli
from fse_helpers import CHECKOUT

#: The structure the certificates below are issued to, not the configured one (01386030488).
OTHER = "01000000016"
PRODUCTION = "https://fse20gw.regione.toscana.it/gateway/v2/"


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory) -> certs.DevPki:
    return certs.generate_development_pki(tmp_path_factory.mktemp("other"), fiscal_code=OTHER,
                                          vendor="PIPOHOUSE")


def configure(tmp_path, write_config, pki, *, base_url: str | None = None):
    path = write_config(tmp_path, f'auth_cert = "{pki.auth_cert}"\nauth_key = "{pki.auth_key}"\n'
                                  f'sign_cert = "{pki.sign_cert}"\nsign_key = "{pki.sign_key}"\n'
                                  f'gateway_ca = "{pki.ca_cert}"\n')
    extra = ("[mllp]\nport = 0\n[web]\nport = 0\n[workers]\nprocesses = 0\n"
             f'[mapping]\ndir = "{CHECKOUT / "mappings"}"\ntemplates = "{CHECKOUT / "templates"}"\n'
             f'practitioners = "{CHECKOUT / "mappings" / "practitioners.csv"}"\n')
    if base_url:
        extra += f'[gateway]\nbase_url = "{base_url}"\n'
    path.write_text(path.read_text() + extra)
    return path


def test_cn_fiscal_code():
    assert certs.cn_fiscal_code("S1#090#01386030488PIPOHOUSE") == "01386030488"
    assert certs.cn_fiscal_code("A2#090#RSSMRA80A01H501UVENDOR") == "RSSMRA80A01H501U"
    assert certs.cn_fiscal_code("localhost") is None


def test_certs_check_reports_certificates_of_another_structure(tmp_path, write_config, other_pki, capsys):
    path = configure(tmp_path, write_config, other_pki)
    assert cli.main(["certs", "check", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    for kind in ("auth", "sign"):
        assert (f"problem: the {kind} certificate ({kind[0].upper()}1#090#{OTHER}PIPOHOUSE) is issued to "
                f"{OTHER}, not to structure.fiscal_code 01386030488") in captured.out
    assert not captured.out.rstrip().endswith("ok")
    assert "auth and sign certificate not usable" in captured.err


def test_certs_check_accepts_the_structures_own(tmp_path, write_config, pki, capsys):
    path = configure(tmp_path, write_config, pki)
    assert cli.main(["certs", "check", "--config", str(path)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("ok")


def serve(path, port_file) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--config", str(path),
                             "--port-file", str(port_file)], cwd=CHECKOUT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_serve_refuses_the_production_gateway_with_another_structures_certificates(tmp_path, write_config,
                                                                                   other_pki):
    path = configure(tmp_path, write_config, other_pki, base_url=PRODUCTION)
    process = serve(path, tmp_path / "port")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"issued to {OTHER}, not to structure.fiscal_code 01386030488" in err
    assert "refused against the production gateway" in err and "structure.fiscal_code" in err
    assert not (tmp_path / "port").exists()


def test_serve_elsewhere_starts_and_warns_loudly(tmp_path, write_config, other_pki):
    path = configure(tmp_path, write_config, other_pki)   # the embedded gateway
    process = serve(path, tmp_path / "port")
    deadline = time.monotonic() + 90
    while not (tmp_path / "port").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    started = (tmp_path / "port").exists()
    process.terminate()
    _, err = process.communicate(timeout=60)
    assert started and process.returncode == 0, err
    assert f"CERTIFICATES DO NOT MATCH THE STRUCTURE: the auth certificate (A1#090#{OTHER}PIPOHOUSE)" in err


def test_twist_refuses_the_production_gateway_with_another_structures_certificates(tmp_path, write_config,
                                                                                   other_pki):
    """The same check under `twist fse-bridge` (the Twisted plug-in): it stops, never listens."""
    path = configure(tmp_path, write_config, other_pki, base_url=PRODUCTION)
    process = subprocess.run([sys.executable, "-m", "twisted", "--log-format", "text", "fse-bridge",
                              "--config", str(path)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=60)
    log = process.stdout + process.stderr
    assert process.returncode == 2, log
    assert "Traceback" not in log and "listening on" not in log
    assert process.stderr.startswith("fse-bridge: cannot start: configuration error: ")
    assert f"issued to {OTHER}, not to structure.fiscal_code 01386030488" in process.stderr
    assert "refused against the production gateway" in process.stderr


def test_twist_elsewhere_warns_loudly(tmp_path, write_config, other_pki):
    path = configure(tmp_path, write_config, other_pki)   # the embedded gateway
    process = subprocess.Popen([sys.executable, "-m", "twisted", "--log-format", "text", "fse-bridge",
                                "--config", str(path)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = threading.Timer(90, process.kill)   # a service that never listens fails, not hangs
    deadline.start()
    try:
        for line in process.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        process.terminate()   # may come before the reactor's signal handlers: the exit status is not checked
        lines += process.stdout.readlines()
        process.wait(60)
    finally:
        deadline.cancel()
    log = "".join(lines)
    assert "listening on" in log
    assert f"CERTIFICATES DO NOT MATCH THE STRUCTURE: the auth certificate (A1#090#{OTHER}PIPOHOUSE)" in log
