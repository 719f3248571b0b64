"""Calls' pause records on SQLite and a real PostgreSQL: a change is checked against the call, versioned, audited
with it in one transaction, idempotent; requests at once make one change; the holding process's answer is what
the API waits for; a pause past its maximum length resumes once, whoever gets there first."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from service.calls.stream.pause import PauseControl
from service.storage import controls
from service.storage.audit import Audited, audit_entries
from service.storage.controls import DatabaseControls, PauseState, Refused, change_pause, wait_applied
from service.storage.schema import create_engine
from service.storage.statuses import CallStatus
from service.storage.writes import CALLS
from tests.helpers.databases import database_url, migrated_url

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

T0 = datetime.datetime(2026, 12, 7, 18, 0, tzinfo=datetime.UTC)
AGENT = Audited.of("agent-7", "api 127.0.0.1")


@pytest.fixture
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_url)
    async with engine.begin() as connection:
        for call_sid, status in (("CA1", CallStatus.ACTIVE), ("CA2", CallStatus.COMPLETED)):
            await connection.execute(insert(CALLS).values(call_sid=call_sid, stream_sid="MZ" + call_sid[2:],
                                                          started_at=T0, status=status))  # fmt: skip
    yield engine
    await engine.dispose()


async def pause(engine: AsyncEngine, *, paused: bool = True, max_s: float | None = 120.0) -> PauseState | Refused:
    return await change_pause(engine, "CA1", paused=paused, who=AGENT, max_s=max_s, now=T0)


async def test_only_a_call_in_progress_can_be_paused(engine: AsyncEngine) -> None:
    assert await change_pause(engine, "CA9", paused=True, who=AGENT, max_s=None, now=T0) is Refused.UNKNOWN_CALL
    assert await change_pause(engine, "CA2", paused=True, who=AGENT, max_s=None, now=T0) is Refused.CALL_ENDED
    assert await audit_entries(engine) == []


async def test_a_pause_and_a_resume_are_versions_each_audited_and_a_repeat_changes_nothing(engine: AsyncEngine) -> None:
    paused = await pause(engine)
    assert isinstance(paused, PauseState)
    assert (paused.paused, paused.version, paused.changed, paused.changed_by) == (True, 1, True, "agent-7")
    assert paused.resume_at == T0 + datetime.timedelta(seconds=120)
    assert paused.applied_at_s is None
    again = await pause(engine)
    assert isinstance(again, PauseState)
    assert (again.version, again.changed) == (1, False)
    resumed = await pause(engine, paused=False, max_s=None)
    assert isinstance(resumed, PauseState)
    assert (resumed.paused, resumed.version, resumed.changed, resumed.resume_at) == (False, 2, True, None)
    entries = await audit_entries(engine, subject="CA1")
    assert [(entry.action, entry.actor, entry.detail) for entry in entries] == [
        ("resume", "agent-7", {"version": 2}),
        ("pause", "agent-7", {"version": 1, "max_s": 120.0}),
    ]


async def test_resuming_a_call_never_paused_changes_nothing(engine: AsyncEngine) -> None:
    state = await pause(engine, paused=False, max_s=None)
    assert isinstance(state, PauseState)
    assert (state.paused, state.version, state.changed) == (False, 0, False)
    assert await controls.pause_state(engine, "CA1") is None
    assert await audit_entries(engine) == []


async def test_requests_at_once_make_one_change(engine: AsyncEngine) -> None:
    states = await asyncio.gather(*(pause(engine) for _ in range(5)))
    assert sum(1 for state in states if isinstance(state, PauseState) and state.changed) == 1
    assert {state.version for state in states if isinstance(state, PauseState)} == {1}
    assert len(await audit_entries(engine)) == 1


async def test_the_api_waits_for_the_holding_process_to_apply_its_version(engine: AsyncEngine) -> None:
    state = await pause(engine)
    assert isinstance(state, PauseState)
    held = DatabaseControls(lambda: engine)
    # Not applied: the wait ends at its timeout with the state as recorded.
    assert (await wait_applied(engine, state, timeout_s=0.1)).applied_at_s is None
    [control] = await held.of_calls(["CA1", "CA7"])
    assert control == PauseControl("CA1", 1, paused=True, by="agent-7", resume_at=state.resume_at)
    waiting = asyncio.create_task(wait_applied(engine, state, timeout_s=10.0))
    await held.applied("CA1", 1, 12.34)
    assert (await waiting).applied_at_s == 12.34
    # An answer for an older version is not this one's.
    resumed = await pause(engine, paused=False)
    assert isinstance(resumed, PauseState)
    await held.applied("CA1", 1, 15.0)
    current = await controls.pause_state(engine, "CA1")
    assert current is not None
    assert current.applied_at_s is None


async def test_a_pause_past_its_maximum_resumes_once_whoever_gets_there_first(engine: AsyncEngine) -> None:
    await pause(engine, max_s=1.0)
    held = DatabaseControls(lambda: engine)
    [control] = await held.of_calls(["CA1"])
    later = T0 + datetime.timedelta(seconds=1)
    assert control.expired(later)
    resumed = await held.expire(control, later)
    assert resumed == PauseControl("CA1", 2, paused=False, by="callscribe")
    assert await held.expire(control, later) is None  # a second process read the same record: too late
    entries = await audit_entries(engine)
    newest = entries[0]
    assert (newest.action, newest.actor, newest.via) == (
        "auto_resume",
        "callscribe",
        "callscribe",
    )
    assert len(entries) == 2


async def test_no_maximum_means_no_resume_time(engine: AsyncEngine) -> None:
    state = await pause(engine, max_s=None)
    assert isinstance(state, PauseState)
    assert state.resume_at is None
