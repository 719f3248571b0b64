"""`StreamWatch`: the calls /voice streamed are watched until their stream starts, bounded, and stopped at shutdown;
a call whose stream never came is recorded as not streamed, with why; a database that cannot be asked makes it
say nothing rather than guess (and ask again, a few times); a restart resumes the watches from the calls' rows."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from service.storage.schema import Call, StreamedCall, create_engine
from service.storage.statuses import NotStreamed
from service.web import stream_watch
from service.web.stream_watch import StreamWatch
from tests.helpers.databases import database_url, migrated_url, sqlite_url
from tests.helpers.logs import LogLines
from tests.helpers.waiting import eventually

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

URL = "wss://calls.example.com/media"
T0 = datetime.datetime(2025, 3, 4, 10, 0, 0, tzinfo=datetime.UTC)


class Spawned:
    """The runtime's background tasks, as far as the watch uses them."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(self, work: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.ensure_future(work))


def no_database() -> Any:
    raise RuntimeError("the store has not started")


class Outcomes:
    """The store's `call_not_streamed`, as far as the watch uses it: what it was given, and when."""

    def __init__(self) -> None:
        self.recorded: list[dict[str, Any]] = []

    def __call__(
        self, call_sid: str, *, how: NotStreamed, reason: str, fix: str, answered_at: datetime.datetime | None = None
    ) -> None:
        self.recorded.append({"call_sid": call_sid, "how": how, "reason": reason, "fix": fix, "at": answered_at})


async def test_a_call_is_watched_once_and_until_its_stream_arrives() -> None:
    """The same CallSid twice is one watch; an empty one is none; arrival and stop end watches without a check."""
    spawned = Spawned()
    watch = StreamWatch(no_database, wait_s=60, spawn=spawned, record=Outcomes())
    watch.expect("CA1", URL)
    watch.expect("CA1", URL)
    watch.expect("", URL)
    assert watch.watched == 1
    watch.arrived("CA1")
    watch.arrived("CA-never-expected")
    assert watch.watched == 0
    watch.expect("CA2", URL)
    watch.stop()
    assert (watch.watched, spawned.tasks) == (0, [])


async def test_the_watch_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_WATCHED calls awaiting their stream, new ones are not watched (memory stays bounded)."""
    monkeypatch.setattr(stream_watch, "MAX_WATCHED", 2)
    watch = StreamWatch(no_database, wait_s=60, spawn=Spawned(), record=Outcomes())
    for call_sid in ("CA1", "CA2", "CA3"):
        watch.expect(call_sid, URL)
    assert watch.watched == 2
    watch.stop()


async def test_a_database_that_cannot_be_asked_says_nothing(tmp_path: Path, log_lines: LogLines) -> None:
    """No streams table to look in (a database never migrated): a debug line per check, CHECKS of them, then the
    watch gives up; no `voice.no_stream` guess, no outcome recorded."""
    engine = create_engine(sqlite_url(tmp_path / "empty.sqlite3"))
    spawned, outcomes = Spawned(), Outcomes()
    try:
        watch = StreamWatch(lambda: engine, wait_s=0.01, spawn=spawned, record=outcomes)
        watch.expect("CA1", URL)
        await eventually(lambda: len(spawned.tasks) == stream_watch.CHECKS and all(t.done() for t in spawned.tasks))
    finally:
        await engine.dispose()
    unchecked = log_lines.events("voice.stream_unchecked", call_sid="CA1")
    assert [line["checks_left"] for line in unchecked] == list(range(stream_watch.CHECKS - 1, -1, -1))
    assert {line["error"] for line in unchecked} == {"OperationalError"}
    assert (watch.watched, outcomes.recorded) == (0, [])
    assert not log_lines.events("voice.no_stream")


async def test_a_call_whose_stream_never_came_is_recorded_as_not_streamed(
    migrated_url: str, log_lines: LogLines
) -> None:
    """No stream of the call in the database by its deadline: one `voice.no_stream` line, and the outcome handed to
    the store with the line's reason and fix and when /voice answered; a call another process streams is left."""
    engine = create_engine(migrated_url)
    spawned, outcomes = Spawned(), Outcomes()
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(StreamedCall).values(call_sid="CA2", first_stream_at=T0))
        watch = StreamWatch(lambda: engine, wait_s=0.05, spawn=spawned, record=outcomes)
        watch.expect("CA1", URL, answered_at=T0)  # long past its deadline: checked at once
        watch.expect("CA2", URL)
        await eventually(lambda: len(spawned.tasks) == 2 and all(task.done() for task in spawned.tasks))
    finally:
        await engine.dispose()
    [line] = log_lines.events("voice.no_stream")
    assert outcomes.recorded == [
        {"call_sid": "CA1", "how": NotStreamed.NO_STREAM, "reason": line["why"], "fix": line["fix"], "at": T0}
    ]
    assert "no stream of it started within STREAM_START_TIMEOUT_S (0.05 s)" in line["why"]
    assert log_lines.events("voice.stream_elsewhere", call_sid="CA2")


async def test_a_restart_resumes_the_watches_from_the_calls_rows(migrated_url: str, log_lines: LogLines) -> None:
    """At start-up the calls answered with no stream yet are watched again, each until its own deadline: one past
    it is checked at once, one answered just now waits; a streamed call and an ended one are not watched."""
    engine = create_engine(migrated_url)
    spawned, outcomes = Spawned(), Outcomes()
    now = datetime.datetime.now(datetime.UTC)
    old = now - datetime.timedelta(hours=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(Call), [
                {"call_sid": "CAold", "stream_sid": "", "started_at": old, "status": "active"},
                {"call_sid": "CAnew", "stream_sid": "", "started_at": now, "status": "active"},
                {"call_sid": "CAstreaming", "stream_sid": "MZ1", "started_at": now, "status": "active"},
                {"call_sid": "CAended", "stream_sid": "", "started_at": now, "status": "not_streamed"},
            ])  # fmt: skip
        watch = StreamWatch(lambda: engine, wait_s=60, spawn=spawned, record=outcomes)
        await watch.resume(URL)
        await eventually(lambda: outcomes.recorded)
        assert watch.watched == 1  # CAnew, until its deadline a minute from now
        watch.stop()
    finally:
        await engine.dispose()
    assert [outcome["call_sid"] for outcome in outcomes.recorded] == ["CAold"]
    [resumed] = log_lines.events("voice.watch_resumed")
    assert resumed["calls"] == 2


async def test_a_restart_without_a_database_resumes_nothing_and_says_so(log_lines: LogLines) -> None:
    """The database cannot be asked at start-up: one line, nothing watched, start-up goes on."""
    watch = StreamWatch(no_database, wait_s=60, spawn=Spawned(), record=Outcomes())
    await watch.resume(URL)
    assert watch.watched == 0
    [line] = log_lines.events("voice.watch_not_resumed")
    assert line["error"] == "RuntimeError"
