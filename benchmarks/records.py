"""I/O helpers the benchmark's child processes share: their own CPU time, and files the runner reads whole."""

from __future__ import annotations

import resource
from pathlib import Path


def own_cpu_seconds() -> float:
    """This process's CPU time so far, user plus system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_atomically(path: Path, text: str) -> None:
    """Write beside `path`, then rename: the runner never reads half a file."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)
