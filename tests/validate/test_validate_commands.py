"""`fse-bridge validate` and `fse-bridge rules install` through the real CLI entry point."""

import json

from bridge.cli import main
from .validate_support import CHECKOUT, REFERENCE, SAMPLES, TYPES, mutate, sample, NS


def write_config(tmp_path, rules_dir):
    """A minimal configuration whose validation.rules_dir is *rules_dir*."""
    (tmp_path / "mappings").mkdir(exist_ok=True)
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "mappings" / "practitioners.csv").write_text("id,fiscal_code,family,given\n")
    path = tmp_path / "etc" / "bridge.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'[certificates]\ndevelopment = true\n[validation]\nrules_dir = "{rules_dir}"\n')
    return path


def test_official_samples_pass_with_relative_rules(monkeypatch, capsys):
    monkeypatch.chdir(CHECKOUT)
    for doc_type in TYPES:
        code = main(["validate", str(SAMPLES / f"{doc_type}.xml"), "--rules", str(REFERENCE)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert f": {doc_type} (XSD + " in out and "): valid" in out
        assert "ERROR" not in out


def test_failures_print_rule_id_and_location(tmp_path, capsys):
    def no_legal_authenticator(root):
        root.remove(root.find("h:legalAuthenticator", NS))

    broken = tmp_path / "broken.xml"
    broken.write_bytes(mutate(sample("RAP"), no_legal_authenticator))
    code = main(["validate", str(broken), "--rules", str(REFERENCE)])
    out = capsys.readouterr().out
    assert code == 1
    assert "INVALID: 1 schematron error(s)" in out
    assert "  ERROR ERRORE-22 at /ClinicalDocument[1]: " in out


def test_type_option(capsys):
    code = main(["validate", str(SAMPLES / "RAD.xml"), "--rules", str(REFERENCE), "--type", "lab"])
    out = capsys.readouterr().out
    assert code == 1 and "LAB (XSD + schematronFSE_LAB_v27.1.sch)" in out


def test_no_rules_installed_says_how_to_install(tmp_path, capsys):
    code = main(["validate", str(SAMPLES / "LAB.xml"), "--rules", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 3
    assert "LOCAL VALIDATION IS OFF" in err and "fse-bridge rules install" in err


def test_unreadable_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "absent.xml"), "--rules", str(REFERENCE)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_rules_install_then_validate_with_the_configured_folder(tmp_path, capsys):
    rules_dir = tmp_path / "var" / "rules"
    config = write_config(tmp_path, rules_dir)
    assert main(["validate", str(SAMPLES / "LDO.xml"), "--config", str(config)]) == 3
    capsys.readouterr()

    # --config is accepted after the action too; the target comes from validation.rules_dir.
    assert main(["rules", "install", str(REFERENCE), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"installed into {rules_dir}" in out
    assert "LDO: schematronFSE_LDO_v5.5.sch (version 5.5, template root 2.16.840.1.113883.2.9.10.1.5)" in out
    assert json.loads((rules_dir / "index.json").read_text())["source"] == str(REFERENCE)

    assert main(["validate", str(SAMPLES / "LDO.xml"), "--config", str(config)]) == 0
    assert "LDO (XSD + schematronFSE_LDO_v5.5.sch): valid" in capsys.readouterr().out


def test_rules_install_error_exits_1(tmp_path, capsys):
    code = main(["rules", "install", str(tmp_path / "absent"), "--rules-dir", str(tmp_path / "rules")])
    assert code == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_xsd_failure_prints_syntax_errors_only(tmp_path, capsys):
    broken = tmp_path / "syntax.xml"
    broken.write_bytes(sample("RSA").replace(b"<realmCode", b"<unexpected/><realmCode", 1))
    code = main(["validate", str(broken), "--rules", str(REFERENCE)])
    out = capsys.readouterr().out
    assert code == 1
    assert "RSA (XSD): INVALID: 1 XSD error(s), schematron not run" in out
    assert "  XSD ERROR SCHEMAV_ELEMENT_CONTENT at line " in out and "/ClinicalDocument[1]/unexpected[1]" in out
