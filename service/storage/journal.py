"""I/O layer (local files only): the journal, where writes wait when the database cannot take them in time.

One JSON line per write (`service.storage.writes.encode`), in the order the writes were made. The file is only ever
appended to (`os.write`, then `fsync`, a batch at a time), rewritten whole through a temporary file and
`os.replace`, or unlinked, so a crash leaves the old file or the new one, never a mix. A crash during an append
can leave a torn last line: `recover()` cuts it off before anything else is appended (that write had not been
confirmed to anyone yet).

Hypercorn's worker processes share DB_JOURNAL_PATH, and each must append to, replay and remove only its own
file. So the path is a family of slots: DB_JOURNAL_PATH itself, then `<stem>.1<suffix>`, `<stem>.2<suffix>`, ...
A process owns a slot while it holds an exclusive `flock` on the slot's `.lock` file (never removed: removing a
lock file races with taking it); the kernel drops the lock when the process dies. At start a store claims the
first free slot and adopts what dead processes left in the others.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from service.files import fsync_directory, write_all
from service.storage.writes import JournalError, Write, decode, encode

SLOTS = 64  # worker processes that can journal at once; Heroku's biggest dynos run far fewer


class Journal:
    """One journal file; it exists only while it holds writes not yet in the database."""

    def __init__(self, path: Path, lock_fd: int | None = None) -> None:
        self.path = Path(path)
        self._lock_fd = lock_fd

    @classmethod
    def claim(cls, configured: Path) -> Journal:
        """The first slot of `configured` that no live process holds, held by this process until `release()`."""
        configured.parent.mkdir(parents=True, exist_ok=True)
        for path in _slots(configured):
            fd = _try_lock(path)
            if fd is not None:
                return cls(path, fd)
        raise OSError(errno.EBUSY, f"all {SLOTS} journal slots of {configured} are held by live processes")

    def adopt(self, configured: Path) -> int:
        """Move into this journal what dead processes left in the other slots; the bytes moved."""
        moved = 0
        for path in _slots(configured):
            if path == self.path or not path.exists():
                continue
            fd = _try_lock(path)
            if fd is None:
                continue  # a live process's own journal
            try:
                orphan = Journal(path)
                if orphan.recover():
                    moved += self._append_from(orphan)
                orphan.remove()  # after the copy is fsynced: a crash between the two replays both, harmlessly
            finally:
                os.close(fd)
        return moved

    def release(self) -> None:
        """Let another process claim this slot (and adopt what is left in it)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, writes: Sequence[Write]) -> None:
        """Add `writes` at the end; they survive a crash once this returns."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            write_all(fd, b"".join(encode(write) for write in writes))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_directory(self.path.parent)

    def read(self, offset: int, limit: int) -> tuple[list[Write], int, int]:
        """Up to `limit` writes from byte `offset`: (writes, the offset after them, unreadable lines skipped)."""
        writes: list[Write] = []
        skipped = 0
        try:
            file = self.path.open("rb")
        except FileNotFoundError:
            return writes, offset, skipped
        with file:
            file.seek(offset)
            while len(writes) < limit:
                line = file.readline()
                if not line.endswith(b"\n"):
                    break  # the end, or a line still being appended
                offset += len(line)
                try:
                    writes.append(decode(line))
                except JournalError:
                    skipped += 1
        return writes, offset, skipped

    def recover(self) -> int:
        """Cut off a line a crash left half-written; the size of what is left to replay."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return 0
        try:
            size = os.fstat(fd).st_size
            complete = _complete_length(fd, size)
            if complete < size:
                os.ftruncate(fd, complete)
                os.fsync(fd)
        finally:
            os.close(fd)
        return complete

    def rewrite(self, head: Sequence[Write], offset: int, tail: Sequence[Write]) -> None:
        """Atomically make the journal `head`, then what it holds from `offset` on, then `tail`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, b"".join(encode(write) for write in head))
            for chunk in self._chunks_from(offset):
                write_all(fd, chunk)
            write_all(fd, b"".join(encode(write) for write in tail))
            os.fsync(fd)
        finally:
            os.close(fd)
        temporary.replace(self.path)
        fsync_directory(self.path.parent)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        fsync_directory(self.path.parent)

    def _append_from(self, other: Journal) -> int:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        moved = 0
        try:
            for chunk in other._chunks_from(0):
                write_all(fd, chunk)
                moved += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_directory(self.path.parent)
        return moved

    def _chunks_from(self, offset: int) -> Iterator[bytes]:
        try:
            file = self.path.open("rb")
        except FileNotFoundError:
            return
        with file:
            file.seek(offset)
            while chunk := file.read(1 << 16):
                yield chunk


def _slots(configured: Path) -> Iterator[Path]:
    yield configured
    for number in range(1, SLOTS):
        yield configured.with_name(f"{configured.stem}.{number}{configured.suffix}")


def _try_lock(path: Path) -> int | None:
    """An fd holding the exclusive lock of `path`'s slot, or None if a live process holds it."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _complete_length(fd: int, size: int) -> int:
    """Bytes up to and including the file's last newline."""
    end = size
    while end > 0:
        start = max(0, end - (1 << 16))
        block = os.pread(fd, end - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
