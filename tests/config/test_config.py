import subprocess
import sys
from pathlib import Path

import pytest

from bridge import config
from bridge.errors import ConfigError

CHECKOUT = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    (tmp_path / "mappings").mkdir(exist_ok=True)
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "mappings" / "practitioners.csv").write_text("id,fiscal_code,family,given\n")
    path = tmp_path / "etc" / "bridge.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_embedded_default_loads():
    cfg = config.load(config.DEFAULT_CONFIG)
    assert cfg.mllp.port == 2575
    assert cfg.mllp.max_message_bytes == 4 * 1024 * 1024
    assert cfg.ack.mode == "outcome"
    assert cfg.embedded_gateway
    assert cfg.gateway.paths.replace == "documents/{id}"
    assert cfg.state_dir == CHECKOUT / "var"
    assert cfg.journal.path == CHECKOUT / "var" / "journal.sqlite"
    assert cfg.mapping.dir == CHECKOUT / "mappings"


def test_defaults_and_relative_paths(tmp_path):
    path = write(tmp_path, 'state_dir = "../state"\n[certificates]\ndevelopment = true\n'
                           '[journal]\npath = "j.db"\n[mllp]\nidle_timeout_s = 5\n')
    cfg = config.load(path)
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.journal.path == tmp_path / "state" / "j.db"
    assert cfg.mllp.idle_timeout_s == 5.0 and isinstance(cfg.mllp.idle_timeout_s, float)
    assert cfg.mllp.default_charset == "iso-8859-1"
    assert cfg.structure.fiscal_code == "01386030488"


@pytest.mark.parametrize("text, key", [
    ("[mllp]\nprot = 1\n", "mllp.prot"),
    ("[mllp]\nport = 'x'\n", "mllp.port"),
    ("[mllp]\nport = 70000\n", "mllp.port"),
    ("[mllp]\nport = true\n", "mllp.port"),
    ("[ack]\nmode = 'later'\n", "ack.mode"),
    ("[mllp]\ntls_cert = 'nope.pem'\n", "mllp.tls_cert"),
    ("[mllp]\ndefault_charset = 'klingon'\n", "mllp.default_charset"),
    ("colour = 'blue'\n", "colour"),
    ("[gateway.paths]\nupload = 'x'\n", "gateway.paths.upload"),
    ("[gateway]\nbase_url = 'ftp://x'\n", "gateway.base_url"),
    ("[structure]\nrepository = '204'\n", "structure.repository"),
])
def test_errors_name_file_and_key(tmp_path, text, key):
    prefix, table = (text, "") if not text.startswith("[") else ("", text)
    path = write(tmp_path, prefix + "[certificates]\ndevelopment = true\n" + table)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == key
    assert str(path) in str(info.value)


def test_certificates_required_outside_development(tmp_path):
    path = write(tmp_path, "[mllp]\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == "certificates.auth_cert"


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "none.toml")
    assert "none.toml" in str(info.value)
    path = write(tmp_path, "[mllp\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(path)


def test_passphrase_from_env_and_file(tmp_path, monkeypatch):
    (tmp_path / "pp").write_text("s3cret\n")
    path = write(tmp_path, '[certificates]\ndevelopment = true\nsign_passphrase_file = "../pp"\n'
                           'auth_passphrase_env = "FSE_TEST_PP"\n')
    cfg = config.load(path)
    assert cfg.passphrase("sign") == b"s3cret"
    with pytest.raises(ConfigError) as info:
        cfg.passphrase("auth")
    assert info.value.key == "certificates.auth_passphrase_env"
    monkeypatch.setenv("FSE_TEST_PP", "pw")
    assert cfg.passphrase("auth") == b"pw"


def test_cli_exits_2_naming_file_and_key(tmp_path):
    path = write(tmp_path, "[mllp]\nport = 'x'\n[certificates]\ndevelopment = true\n")
    proc = subprocess.run([sys.executable, "-m", "bridge", "config", "--config", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "mllp.port" in proc.stderr
