"""Storage layer: the schema's Alembic migrations, run from code (`python -m service db upgrade`, the Procfile's
`release:` line; a SQLite file at start-up, `upgrade_sqlite`).

Alembic is configured here rather than in an alembic.ini: the script directory is `service/storage/migrations/`,
and each command runs on a connection from `schema.create_engine` inside one transaction, so an upgrade that
fails part-way on PostgreSQL leaves the schema as it was. Nothing here prints or logs the URL: it may carry a
password.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from service.storage.migrations import HEAD_REVISION
from service.storage.schema import async_url, create_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"  # Alembic's own: one row, the revision the schema is at


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for our script directory, running on `connection` if one is given."""
    # Alembic (and Mako and Pygments through it) is loaded only to migrate: the checks below read its table
    # with one query, so a start-up that finds the schema at head never imports it (~0.15 s of CPU).
    from alembic.config import Config  # noqa: PLC0415

    alembic_config = Config()
    alembic_config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        alembic_config.attributes["connection"] = connection  # env.py runs the migrations on it
    return alembic_config


def head() -> str:
    """The newest revision: what `upgrade` brings a database to."""
    return HEAD_REVISION


async def upgrade(url: str, revision: str = "head") -> None:
    """Apply every migration up to `revision`; a database already there is left alone."""
    from alembic import command  # noqa: PLC0415 - see config()

    await _run(url, lambda connection: command.upgrade(config(connection), revision))


async def downgrade(url: str, revision: str = "base") -> None:
    """Undo migrations down to `revision` ("base": no tables left but Alembic's own)."""
    from alembic import command  # noqa: PLC0415 - see config()

    await _run(url, lambda connection: command.downgrade(config(connection), revision))


def revision_on(connection: Connection) -> str | None:
    """The revision the schema is at, read from Alembic's table; None where no migration ran.

    The history has one line, so the table has one row; were there several (branches), their names joined
    match no head, and the schema counts as not migrated.
    """
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()  # noqa: S608
    return ",".join(sorted(rows)) or None


async def current_revision(url: str) -> str | None:
    """The revision the database is at; None for a database no migration has touched."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(revision_on)
    finally:
        await engine.dispose()


async def is_at_head(url: str) -> bool:
    return await current_revision(url) == head()


async def connection_at_head(connection: AsyncConnection) -> bool:
    """`is_at_head` on a connection the caller already holds (`/readyz`: no engine of its own per request)."""
    return await connection.run_sync(revision_on) == head()


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite DATABASE_URL names; None for PostgreSQL or an in-memory SQLite database."""
    parsed = make_url(async_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in {None, "", ":memory:"}:
        return None
    return Path(parsed.database)


def sqlite_open_problem(url: str) -> str | None:
    """Why a SQLite DATABASE_URL's file cannot be opened, or None (also for PostgreSQL and in-memory SQLite).

    Checked with the standard library before aiosqlite is asked: when aiosqlite fails to open a file, its worker
    thread still has a step to hand back to the event loop, and a command's short `asyncio.run` has closed that
    loop by then ("Exception in thread ... Event loop is closed" after the real error). Never names the path.
    """
    path = sqlite_file(url)
    if path is None:
        return None
    if not path.exists():
        return None if path.resolve().parent.is_dir() else "the SQLite file's directory does not exist"
    if not path.is_file():
        return "the SQLite path is not a file"
    try:
        sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True).close()
    except sqlite3.Error as exc:
        return f"the SQLite file cannot be opened ({type(exc).__name__})"
    return None


async def upgrade_sqlite(url: str) -> tuple[str | None, str] | None:
    """Bring a SQLite file's schema to head at start-up: (revision before, head) when it moved, else None.

    Several Hypercorn workers start at once on the same file: an flock on `<file>.migrate.lock` lets one of
    them migrate while the others wait, and find the schema at head when their turn comes.
    """
    path = sqlite_file(url)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".migrate.lock")
    async with _locked(lock):
        before, newest = await current_revision(url), head()
        if before == newest:
            return None
        await upgrade(url)
        return before, newest


@contextlib.asynccontextmanager
async def _locked(lock: Path) -> AsyncIterator[None]:
    with lock.open("a") as handle:
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)  # blocks: not on the event loop
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def current(url: str) -> str | None:
    """`current_revision`, for callers without an event loop (the command line)."""
    return asyncio.run(current_revision(url))


def check(url: str) -> bool:
    """True when the database is at the newest revision, so the service can use it as it is."""
    return asyncio.run(is_at_head(url))


async def _run(url: str, action: Callable[[Connection], None]) -> None:
    engine = create_engine(url)
    try:
        # One transaction: PostgreSQL's DDL is transactional, so a failed upgrade changes nothing.
        async with engine.begin() as connection:
            await connection.run_sync(action)
    finally:
        await engine.dispose()
