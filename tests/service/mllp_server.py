"""The real server as a subprocess on a free loopback port, a blocking MLLP client, test certificates."""

from __future__ import annotations

import datetime
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from fse_helpers import CHECKOUT, MllpClient, config_table, to_toml  # noqa: F401 (re-exported)

START_TIMEOUT = 30.0
_LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")


class ServerProcess:
    """``fse-bridge serve --config`` in a subprocess; the port is read from its log line."""

    def __init__(self, state_dir: Path, *, stub: bool = False, **sections):
        """*stub*: run the service with a handler answering AA instead of the document pipeline."""
        self.stub = stub
        self.state_dir = state_dir
        self.config_path = state_dir / "bridge.toml"
        self.config_path.write_text(to_toml(config_table(state_dir, **sections)))
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.port = 0

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.sqlite"

    def start(self) -> "ServerProcess":
        self.lines = []
        listening = threading.Event()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        command = ([sys.executable, str(Path(__file__).with_name("stub_server.py"))] if self.stub
                   else [sys.executable, "-m", "bridge", "serve"])
        self.proc = subprocess.Popen(command + ["--config", str(self.config_path)],
                                     cwd=CHECKOUT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=env, text=True, errors="replace")

        def read(stream=self.proc.stderr):
            for line in stream:
                self.lines.append(line)
                match = _LISTENING.search(line)
                if match:
                    self.port = int(match.group(2))
                    listening.set()
            listening.set()   # the process ended: stop waiting

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not listening.wait(START_TIMEOUT) or not self.port:
            self.kill()
            raise AssertionError("server did not start:\n" + "".join(self.lines))
        return self

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.terminate()
        return self.wait(timeout)

    def kill(self) -> int:
        self.proc.kill()
        return self.wait(30)

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status, once the process has ended and its whole log is read."""
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def log(self) -> str:
        return "".join(self.lines)


def simulator_registry(state_dir: Path, *, faults=None) -> list:
    """The running service's embedded simulator registry (over its mutual TLS, the development
    certificates); *faults*: scripted first (``POST /_sim/faults``)."""
    base, context = _simulator_access(state_dir)
    if faults:
        request = urllib.request.Request(base + "_sim/faults", data=json.dumps(faults).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context) as answer:
            assert answer.status == 200
    with urllib.request.urlopen(base + "_sim/registry", context=context) as answer:
        return json.load(answer)


def simulator_release(state_dir: Path) -> int:
    """The answers the running service's embedded simulator holds go out now; how many."""
    base, context = _simulator_access(state_dir)
    request = urllib.request.Request(base + "_sim/release", data=b"", method="POST")
    with urllib.request.urlopen(request, context=context) as answer:
        return json.load(answer)["released"]


def _simulator_access(state_dir: Path):
    """The embedded simulator's base URL and a TLS context with the development client certificate."""
    base = (state_dir / "gateway.url").read_text().strip().removesuffix("gateway/v2/")
    context = ssl.create_default_context(cafile=str(state_dir / "certs" / "ca.pem"))
    context.load_cert_chain(str(state_dir / "certs" / "auth.pem"), str(state_dir / "certs" / "auth.key"))
    return base, context


def msa_fields(answer: bytes) -> list[list[str]]:
    """MSA-1..3 of each ACK in an answer frame."""
    return [s.decode("iso-8859-1").split("|")[1:4] for s in answer.split(b"\r") if s.startswith(b"MSA")]


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(subject, key, issuer, issuer_key, *, ca=False, san=None, usage=None):
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                                          False), critical=True)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(stem, cert, key):
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("fse-bridge test CA", ca_key, "fse-bridge test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = issue("localhost", server_key, "fse-bridge test CA", ca_key,
                   san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                   usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue("LIS client", client_key, "fse-bridge test CA", ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    write("ca", ca, ca_key)
    write("server", server, server_key)
    write("client", client, client_key)
    return {name: folder / f"{name}.{ext}" for name, ext in
            [("ca", "pem"), ("server", "pem"), ("client", "pem")]} | {
        "server_key": folder / "server.key", "client_key": folder / "client.key"}
