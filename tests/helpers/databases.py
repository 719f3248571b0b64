"""Test databases: a SQLite file, or a fresh database on the real PostgreSQL server CALLSCRIBE_TEST_POSTGRES_URL
names (`.ci/run` starts one; `.ci/postgres start DIR` does the same by hand). Test modules import the
fixtures they use.

Without that variable the PostgreSQL cases skip, unless CI is set: then they fail, so CI cannot skip them
silently. Each test gets its own database (CREATE DATABASE test_<random>, dropped afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from service.storage import migrate
from service.storage.schema import async_url

POSTGRES_URL_VARIABLE = "CALLSCRIBE_TEST_POSTGRES_URL"
# SQLite waits this long for a lock before "database is locked"; short, so an outage shows quickly.
SQLITE_BUSY_TIMEOUT_S = 0.2


def postgres_server_url() -> str:
    """The test server's URL (any database on it, for administration); skips or fails without one."""
    url = os.environ.get(POSTGRES_URL_VARIABLE, "")
    if url:
        return url
    if os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}:
        pytest.fail(f"{POSTGRES_URL_VARIABLE} is not set: CI must run the PostgreSQL tests (see .ci/run)")
    pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set: no PostgreSQL server to test against")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}?timeout={SQLITE_BUSY_TIMEOUT_S}"


def dialect_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


@contextlib.asynccontextmanager
async def postgres_admin(url: str) -> AsyncIterator[AsyncConnection]:
    """An autocommit connection to the server's `postgres` database (CREATE/ALTER/DROP DATABASE need one)."""
    admin_url = make_url(async_url(url)).set(database="postgres")
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            yield connection
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def fresh_postgres_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server, dropped (with any connection left to it) afterwards."""
    name = f"test_{secrets.token_hex(6)}"
    async with postgres_admin(server_url) as admin:
        await admin.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with postgres_admin(server_url) as admin:
            await admin.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def shared_database(kind: str, directory: Path) -> AsyncIterator[str]:
    """A database two service processes share, not yet migrated: a fresh PostgreSQL one, or one SQLite file
    in `directory`, outside either process's own."""
    if kind == "sqlite":
        yield sqlite_url(directory / "shared.sqlite3")
        return
    async with fresh_postgres_database(postgres_server_url()) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a SQLite file in the test's directory, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "callscribe.sqlite3")
        return
    async with fresh_postgres_database(postgres_server_url()) as url:
        yield url


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    """`database_url` with the migrations applied, as `python -m service db upgrade` leaves it."""
    await migrate.upgrade(database_url)
    return database_url


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database, for what only PostgreSQL checks (column lengths, JSON syntax)."""
    async with fresh_postgres_database(postgres_server_url()) as url:
        await migrate.upgrade(url)
        yield url


@contextlib.asynccontextmanager
async def database_down(url: str) -> AsyncIterator[None]:
    """The database refuses the service for the duration, as it does when it goes away, then comes back.

    PostgreSQL: the database stops accepting connections and every open one is terminated (what a restart or a
    failover does to a client). SQLite: another connection holds an exclusive lock, so every write fails with
    "database is locked" (these tests run as root, so taking permissions away would change nothing).
    """
    if dialect_of(url) == "sqlite":
        async with _sqlite_locked(make_url(url).database or ""):
            yield
        return
    name = make_url(url).database
    async with postgres_admin(url) as admin:
        await admin.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.exec_driver_sql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"  # noqa: S608 - ours
        )
    try:
        yield
    finally:
        async with postgres_admin(url) as admin:
            await admin.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@contextlib.asynccontextmanager
async def _sqlite_locked(path: str) -> AsyncIterator[None]:
    # Taken in a thread: a write in progress must be able to finish (it needs the event loop) before we get it.
    connection = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(connection.execute, "BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
    finally:
        connection.close()
