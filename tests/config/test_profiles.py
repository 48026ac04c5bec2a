"""The shipped stage and production profiles are well-formed configuration."""

from pathlib import Path

import pytest

from bridge import config

ETC = Path(__file__).resolve().parents[2] / "etc"


@pytest.mark.parametrize("name, host", [("stage.toml", "fse20gwstage"), ("production.toml", "fse20gw.")])
def test_profiles_parse(name, host, tmp_path):
    import tomllib
    table = tomllib.loads((ETC / name).read_text())
    # Deployment paths do not exist here: keep the keys, drop the existence checks.
    table["mapping"] = {"dir": str(tmp_path), "templates": str(tmp_path), "practitioners": ""}
    cfg = config.from_dict(table, base_dir=ETC)
    assert host in cfg.gateway.base_url
    assert cfg.certificates.sign_passphrase_env == "FSE_BRIDGE_SIGN_PASSPHRASE"
    assert not cfg.certificates.development
