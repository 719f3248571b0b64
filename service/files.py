"""I/O helpers shared by the spool and the journal: whole writes and durable directory changes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    """`os.write` until every byte is written: a single call may write only part (a signal, a full pipe)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_directory(directory: Path) -> None:
    """Make a creation, rename or removal in `directory` durable.

    Some filesystems refuse to open or sync a directory; that costs only durability, so it is not an error.
    """
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
