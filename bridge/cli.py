"""The `fse-bridge` command line.

The commands' names and one-line help come from :data:`bridge.commands.COMMANDS`;
only the module of the command being run is imported (its options are added to
its sub-parser then). Every failure ends as one line on stderr naming the input
and the cause, with the exit status of :class:`bridge.errors.ExitCode`; the
traceback goes to the log at DEBUG, which reaches the terminal only with --debug.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from bridge import __version__
from bridge.commands import COMMANDS, Command, module_name
from bridge.commands._common import describe_failure
from bridge.errors import EXIT_MEANINGS, ExitCode

log = logging.getLogger("bridge.cli")


def exit_epilog(command: Command) -> str:
    """The exit statuses of one command, for its --help."""
    statuses = [(ExitCode.DONE, EXIT_MEANINGS[ExitCode.DONE]), (ExitCode.FAILED, command.failed),
                (ExitCode.USAGE, EXIT_MEANINGS[ExitCode.USAGE])]
    statuses += [(code, EXIT_MEANINGS[code]) for code in command.exits]
    return "exit status: " + "; ".join(f"{int(code)} {meaning}" for code, meaning in statuses)


def chosen_command(argv: list[str]) -> str | None:
    """The command named on the line: the first word before which only global options come."""
    for word in argv:
        if word == "--" or not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command with its one-line help; *command* also with its own options (its module imported)."""
    parser = argparse.ArgumentParser(
        prog="fse-bridge",
        description="HL7 v2 (MLLP) to FSE 2.0 bridge for the Regione Toscana gateway.",
        epilog="exit status: " + "; ".join(f"{int(c)} {m}" for c, m in EXIT_MEANINGS.items()))
    parser.add_argument("--version", action="version", version=f"fse-bridge {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="log at DEBUG and show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, info in COMMANDS.items():
        child = sub.add_parser(name, help=info.help, description=info.help, epilog=exit_epilog(info))
        child.add_argument("--config", metavar="FILE",
                           help="configuration file (default: ./etc/bridge.toml, else the checkout's)")
        child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if name == command:
            module = importlib.import_module(module_name(name))
            module.add_arguments(child)
            child.set_defaults(run=module.run)
    return parser


def _configure_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # httpx logs every request URL at INFO; the gateway client logs each call itself.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    elif debug:
        logging.getLogger().setLevel(level)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser(chosen_command(argv)).parse_args(argv)
    _configure_logging(args.debug)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`journal list | head`): nothing more to say, and nobody to say it to.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.FAILED
    except Exception as exc:  # every failure: one line for the user, the traceback in the log
        code, line = describe_failure(exc, args)
        log.debug("fse-bridge %s failed", args.command, exc_info=True)
        print(f"fse-bridge {args.command}: {line}", file=sys.stderr)
        return code
