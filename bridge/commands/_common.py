"""What several commands share: loading the configuration named by --config."""

from __future__ import annotations

from bridge import config as config_module


def load_config(args) -> config_module.Config:
    return config_module.load(getattr(args, "config", None))
