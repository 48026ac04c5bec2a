"""`twist fse-bridge --config FILE`: the Twisted plug-in runs the same service."""

import os
import re
import signal
import subprocess
import sys
import threading

from fse_helpers import CHECKOUT, config_table, make_oru, to_toml
from mllp_server import MllpClient, msa_fields


def test_plugin_is_found_and_serves_on_the_asyncio_reactor(tmp_path):
    config = tmp_path / "bridge.toml"
    # commit mode: AA once journaled, whatever the document pipeline decides later
    config.write_text(to_toml(config_table(tmp_path, ack={"mode": "commit"})))
    # The checkout on sys.path is what the editable install's .pth provides.
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "twisted", "--log-format", "text", "fse-bridge",
                             "--config", str(config)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, ready = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(30), "".join(lines)
        port = int(re.search(r"listening on [\d.]+:(\d+)", "".join(lines)).group(1))
        with MllpClient(port) as client:
            ack = client.exchange(make_oru("TW1").encode())
            assert msa_fields(ack)[0][:2] == ["AA", "TW1"], (ack, "".join(lines))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        reader.join(30)
    log = "".join(lines)
    assert code == 0, log
    assert "reactor: AsyncioSelectorReactor" in log and "journal closed" in log
