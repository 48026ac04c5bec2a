"""`fse-bridge rules install SOURCE`: install the official CDA XSD and schematrons."""

from __future__ import annotations

import argparse
from pathlib import Path

from bridge.commands._common import load_config
from bridge.cda.rules import install_rules


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    install = sub.add_parser(
        "install", help="install from SOURCE into the rules folder",
        description="Copy schema/POCD_MT000040UV02/*.xsd and the latest schematron/*.sch per "
                    "document type from SOURCE (a folder, a .zip/.tar/.tar.gz archive, or an "
                    "http(s) URL of one, such as the official catalogue repository's archive) "
                    "into the rules folder, with index.json saying which schematron serves "
                    "which template root and version.")
    install.add_argument("source", metavar="SOURCE")
    install.add_argument("--rules-dir", metavar="DIR",
                         help="target folder (default: validation.rules_dir of the configuration)")
    # Also accept --config after the action (the CLI adds it before it).
    install.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run(args) -> int:
    rules_dir = Path(args.rules_dir) if args.rules_dir else load_config(args).validation.rules_dir
    report = install_rules(args.source, rules_dir)
    print("\n".join(report.lines()))
    return 0
