"""The busy answer /voice, /media and /readyz share: shutting down, or at MAX_CALLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from service.calls.registry import Calls
from service.metrics import CALLS_ACTIVE
from service.storage import migrate
from service.web.readiness import NOT_MIGRATED, Readiness, busy_reason
from tests.helpers.databases import fresh_postgres_database, postgres_server_url, sqlite_url
from tests.helpers.service import make_settings, running_service


@pytest.mark.parametrize(
    ("accepting", "started_calls", "waiting", "busy"),
    [
        (True, 0, 0, None),
        (True, 1, 0, None),
        (True, 2, 0, "callscribe is at MAX_CALLS (2)"),
        (True, 1, 3, None),  # sockets that have not started take no call's place
        (False, 0, 0, "shutting down"),
        (False, 2, 0, "shutting down"),  # shutting down says more than being full
    ],
)
def test_busy_reason(accepting: bool, started_calls: int, waiting: int, busy: str | None) -> None:
    calls = Calls(max_calls=2)
    calls.accepting = accepting
    fake_sessions: list[Any] = [object() for _ in range(started_calls + waiting)]
    for session in fake_sessions:
        calls.add(session)
    try:
        for session in fake_sessions[:started_calls]:
            calls.started(session)
        assert calls.waiting == waiting
        assert busy_reason(calls, make_settings(max_calls=2)) == busy
    finally:
        CALLS_ACTIVE.dec(len(fake_sessions))  # `add` counted them in the process-wide gauge


@pytest.mark.parametrize(
    ("checks", "ready"),
    [
        ({}, True),
        ({"calls": "ok", "database": "ok"}, True),
        ({"calls": "ok", "database": "unreachable (OSError)"}, False),
    ],
)
def test_ready_only_when_every_check_is_ok(checks: dict[str, str], ready: bool) -> None:
    assert Readiness(checks).ready is ready


async def test_readyz_on_an_unmigrated_postgres_database_says_to_run_db_upgrade() -> None:
    """PostgreSQL keeps its release phase: without it /readyz is 503 and says the command; after it, 200."""
    async with (
        fresh_postgres_database(postgres_server_url()) as postgres_url,
        running_service(make_settings(database_url=postgres_url)) as service,
        httpx.AsyncClient() as client,
    ):
        unmigrated = await client.get(f"{service.url}/readyz")
        assert unmigrated.status_code == 503
        assert unmigrated.json()["checks"]["database"] == NOT_MIGRATED
        assert NOT_MIGRATED == "database not migrated: run `python -m service db upgrade`"
        await migrate.upgrade(postgres_url)
        migrated = await client.get(f"{service.url}/readyz")
        assert (migrated.status_code, migrated.json()["checks"]["database"]) == (200, "ok")
        assert service.service.schema_at_head  # remembered: later checks are SELECT 1 only


async def test_a_fresh_sqlite_file_is_migrated_at_start_up(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fresh.sqlite3")
    async with running_service(make_settings(database_url=url)) as service, httpx.AsyncClient() as client:
        ready = await client.get(f"{service.url}/readyz")
    assert ready.json()["checks"]["database"] == "ok"
    assert await migrate.is_at_head(url)
