"""Configurations refused at load, with the reason: an own repository (its retrieval service is not
implemented), a fiscal code with a wrong check character, a profile's placeholder left unset."""

import pytest

from bridge import config
from bridge.errors import ConfigError
from fse_helpers import config_table


def load(tmp_path, **sections):
    return config.from_dict(config_table(tmp_path, **sections), base_dir=tmp_path)


def test_own_repository_is_refused_saying_why(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, structure={"repository": "own"})
    assert refused.value.key == "structure.repository"
    assert "retrieval service" in refused.value.message and "does not implement" in str(refused.value)
    for accepted in ("999", "201", "202", "203"):
        assert load(tmp_path, structure={"repository": accepted}).structure.repository == accepted


def test_operator_fiscal_code_check_character(tmp_path):
    assert load(tmp_path, operator={"fiscal_code": "RMSLSO31M04Z404R"}).operator.fiscal_code == "RMSLSO31M04Z404R"
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, operator={"fiscal_code": "RMSLSO31M04Z404X"})   # the check character of ...404R
    assert refused.value.key == "operator.fiscal_code"
    assert "check digit" in str(refused.value) and "RMSLSO31M04Z404X" not in str(refused.value)


@pytest.mark.parametrize("code", ["01386030489", "0138603048", "RMSLSO31M04Z404X"])
def test_structure_fiscal_code_check_character(tmp_path, code):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, structure={"fiscal_code": code})
    assert refused.value.key == "structure.fiscal_code"


def test_a_placeholder_is_refused_until_set(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, application={"vendor": "CHANGE-ME: Fornitore"})
    assert refused.value.key == "application.vendor" and "placeholder" in refused.value.message
