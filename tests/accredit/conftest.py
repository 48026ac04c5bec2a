"""A bridge configuration with the checkout's mappings and templates, development PKI,
and the real gateway simulator on loopback with mutual TLS."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import certs, config as config_module

from fse_helpers import CHECKOUT, REFERENCE

STRUCTURE = "01386030488"
OPERATOR = "MNZLSN99E05F205J"


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return certs.generate_development_pki(tmp_path_factory.mktemp("pki"), fiscal_code=STRUCTURE,
                                          vendor="PIPOHOUSE")


def config_table(folder: Path, pki, *, base_url: str = "embedded", rules_dir: Path | None = None) -> dict:
    return {
        "state_dir": str(folder / "var"),
        "gateway": {"base_url": base_url, "timeout_s": 10, "max_attempts": 1},
        "certificates": {"development": False, "auth_cert": str(pki.auth_cert), "auth_key": str(pki.auth_key),
                         "sign_cert": str(pki.sign_cert), "sign_key": str(pki.sign_key),
                         "gateway_ca": str(pki.ca_cert)},
        "application": {"id": "fse-bridge", "vendor": "PIPOHOUSE", "version": "1.0"},
        "structure": {"fiscal_code": STRUCTURE, "name": "Laboratorio di prova",
                      "locality": "LAB ROSSI^^^^^&2.16.840.1.113883.2.9.4.1.3&ISO^^^^090201123456"},
        "operator": {"fiscal_code": OPERATOR, "role": "AAS"},
        "mapping": {"dir": str(CHECKOUT / "mappings"), "templates": str(CHECKOUT / "templates"),
                    "practitioners": str(CHECKOUT / "mappings" / "practitioners.csv")},
        "validation": {"rules_dir": str(rules_dir or folder / "no-rules")},
        "simulator": {"host": "127.0.0.1", "port": 0, "tls_cert": str(pki.server_cert),
                      "tls_key": str(pki.server_key), "tls_client_ca": str(pki.ca_cert)},
    }


def write_toml(path: Path, table: dict) -> Path:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{k} = {value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for section, items in table.items():
        if isinstance(items, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in items.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def rules_dir(tmp_path_factory):
    """The official XSD and schematrons (the reference folder has the rules folder's layout)."""
    return REFERENCE.resolve()


@pytest.fixture
def make_config(tmp_path, pki):
    def make(**kwargs):
        return config_module.from_dict(config_table(tmp_path, pki, **kwargs), base_dir=tmp_path)
    return make


@pytest.fixture
def simulator(make_config):
    from twisted.internet import reactor

    from bridge.simulator import start_simulator

    handle = start_simulator(make_config(), reactor, rules=False)
    yield handle
    handle.stop()
