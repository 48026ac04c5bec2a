"""`fse-bridge --help` imports no command; `send` loads no PDF, signature or XSLT library.

Checked on sys.modules in a fresh interpreter, not with a timing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

from bridge.mllp.protocol import MllpDecoder, frame
from fse_helpers import CHECKOUT, make_oru

#: What `send` must never load: the document stages' libraries.
HEAVY = ("reportlab", "pikepdf", "saxonche", "pyhanko", "lxml", "jinja2", "httpx")

PROBE = """
import json, sys
from bridge import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
loaded = sorted(set(m.split(".")[0] for m in sys.modules) & set({heavy!r}))
commands = sorted(m for m in sys.modules if m.startswith("bridge.commands.") and "._" not in m)
print(json.dumps({{"code": code, "heavy": loaded, "commands": commands}}))
"""


def probe(*argv) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *map(str, argv)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, cwd=CHECKOUT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_imports_no_command():
    result = probe("--help")
    assert result == {"code": 0, "heavy": [], "commands": []}


def test_a_commands_help_imports_that_command_only():
    result = probe("journal", "--help")
    assert result["code"] == 0 and result["commands"] == ["bridge.commands.journal"]


class AckingListener:
    """A real MLLP listener on a free port that answers each frame with AA."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.server.accept()
        decoder = MllpDecoder(1 << 20)
        with conn:
            while data := conn.recv(65536):
                for message in decoder.feed(data):
                    self.received.append(message)
                    control_id = message.split(b"\r")[0].split(b"|")[9]
                    conn.sendall(frame(b"MSH|^~\\&|FSE|REGIONE|LIS|OSP|20240131101500||ACK^R01|A" + control_id
                                       + b"|P|2.5\rMSA|AA|" + control_id + b"\r"))

    def close(self):
        self.server.close()
        self.thread.join(timeout=10)


def test_send_loads_no_document_library(tmp_path):
    message = tmp_path / "one.hl7"
    message.write_bytes(make_oru("LAZY0001").encode("latin-1"))
    listener = AckingListener()
    try:
        result = probe("send", message, "--host", "127.0.0.1", "--port", listener.port)
    finally:
        listener.close()
    assert [m.split(b"\r")[0].split(b"|")[9] for m in listener.received] == [b"LAZY0001"]
    assert result == {"code": 0, "heavy": [],
                      "commands": ["bridge.commands.send"]}
