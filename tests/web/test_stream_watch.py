"""`StreamWatch`: the calls /voice streamed are watched until their stream starts, bounded, and stopped at shutdown;
a database that cannot be asked makes it say nothing rather than guess."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from service.storage.schema import create_engine
from service.web import stream_watch
from service.web.stream_watch import StreamWatch
from tests.helpers.databases import sqlite_url
from tests.helpers.logs import LogLines
from tests.helpers.waiting import eventually

URL = "wss://calls.example.com/media"


class Spawned:
    """The runtime's background tasks, as far as the watch uses them."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(self, work: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.ensure_future(work))


def no_database() -> Any:
    raise RuntimeError("the store has not started")


async def test_a_call_is_watched_once_and_until_its_stream_arrives() -> None:
    """The same CallSid twice is one watch; an empty one is none; arrival and stop end watches without a check."""
    spawned = Spawned()
    watch = StreamWatch(no_database, wait_s=60, spawn=spawned)
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
    watch = StreamWatch(no_database, wait_s=60, spawn=Spawned())
    for call_sid in ("CA1", "CA2", "CA3"):
        watch.expect(call_sid, URL)
    assert watch.watched == 2
    watch.stop()


async def test_a_database_that_cannot_be_asked_says_nothing(tmp_path: Path, log_lines: LogLines) -> None:
    """No streams table to look in (a database never migrated): a debug line, no `voice.no_stream` guess."""
    engine = create_engine(sqlite_url(tmp_path / "empty.sqlite3"))
    spawned = Spawned()
    try:
        watch = StreamWatch(lambda: engine, wait_s=0.01, spawn=spawned)
        watch.expect("CA1", URL)
        await eventually(lambda: spawned.tasks and all(task.done() for task in spawned.tasks))
    finally:
        await engine.dispose()
    [unchecked] = log_lines.events("voice.stream_unchecked", call_sid="CA1")
    assert unchecked["error"] == "OperationalError"
    assert not log_lines.events("voice.no_stream")
