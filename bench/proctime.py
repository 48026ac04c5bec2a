"""CPU time of a benchmarked server process and of its child processes (its workers)."""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """User + system CPU seconds of process *pid* and of its live child processes, all their
    threads (Linux /proc), else None."""
    try:
        fields = _stat(pid)
    except OSError:
        return None
    own, children = int(fields[11]) + int(fields[12]), 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                other = _stat(entry.name)
            except OSError:
                continue
            if other[1] == str(pid):   # its parent
                children += int(other[11]) + int(other[12])
    tick = os.sysconf("SC_CLK_TCK")
    return own / tick, children / tick
