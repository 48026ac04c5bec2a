"""`fse-bridge config`: check a configuration file and print the resolved settings."""

from __future__ import annotations

import dataclasses

from bridge.commands._common import load_config


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    config = load_config(args)

    def show(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                show(value, f"{prefix}{f.name}.")
            else:
                print(f"{prefix}{f.name} = {value}")

    show(config)
    return 0
