"""End-to-end kit: the real ``fse-bridge serve`` in a subprocess, MLLP exchanges, the embedded
simulator's test hooks over mutual TLS, the journal read from its SQLite file, and
messages of the five document types built from the checkout's examples/.

Nothing here waits by sleeping: every wait is a bounded poll of a real condition
(a port file, a journal row) or a blocking socket read with a timeout.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fse_helpers import CHECKOUT, SHARED, MllpClient, config_table, to_toml

EXAMPLES = CHECKOUT / "examples"
REFERENCE = SHARED / "reference"
START_TIMEOUT = 60.0
#: How long a test waits for one ACK (the slowest path: retries with small back-off).
ACK_TIMEOUT = 60.0

#: The example file of each document type (the first create of each chain).
EXAMPLE_OF = {"LAB": "lab.hl7", "RAD": "rad.hl7", "RSA": "rsa.hl7", "RAP": "rap.hl7", "LDO": "ldo.hl7"}
#: The fast gateway settings of test servers: a down gateway is given up quickly (AR).
FAST_GATEWAY = {"max_attempts": 2, "backoff_s": 0.05, "max_backoff_s": 0.1, "timeout_s": 20}


def poll(condition, timeout: float, what: str, interval: float = 0.02):
    """Call *condition* until it returns something truthy (returned), at most *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        # A bounded poll of a real condition (a file, a journal row), not a synchronisation sleep.
        time.sleep(interval)


# -- messages ---------------------------------------------------------------------------


def unescape(text: str) -> str:
    """HL7 escapes of the default delimiters back to characters."""
    for code, char in (("\\F\\", "|"), ("\\S\\", "^"), ("\\T\\", "&"), ("\\R\\", "~"), ("\\E\\", "\\")):
        text = text.replace(code, char)
    return text


@dataclass
class Ack:
    """One ACK: MSA-1..3 and its ERR segments (v2.5+: ERR-2/3/4/8; older: ERR-1)."""

    raw: bytes
    code: str
    control_id: str
    text: str
    errors: list[dict] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: bytes) -> "Ack":
        segments = [s.decode("utf-8", "replace").split("|") for s in raw.split(b"\r") if s]
        msa = next(s for s in segments if s[0] == "MSA") + ["", "", ""]
        errors = []
        for s in segments:
            if s[0] != "ERR":
                continue
            s = s + [""] * 9
            if s[2] or s[3]:
                errors.append({"location": s[2], "code": s[3].split("^")[0], "severity": s[4],
                               "text": unescape(s[8])})
            else:
                parts = s[1].split("^") + ["", "", "", ""]
                coded = parts[3].split("&") + ["", ""]
                errors.append({"location": "^".join(p for p in parts[:3] if p), "code": coded[0],
                               "severity": "", "text": unescape(coded[1])})
        return cls(raw=raw, code=msa[1], control_id=msa[2], text=unescape(msa[3]), errors=errors)

    @property
    def x_cart_id(self) -> str | None:
        return self.text.split()[1] if self.text.startswith("X-Cart-id ") else None

    def __str__(self) -> str:
        return f"{self.code} {self.control_id} {self.text!r} {self.errors}"


class Message:
    """An example message as editable segments (fields split on ``|``), encoded in its MSH-18 charset."""

    def __init__(self, text: str, charset: str):
        self.segments = [s.split("|") for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]
        self.charset = charset

    @classmethod
    def example(cls, name: str) -> "Message":
        data = (EXAMPLES / name).read_bytes()
        charset = "utf-8" if b"UNICODE UTF-8" in data.split(b"\r")[0] else "iso-8859-1"
        return cls(data.decode(charset), charset)

    def all(self, name: str) -> list[list[str]]:
        return [s for s in self.segments if s[0] == name]

    def set(self, name: str, index: int, value: str, *, every: bool = True) -> "Message":
        """Set field *index* (HL7 numbering; MSH-1 is the separator) of the first or every *name* segment."""
        for segment in self.all(name)[:None if every else 1]:
            position = index - 1 if name == "MSH" else index
            segment.extend([""] * (position + 1 - len(segment)))
            segment[position] = value
        return self

    def get(self, name: str, index: int) -> str:
        segment = self.all(name)[0]
        position = index - 1 if name == "MSH" else index
        return segment[position] if position < len(segment) else ""

    def encode(self) -> bytes:
        return ("\r".join("|".join(s) for s in self.segments) + "\r").encode(self.charset)


def document_message(doc_type: str, control_id: str, accession: str, *, status: str = "F",
                     variant: int = 0, facility: str | None = None) -> Message:
    """The example of *doc_type* with a new control id and accession.

    *status*: OBR-25 of every group (F final, C corrected, P preliminary, X cancelled).
    *variant*: changes the report's content (the first numeric or text result), so
    two variants make different documents and equal variants identical ones.
    """
    message = Message.example(EXAMPLE_OF[doc_type])
    message.set("MSH", 10, control_id)
    if facility is not None:
        message.set("MSH", 4, facility)
    for segment in ("OBR", "ORC"):
        for s in message.all(segment):
            s[3] = "^".join([accession] + s[3].split("^")[1:])
    message.set("OBR", 25, status)
    if status == "X":
        message.set("ORC", 1, "CA")
    if status in ("F", "C", "P"):
        result = next(s for s in message.all("OBX") if s[2] in ("NM", "TX", "FT", "ST"))
        if result[2] == "NM":
            result[5] = str(90 + variant)
        elif variant:
            result[5] = f"{result[5]} Revisione {variant}."
        if status == "C":
            result[11] = "C"
    return message


# -- the server ---------------------------------------------------------------------------


def install_rules(rules_dir: Path) -> Path:
    """``fse-bridge rules install`` of the official reference into *rules_dir*."""
    done = subprocess.run([sys.executable, "-m", "bridge", "rules", "install", str(REFERENCE),
                           "--rules-dir", str(rules_dir)], cwd=CHECKOUT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return rules_dir


class Bridge:
    """``fse-bridge serve`` with a test configuration in *state_dir* (the embedded simulator inside).

    The same state (journal, simulator registry, certificates) survives :meth:`kill` and
    :meth:`start`, as after a crash of the real service.
    """

    def __init__(self, state_dir: Path, *, rules_dir: Path | None = None, **sections):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        sections.setdefault("gateway", dict(FAST_GATEWAY))
        if rules_dir is not None:
            sections.setdefault("validation", {})["rules_dir"] = str(rules_dir)
        self.config_path = self.state_dir / "bridge.toml"
        self.config_path.write_text(to_toml(config_table(self.state_dir, **sections)))
        self.port_file = self.state_dir / "mllp.port"
        self.log_path = self.state_dir / "serve.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._http: httpx.Client | None = None
        self.starts = 0

    # -- process

    def start(self) -> "Bridge":
        self.port_file.unlink(missing_ok=True)
        (self.state_dir / "gateway.url").unlink(missing_ok=True)
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"---- start {self.starts}\n")
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--config", str(self.config_path),
             "--port-file", str(self.port_file)],
            cwd=CHECKOUT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        poll(lambda: self.port_file.exists() or self.proc.poll() is not None, START_TIMEOUT, "the server to listen")
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        self.port = int(self.port_file.read_text())
        self._close_http()
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a crash."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._close_http()

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(60)
        self._close_http()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- MLLP

    def connect(self, timeout: float = ACK_TIMEOUT) -> "Sender":
        return Sender(self.port, timeout=timeout)

    def exchange(self, message: Message | bytes, timeout: float = ACK_TIMEOUT) -> Ack:
        with self.connect(timeout) as sender:
            return sender.exchange(message)

    # -- the embedded simulator (mutual TLS with the development PKI)

    @property
    def gateway_url(self) -> str:
        return (self.state_dir / "gateway.url").read_text().strip()

    def _client(self) -> httpx.Client:
        if self._http is None:
            certs = self.state_dir / "certs"
            context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
            context.load_cert_chain(str(certs / "auth.pem"), str(certs / "auth.key"))
            url = httpx.URL(self.gateway_url)
            self._http = httpx.Client(base_url=f"{url.scheme}://{url.host}:{url.port}", verify=context,
                                      timeout=30)
        return self._http

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def registry(self) -> list[dict]:
        """The simulator's registry (every document id ever published, with status and version)."""
        return self._client().get("/_sim/registry").raise_for_status().json()

    def requests(self) -> list[dict]:
        """The gateway requests the simulator saw since this start."""
        return self._client().get("/_sim/requests").raise_for_status().json()

    def faults(self, *faults: dict) -> None:
        self._client().post("/_sim/faults", json=list(faults)).raise_for_status()

    def clear_faults(self) -> None:
        self._client().delete("/_sim/faults").raise_for_status()

    def release(self) -> int:
        """The answers the simulator holds (a fault's ``delay_s``) go out now; how many."""
        return self._client().post("/_sim/release").raise_for_status().json()["released"]

    # -- the journal (read-only, beside the running writer: WAL)

    def query(self, sql: str, *params) -> list[sqlite3.Row]:
        db = sqlite3.connect(f"file:{self.state_dir / 'journal.sqlite'}?mode=ro", uri=True, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def entries(self, control_id: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM messages WHERE msh10 = ? ORDER BY id", control_id)

    def entry(self, control_id: str) -> sqlite3.Row:
        rows = self.entries(control_id)
        assert len(rows) == 1, f"{len(rows)} journal entries for {control_id}"
        return rows[0]

    def finished(self, control_id: str, timeout: float = ACK_TIMEOUT) -> sqlite3.Row:
        """The entry of *control_id* once its outcome is recorded."""
        return poll(lambda: next((r for r in self.entries(control_id) if r["outcome"] is not None), None),
                    timeout, f"the outcome of {control_id}")

    def calls(self, message_id: int) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM gateway_calls WHERE message_id = ? ORDER BY id", message_id)

    def artifacts(self, message_id: int) -> dict[str, bytes]:
        return {r["name"]: bytes(r["content"]) for r in
                self.query("SELECT name, content FROM artifacts WHERE message_id = ? ORDER BY id", message_id)}

    def documents(self, accession: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM documents WHERE accession = ? ORDER BY seq", accession)


class Sender(MllpClient):
    """A blocking MLLP connection that speaks Message and Ack."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", timeout: float = ACK_TIMEOUT):
        super().__init__(port, host=host, timeout=timeout)

    def send(self, message: Message | bytes) -> None:
        super().send(message.encode() if isinstance(message, Message) else message)

    def receive(self) -> Ack | None:
        """The next ACK, or None when the server closed the connection."""
        answer = super().receive()
        return Ack.parse(answer) if answer is not None else None

    def exchange(self, message: Message | bytes) -> Ack:
        ack = super().exchange(message)
        assert ack is not None, "the server closed the connection without an answer"
        return ack


# -- the simulator's registry --------------------------------------------------------------


def accession_of(document_id: str) -> str:
    """``<root>^<cf>.<type>.<repo>.<accession>_<seq>`` → accession."""
    extension = document_id.rsplit("^", 1)[-1]
    return extension.split(".", 3)[3].rsplit("_", 1)[0]


def chains(registry: list[dict], accession: str) -> list[list[dict]]:
    """The document sets of *accession* in the simulator's registry, each by version, oldest set first."""
    docs = [d for d in registry if accession_of(d["id"]) == accession]
    sets: dict[str, list[dict]] = {}
    for d in sorted(docs, key=lambda d: (d["created"], d["version"])):
        sets.setdefault(d["set_id"], []).append(d)
    return sorted((sorted(s, key=lambda d: d["version"]) for s in sets.values()),
                  key=lambda s: s[0]["created"])
