"""Shared test helpers: paths to ../shared, message factories, a test configuration."""

from __future__ import annotations

import gc
import socket
import ssl
import sys
import threading
from pathlib import Path

import pytest

from bridge.mllp.protocol import MllpDecoder, frame
import shared_data
from shared_data import CHECKOUT, CORPUS, DIALECTS, REFERENCE, SHARED, SPEC, VALIDATOR  # noqa: F401 (fse_helpers)

# Test modules import these helpers as `fse_helpers`: several test folders have a
# conftest.py of their own, so the module name "conftest" is not unique in a full run.
# Set before the oracles' imports, which read the paths above through it.
sys.modules.setdefault("fse_helpers", sys.modules[__name__])

from oracles.wire import openapi_checked_requests  # noqa: F401  (autouse: every request a GatewayClient sends is checked against the official OpenAPI)
from oracles.collector import second_engine_on_every_validated_cda  # noqa: F401  (autouse: the second CDA engine judges every CDA the session validates)


#: pytest's status for a run that could not start as asked (a UsageError).
MISSING_SHARED_STATUS = pytest.ExitCode.USAGE_ERROR


def pytest_configure(config):
    """Without ../shared, one message says so, instead of skips and unrelated failures."""
    if missing := shared_data.missing():
        raise pytest.UsageError(shared_data.missing_message(missing))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """Once a test module and its fixtures are done, its garbage is collected on a fresh thread:
    an object that cannot be freed off the thread that made it (saxonche's ended the process with
    status 99, issue 15) then fails with the module that made it, not with whichever later test's
    thread the collector happened to run on; the outcome does not depend on the tests' order."""
    if nextitem is None or getattr(nextitem, "module", None) is not getattr(item, "module", None):
        collector = threading.Thread(target=gc.collect, name="gc-after-module")
        collector.start()
        collector.join()


def make_oru(control_id: str = "CTRL0001", *, version: str = "2.5", facility: str = "OSP",
             charset: str = "", name: str = "ROSSI^MARIO", event: str = "R01", message_type: str = "ORU",
             accept_ack: str = "", application_ack: str = "", sep: str = "\r") -> str:
    """A small ORU^R01 as text (encode it yourself: the charset is part of the test)."""
    msh = ["MSH", "^~\\&", "LIS", facility, "FSE", "REGIONE", "20240131101500", "",
           f"{message_type}^{event}" if event else message_type, control_id, "P", version,
           "", "", accept_ack, application_ack, "", charset]
    segments = ["|".join(msh[:1] + msh[1:]).rstrip("|"),
                f"PID|1||RSSMRA80A01H501U^^^MEF^NNITA||{name}||19800101|M",
                "OBR|1|ORD1|ACC0001|24323-8^Pannello metabolico^LN|||20240131090000",
                "OBX|1|NM|2345-7^Glucosio^LN||95|mg/dL|70-99|N|||F"]
    return sep.join(segments) + sep


def config_table(state_dir: Path, **sections) -> dict:
    """A configuration table for tests: free MLLP port, state in *state_dir*, the checkout's
    mappings and templates, no validation rules unless a test installs them."""
    table = {
        "state_dir": str(state_dir),
        "mllp": {"host": "127.0.0.1", "port": 0},
        "certificates": {"development": True},
        "mapping": {"dir": str(CHECKOUT / "mappings"), "templates": str(CHECKOUT / "templates"),
                    "practitioners": str(CHECKOUT / "mappings" / "practitioners.csv")},
        "validation": {"rules_dir": str(state_dir / "rules")},
        "web": {"port": 0},
    }
    for key, value in sections.items():
        table.setdefault(key, {}).update(value)
    return table


def to_toml(table: dict) -> str:
    """Enough TOML for config_table's output (strings, numbers, booleans, one level of tables)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{k} = {value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def rules():
    """The official validation rules of ../shared/reference, loaded once for the session
    (missing or unreadable rules fail the tests that need them: never a silent skip)."""
    from bridge.cda.validate import load_rules

    loaded = load_rules(REFERENCE)
    assert loaded is not None, f"no validation rules could be loaded from {REFERENCE}"
    return loaded


@pytest.fixture
def fresh_alerts():
    """The process's operator alerts, empty before and after the test."""
    from bridge.alerts import ALERTS

    ALERTS.clear()
    yield ALERTS
    ALERTS.clear()


@pytest.fixture
def test_config(tmp_path):
    """A Config for in-process tests (journal in tmp_path)."""
    from bridge import config
    return config.from_dict(config_table(tmp_path), base_dir=tmp_path)


class MllpClient:
    """A blocking MLLP client for tests."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", context: ssl.SSLContext | None = None,
                 timeout: float = 30.0):
        sock = socket.create_connection((host, port), timeout=timeout)
        self.sock = context.wrap_socket(sock, server_hostname="localhost") if context else sock
        self.decoder = MllpDecoder(64 * 1024 * 1024)
        self.frames: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> bytes | None:
        """The next answer frame, or None if the server closed the connection."""
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    def exchange(self, payload: bytes) -> bytes | None:
        self.send(payload)
        return self.receive()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def write_config():
    """write_config(folder, certificates_body) -> path of a configuration file in folder/etc."""
    def write(folder: Path, certificates: str) -> Path:
        for sub in ("mappings", "templates"):
            (folder / sub).mkdir(exist_ok=True)
        (folder / "mappings" / "practitioners.csv").write_text("id,fiscal_code,family,given\n")
        path = folder / "etc" / "bridge.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text('state_dir = "../var"\n[application]\nvendor = "Pipo House"\n'
                        f"[certificates]\n{certificates}\n")
        return path
    return write
