"""The `fse-bridge` command line.

Each command is a module in :mod:`bridge.commands` with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; this module only finds
them, parses the arguments and turns errors into exit codes: a configuration
error exits 2 naming the file and the key, any other BridgeError exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from bridge import __version__, commands
from bridge.errors import BridgeError, ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fse-bridge",
        description="HL7 v2 (MLLP) to FSE 2.0 bridge for the Regione Toscana gateway.")
    parser.add_argument("--version", action="version", version=f"fse-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bridge.commands.{info.name}")
        name = getattr(module, "NAME", info.name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        command.add_argument("--config", metavar="FILE",
                             help="configuration file (default: ./etc/bridge.toml, else the checkout's)")
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # httpx logs every request URL at INFO; the gateway client logs each call itself.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.run(args) or 0)
    except ConfigError as exc:
        print(f"fse-bridge {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except BridgeError as exc:
        print(f"fse-bridge {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
