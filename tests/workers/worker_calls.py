"""Functions the worker-pool tests send to real worker processes (importable by them)."""

import os
import time
from pathlib import Path

from bridge.errors import MissingField


def where(stages, tag):
    """The worker's pid, the configuration it was given, and *tag* back."""
    return os.getpid(), str(stages.config.state_dir), tag


def refuse(stages):
    raise MissingField("no patient id", location="PID^1^3")


def break_down(stages):
    raise ZeroDivisionError("unexpected")


def die(stages):
    os._exit(3)


def die_once(stages, marker):
    """Kills its worker the first time only (the marker file remembers)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died")
        os._exit(3)
    return "second try"


def hang(stages, seconds):
    time.sleep(seconds)
    return "woke"


def unpicklable(stages):
    return lambda: None


def memory(stages):
    """The worker's resident and peak resident memory, in kB (/proc/self/status)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
