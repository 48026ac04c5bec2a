"""`fse-bridge simulator [--port P]`: run the embedded CART gateway simulator alone.

Listens on ``[simulator]`` host/port (TLS and client certificates when
configured), keeps its registry at ``simulator.registry`` and validates CDAs
with the installed rules (``validation.rules_dir``) when there are any.
Prints the base URL to give to ``fse-bridge submit --url`` or ``gateway.base_url``.
"""

from __future__ import annotations

import dataclasses

from twisted.internet import reactor   # the default reactor: this module is imported only to run the command

from bridge import certs
from bridge.commands._common import load_config
from bridge.simulator import start_simulator


def add_arguments(parser) -> None:
    parser.add_argument("--port", type=int, help="port (default: simulator.port; 0 = any free port)")
    parser.add_argument("--host", help="interface (default: simulator.host)")
    parser.add_argument("--no-rules", action="store_true", help="skip XSD/schematron validation")


def run(args) -> int:
    config = load_config(args)
    changes = {k: v for k, v in (("port", args.port), ("host", args.host)) if v is not None}
    if changes:
        config = dataclasses.replace(config, simulator=dataclasses.replace(config.simulator, **changes))

    certs.ensure_development_certificates(config)
    handle = start_simulator(config, reactor, rules=False if args.no_rules else None)
    rules = "validation on" if handle.simulator.rules else "no rules installed: XSD/schematron skipped"
    print(f"gateway simulator listening on {handle.url} ({rules}; registry {config.simulator.registry})",
          flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", handle.stop)
    reactor.run()
    return 0
