"""A failing command says one line, names its input and exits with the documented status;
the traceback only with --debug."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.errors import EXIT_MEANINGS, ExitCode
from bridge.journal.sqlite import SqliteStore
from fse_helpers import CHECKOUT, REFERENCE, config_table, to_toml

SAMPLE = REFERENCE / "cda" / "samples" / "LAB.xml"
#: Deeper than the page is wide: the PDF stage's layout library raises (not a BridgeError).
NESTING = 30


def fse_bridge(*argv, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *map(str, argv)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, cwd=CHECKOUT)


def assert_one_line(done: subprocess.CompletedProcess, *names: str) -> str:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "bridge.toml"
    path.write_text(to_toml(config_table(tmp_path / "var")))
    return path


@pytest.fixture
def damaged_journal(tmp_path, config_file):
    """A real journal whose pages after the header are overwritten, as a bad disk or a copy would."""
    path = tmp_path / "var" / "journal.sqlite"
    path.parent.mkdir()
    SqliteStore(path).close()
    data = bytearray(path.read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("argv", [("list",), ("show", "LAB0001")])
def test_damaged_journal_is_one_line_and_exit_4(config_file, damaged_journal, argv):
    done = fse_bridge("journal", *argv, "--config", config_file)
    assert done.returncode == ExitCode.JOURNAL_DAMAGED == 4
    line = assert_one_line(done, str(damaged_journal), "damaged", "backup")
    assert line.startswith("fse-bridge journal: ")


def test_serve_on_a_damaged_journal_exits_4_without_traceback(config_file, damaged_journal):
    done = fse_bridge("serve", "--config", config_file)
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    assert f"the journal {damaged_journal} is damaged" in done.stderr


def nested_tables_cda() -> bytes:
    lab = SAMPLE.read_bytes()
    cell = lab.index(b"<td>")
    end = lab.index(b"</td>", cell) + len(b"</td>")
    nested = b"<table><tbody><tr><td>" * NESTING + b"x" + b"</td></tr></tbody></table>" * NESTING
    return lab[:cell] + b"<td>" + nested + b"</td>" + lab[end:]


def test_package_failing_in_the_pdf_stage_is_one_line(tmp_path, config_file):
    cda = tmp_path / "deep.xml"
    cda.write_bytes(nested_tables_cda())
    out = tmp_path / "deep.pdf"
    done = fse_bridge("package", cda, "--out", out, "--unsigned", "--config", config_file)
    assert done.returncode == ExitCode.FAILED == 1
    line = assert_one_line(done, str(cda), "--debug")
    assert line.startswith("fse-bridge package: ")
    assert not out.exists()

    debug = fse_bridge("--debug", "package", cda, "--out", out, "--unsigned", "--config", config_file)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and str(cda) in debug.stderr.strip().splitlines()[-1]


def test_usage_error_exits_2():
    done = fse_bridge("send")
    assert done.returncode == ExitCode.USAGE == 2 and "Traceback" not in done.stderr


def test_configuration_error_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[mllp]\nport = 'x'\n")
    done = fse_bridge("journal", "list", "--config", bad)
    assert done.returncode == 2
    assert_one_line(done, str(bad), "mllp.port")


def test_every_command_documents_its_exit_statuses(capsys):
    from bridge import cli
    from bridge.commands import COMMANDS

    for name, command in COMMANDS.items():
        with pytest.raises(SystemExit) as stop:
            cli.main([name, "--help"])
        assert stop.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert f"exit status: 0 done; 1 {' '.join(command.failed.split())}; 2 usage or configuration error" \
            in text, name
        for code in command.exits:
            assert f"{int(code)} {EXIT_MEANINGS[code]}" in text, name


def test_journal_help_still_lists_its_actions_and_options(capsys):
    from bridge import cli

    with pytest.raises(SystemExit):
        cli.main(["journal", "--help"])
    text = capsys.readouterr().out
    assert all(action in text for action in ("list", "show", "export", "resubmit", "update-metadata", "purge"))
    with pytest.raises(SystemExit):
        cli.main(["journal", "purge", "--help"])
    assert "--vacuum" in capsys.readouterr().out


def test_readme_and_systemd_unit_carry_the_exit_statuses():
    readme = (CHECKOUT / "README.md").read_text(encoding="utf-8")
    for code in EXIT_MEANINGS:
        assert f"\n| {int(code)} | " in readme
    unit = (CHECKOUT / "etc" / "fse-bridge.service").read_text()
    assert f"RestartPreventExitStatus={int(ExitCode.USAGE)} {int(ExitCode.JOURNAL_DAMAGED)}\n" in unit
