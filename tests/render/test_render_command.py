"""`fse-bridge render FILE.hl7`: output, files, validation summary, failures naming the field."""

from __future__ import annotations


from lxml import etree

from bridge import cli

from .conftest import EXAMPLES, REFERENCE

H = "{urn:hl7-org:v3}"


def run(capsys, *args):
    code = cli.main(["render", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_render_with_validation(tmp_path, capsys):
    code, out, err = run(capsys, EXAMPLES / "lab.hl7", "--out", tmp_path, "--rules", REFERENCE)
    assert code == 0, err
    assert "document type: LAB" in out
    assert "action: publish" in out
    assert "validation: LAB (XSD + schematronFSE_LAB_v27.1.sch): valid" in out
    written = tmp_path / "2.16.840.1.113883.2.9.2.90.4.4_01386030488.LAB.999.A26-00412_1.xml"
    assert written.is_file()
    assert etree.fromstring(written.read_bytes()).find(f"{H}versionNumber").get("value") == "1"


def test_render_replacement(tmp_path, capsys):
    previous = "2.16.840.1.113883.2.9.2.90.4.4^01386030488.LAB.999.A26-00412_1"
    code, out, err = run(capsys, EXAMPLES / "lab-correction.hl7", "--out", tmp_path, "--rules", REFERENCE,
                         "--previous-id", previous, "--previous-version", "1")
    assert code == 0, err
    assert "(version 2)" in out
    root = etree.fromstring((tmp_path / "2.16.840.1.113883.2.9.2.90.4.4_01386030488.LAB.999.A26-00412_2.xml")
                            .read_bytes())
    assert root.find(f"{H}setId").get("extension") == "01386030488.LAB.999.A26-00412_1"
    assert len(root.findall(f"{H}relatedDocument")) == 1


def test_previous_id_needs_previous_version(tmp_path, capsys):
    code, _, err = run(capsys, EXAMPLES / "lab.hl7", "--out", tmp_path, "--previous-id", "a^b")
    assert code == 2 and "go together" in err


def test_cancellation_writes_nothing(tmp_path, capsys):
    code, out, _ = run(capsys, EXAMPLES / "lab-cancel.hl7", "--out", tmp_path, "--rules", REFERENCE)
    assert code == 0
    assert "action: delete" in out
    assert list(tmp_path.iterdir()) == []


def test_mapping_failure_names_the_field(tmp_path, capsys):
    text = (EXAMPLES / "lab.hl7").read_bytes().replace(b"RMSLSO31M04Z404R", b"RMSLSO31M04Z404X")
    source = tmp_path / "bad.hl7"
    source.write_bytes(text)
    code, _, err = run(capsys, source, "--out", tmp_path / "out")
    assert code == 1
    assert "PID^1^3" in err and "102" in err
    assert not (tmp_path / "out").exists()


def test_validation_off_says_how_to_install(tmp_path, capsys):
    code, out, _ = run(capsys, EXAMPLES / "rad.hl7", "--out", tmp_path, "--rules", tmp_path / "no-rules")
    assert code == 0
    assert "validation: OFF" in out
    assert "fse-bridge rules install" in out
    assert len(list(tmp_path.glob("*.xml"))) == 1


def test_unreadable_file(tmp_path, capsys):
    code, _, err = run(capsys, tmp_path / "missing.hl7", "--out", tmp_path)
    assert code == 2 and "cannot read" in err


def test_every_example_renders_clean(tmp_path, capsys):
    for name in ("lab", "rad", "rsa", "rap", "ldo"):
        code, out, err = run(capsys, EXAMPLES / f"{name}.hl7", "--out", tmp_path, "--rules", REFERENCE)
        assert code == 0, (name, out, err)
        assert ": valid" in out, name
