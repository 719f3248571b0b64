"""I/O adapter: the server's secret the page's sessions and forms are signed with.

SESSION_SECRET when set (on Heroku, app.json generates it). Unset, a local run makes a random one once and keeps
it in a file beside the journal (DB_JOURNAL_PATH's directory, by default the working directory, where the
default SQLite file is too), mode 0600, so sessions outlive a restart and every worker on the machine agrees.
The file appears whole or not at all (written aside, then linked into place; `link` refuses to replace), so
workers starting together all read the one that won. A file rather than a database row: the service starts
and serves calls while its database is down (the journal), and the page's login should not wait for it either.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from service.files import fsync_directory, write_all
from service.settings import MIN_SECRET_LENGTH, SESSION_SECRET_FILE, Settings


@dataclass(frozen=True, slots=True, repr=False)
class ServerSecret:
    """The secret, and where it came from (for the start-up line: never the value)."""

    value: bytes
    source: str


def server_secret(settings: Settings) -> ServerSecret:
    if settings.session_secret is not None:
        return ServerSecret(settings.session_secret.get_secret_value().encode(), "SESSION_SECRET")
    path = settings.db_journal_path.parent / SESSION_SECRET_FILE
    return ServerSecret(kept_secret(path), str(path))


def kept_secret(path: Path) -> bytes:
    """The secret kept at `path`, made first when there is none."""
    if not path.exists():
        _make(path)
    value = path.read_bytes().strip()
    if len(value) < MIN_SECRET_LENGTH:
        raise RuntimeError(
            f"{path} holds no secret callscribe made ({len(value)} bytes): delete it so a new one is made "
            "(which ends every session), or set SESSION_SECRET"
        )
    return value


def _make(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, secrets.token_hex(32).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):  # another worker made it first: its secret is the one
            os.link(aside, path)
    finally:
        aside.unlink()
    fsync_directory(path.parent)
