"""I/O layer: CPU time and resident memory of a process tree, read from Linux's /proc.

Hypercorn with `--workers 1` is a supervisor plus a spawned worker (and multiprocessing's resource tracker), so
the service's cost is the sum over the whole tree. A process's utime+stime covers all of its threads. CPU time
of a process that exits is lost from the sum, which is fine here: the tree is stable while calls run.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # utime/stime unit, usually 100 per second (10 ms resolution)
KIB = 1024


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) is in parentheses and may hold spaces; the fields after its ")" split cleanly.
    text = (PROC / str(pid) / "stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """`root` and every live process below it (found by each process's parent pid: /proc has no child lists here)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        children.setdefault(parent, []).append(int(entry.name))
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        tree.append(pid)
        frontier.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds summed over `pids`."""
    return sum(map(cpu_seconds, pids))


def tree_rss_bytes(pids: list[int]) -> int:
    """VmRSS summed over `pids`."""
    return sum(map(rss_bytes, pids))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads); 0 if it has exited."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (VmRSS); 0 if it has exited."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    except OSError:
        pass
    return 0
