"""`install_rules` from a folder, zip, tar.gz and an http URL, keeping the latest schematron per type."""

import io
import json
import shutil
import tarfile
import threading
import zipfile
from functools import partial
from pathlib import Path
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bridge.cda.rules import InstallError, install_rules
from bridge.cda.validate import RulesError, load_rules, validate_cda
from .validate_support import REFERENCE, sample

TOP = "it-fse-catalogs-main"
EXPECTED = {
    "LAB": "schematronFSE_LAB_v27.1.sch",
    "RAD": "schematronFSE_RAD_v4.2.sch",  # the newer copy made below
    "RSA": "schematron_RSA_v8.3.sch",
    "RAP": "schematronFSE_RAP_1.4.sch",
    "LDO": "schematronFSE_LDO_v5.5.sch",
}


@pytest.fixture
def catalogue(tmp_path):
    """A folder laid out like the official catalogue repository's archive."""
    root = tmp_path / "src" / TOP
    shutil.copytree(REFERENCE / "schema" / "POCD_MT000040UV02", root / "schema" / "POCD_MT000040UV02")
    (root / "schema" / "POCD_HD000040").mkdir()
    (root / "schema" / "POCD_HD000040" / "CDA.xsd").write_text("not the schema we use")
    shutil.copytree(REFERENCE / "schematron", root / "schematron")
    sch = root / "schematron"
    # Two versions of a type: 9.9 sorts after 27.1 as text but is older; 4.2 is newer than 4.1.
    shutil.copy(sch / "schematronFSE_LAB_v27.1.sch", sch / "schematronFSE_LAB_v9.9.sch")
    shutil.copy(sch / "schematronFSE_RAD_v4.1.sch", sch / "schematronFSE_RAD_v4.2.sch")
    (sch / "schematronFSE_LAB.sch").write_text("no version in the name: ignored")
    (sch / "schematron_PSS_v4.0.sch").write_text("another document type: ignored")
    (root / "terminology").mkdir()
    (root / "terminology" / "2.16.840.1.113883.5.1.csv").write_text("version,code\n")
    return root


def zip_folder(folder, target):
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return target


def assert_installed(report, rules_dir):
    assert {f.doc_type.name: f.path.name for f in report.schematrons} == EXPECTED
    assert sorted(p.name for p in (rules_dir / "schematron").iterdir()) == sorted(EXPECTED.values())
    assert "schematronFSE_LAB_v9.9.sch" in report.skipped and "schematronFSE_RAD_v4.1.sch" in report.skipped
    assert (rules_dir / "schema" / "POCD_MT000040UV02" / "POCD_MT000040UV02.xsd").is_file()
    assert not (rules_dir / "schema" / "POCD_HD000040").exists()
    index = json.loads((rules_dir / "index.json").read_text())
    served = {e["template_root"]: (e["type"], e["version"], e["file"]) for e in index["schematron"]}
    assert served["2.16.840.1.113883.2.9.10.1.7.1"] == ("RAD", "4.2", "schematron/schematronFSE_RAD_v4.2.sch")
    assert served["2.16.840.1.113883.2.9.10.1.1"] == ("LAB", "27.1", "schematron/schematronFSE_LAB_v27.1.sch")
    assert len(served) == 5
    rules = load_rules(rules_dir)
    for doc_type in ("LAB", "RAD"):
        report = validate_cda(sample(doc_type), rules)
        assert report.ok and report.schematron == EXPECTED[doc_type]


def test_install_from_folder(catalogue, tmp_path):
    rules_dir = tmp_path / "rules"
    report = install_rules(str(catalogue), rules_dir)
    assert_installed(report, rules_dir)
    text = "\n".join(report.lines())
    assert "RAD: schematronFSE_RAD_v4.2.sch (version 4.2, template root 2.16.840.1.113883.2.9.10.1.7.1)" in text


def test_install_from_folder_above_the_layout(catalogue, tmp_path):
    rules_dir = tmp_path / "rules"
    assert_installed(install_rules(str(catalogue.parent), rules_dir), rules_dir)


def test_install_from_zip(catalogue, tmp_path):
    archive = zip_folder(catalogue, tmp_path / "catalogue.zip")
    rules_dir = tmp_path / "rules"
    assert_installed(install_rules(str(archive), rules_dir), rules_dir)


def test_install_from_tar_gz(catalogue, tmp_path):
    archive = tmp_path / "catalogue.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(catalogue, arcname=TOP)
    rules_dir = tmp_path / "rules"
    assert_installed(install_rules(str(archive), rules_dir), rules_dir)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def http_folder(tmp_path):
    """Serve tmp_path/www over http on a free local port; yields (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_install_from_http_url(catalogue, tmp_path, http_folder):
    www, base = http_folder
    zip_folder(catalogue, www / "main.zip")
    rules_dir = tmp_path / "rules"
    report = install_rules(f"{base}/main.zip", rules_dir)
    assert_installed(report, rules_dir)
    assert report.source == f"{base}/main.zip"


def test_install_from_missing_url(tmp_path, http_folder):
    _, base = http_folder
    with pytest.raises(InstallError, match="HTTP 404"):
        install_rules(f"{base}/missing.zip", tmp_path / "rules")


def test_reinstall_replaces_the_schematrons(catalogue, tmp_path):
    rules_dir = tmp_path / "rules"
    install_rules(str(catalogue), rules_dir)
    (rules_dir / "notes.txt").write_text("left alone")
    report = install_rules(str(REFERENCE), rules_dir)
    assert {f.doc_type.name: f.path.name for f in report.schematrons}["RAD"] == "schematronFSE_RAD_v4.1.sch"
    assert sorted(p.name for p in (rules_dir / "schematron").iterdir()) == sorted(
        p.name for p in (REFERENCE / "schematron").iterdir())
    assert (rules_dir / "notes.txt").read_text() == "left alone"
    assert [p.name for p in rules_dir.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_archive_members_cannot_escape(catalogue, tmp_path):
    archive = zip_folder(catalogue, tmp_path / "attack.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(f"{TOP}/schematron/../../../../evil_LDO_v99.sch", "x")
        zf.writestr("/tmp/evil_LDO_v98.sch", "x")
        zf.writestr(f"{TOP}/schema/POCD_MT000040UV02/../../../evil.xsd", "x")
    tar = tmp_path / "attack.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(catalogue, arcname=TOP)
        link = tarfile.TarInfo(f"{TOP}/schematron/schematronFSE_LDO_v9.0.sch")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
        data = b"x"
        member = tarfile.TarInfo("../evil_RAP_v9.sch")
        member.size = len(data)
        tf.addfile(member, io.BytesIO(data))
    for source in (archive, tar):
        rules_dir = tmp_path / f"rules-{source.suffix[1:]}"
        report = install_rules(str(source), rules_dir)
        assert {f.doc_type.name: f.path.name for f in report.schematrons} == EXPECTED
    assert list(tmp_path.parent.rglob("evil*")) == []
    assert not Path("/tmp/evil_LDO_v98.sch").exists()


def test_source_without_the_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InstallError, match="no schema/POCD_MT000040UV02/CDA.xsd found"):
        install_rules(str(tmp_path / "empty"), tmp_path / "rules")
    (tmp_path / "junk.bin").write_bytes(b"neither zip nor tar")
    with pytest.raises(InstallError, match="neither a folder nor a zip/tar archive"):
        install_rules(str(tmp_path / "junk.bin"), tmp_path / "rules")
    with pytest.raises(InstallError, match="no such file or folder"):
        install_rules(str(tmp_path / "absent"), tmp_path / "rules")


def test_broken_schematron_keeps_the_installed_rules(catalogue, tmp_path):
    rules_dir = tmp_path / "rules"
    install_rules(str(REFERENCE), rules_dir)
    (catalogue / "schematron" / "schematronFSE_LAB_v28.0.sch").write_text("<schema")
    with pytest.raises(RulesError, match="schematronFSE_LAB_v28.0.sch"):
        install_rules(str(catalogue), rules_dir)
    assert sorted(p.name for p in (rules_dir / "schematron").iterdir()) == sorted(
        p.name for p in (REFERENCE / "schematron").iterdir())
    assert validate_cda(sample("LAB"), load_rules(rules_dir)).ok


def test_damaged_archive_and_unwritable_target(catalogue, tmp_path):
    archive = zip_folder(catalogue, tmp_path / "catalogue.zip")
    data = bytearray(archive.read_bytes())
    start = data.index(b"<schema") if b"<schema" in data else len(data) // 3
    data[start:start + 64] = b"\0" * 64  # stored members: a CRC mismatch on read
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    with pytest.raises(InstallError, match="damaged archive"):
        install_rules(str(damaged), tmp_path / "rules")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(InstallError, match="a-file"):
        install_rules(str(catalogue), tmp_path / "a-file" / "rules")
