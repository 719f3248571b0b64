"""A call /voice answered, on SQLite and a real PostgreSQL: its row from the answer, and one outcome decided by the
database: streamed (then `call.completed`) or not streamed (then `call.not_streamed`), never both, whichever
process and whichever order the writes and the stream's claim come in."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import random
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.calls.stream.admission import ClaimOutcome
from service.settings import Settings
from service.storage import queries
from service.storage.schema import WebhookDelivery, create_engine
from service.storage.statuses import NotStreamed
from service.storage.streams import DatabaseStreamClaims, calls_awaiting_stream
from service.storage.writer import TranscriptStore
from service.storage.writes import call_answered_write, call_not_streamed_write, decode, encode
from tests.helpers.databases import database_url, migrated_url
from tests.helpers.logs import LogLines
from tests.storage.test_streams import patient
from tests.storage.test_writer import T0, ended, idle, result, rows, settings_for, started

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

REASON = "no stream of it started within STREAM_START_TIMEOUT_S (10 s)"
FIX = "look the call up in Twilio's debugger"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


def hooked(url: str, tmp_path: Path) -> Settings:
    return settings_for(url, tmp_path, transcript_webhook_url="https://example.com/hook", webhook_secret="s")


def new_store(settings: Settings, clock: Clock) -> TranscriptStore:
    return TranscriptStore(settings, rng=random.Random(4), retry_base_s=0.01, retry_cap_s=0.1, clock=clock)


def answer(store: TranscriptStore, call_sid: str = "CA1") -> None:
    store.call_answered(
        call_sid=call_sid, account_sid="AC1", from_number="+14155550100", to_number="+14155550199",
        direction="inbound",
    )  # fmt: skip


async def events(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            statement = select(WebhookDelivery.payload).order_by(WebhookDelivery.created_at, WebhookDelivery.event_id)
            return list((await connection.execute(statement)).scalars().all())
    finally:
        await engine.dispose()


async def claim(url: str, call_sid: str = "CA1", stream_sid: str = "MZCA1") -> ClaimOutcome:
    engine = create_engine(url)
    try:
        claims = DatabaseStreamClaims(lambda: engine)
        return await claims.claim(
            call_sid=call_sid, stream_sid=stream_sid, purpose="voice", track="inbound_track", first_stream=True
        )
    finally:
        await engine.dispose()


async def test_a_call_without_a_stream_is_recorded_with_its_reason_and_one_event(
    migrated_url: str, tmp_path: Path
) -> None:
    """/voice's answer makes an active row with no stream; the watch's outcome makes it `not_streamed` with the
    reason and what to check, and queues one `call.not_streamed` event; the same outcome again (a journal replay,
    a second process's watch) adds nothing, and a stream that comes later is refused with that reason."""
    clock = Clock()
    store = new_store(hooked(migrated_url, tmp_path), clock)
    await store.start()
    answer(store)
    await idle(store)
    [call], _ = await rows(migrated_url)
    assert (call["status"], call["stream_sid"], call["from_number"], call["ended_at"]) == (
        "active", "", "+14155550100", None,
    )  # fmt: skip
    clock.advance(10)
    store.call_not_streamed("CA1", how=NotStreamed.NO_STREAM, reason=REASON, fix=FIX, answered_at=T0)
    store.call_not_streamed("CA1", how=NotStreamed.NO_STREAM, reason="again", fix="again", answered_at=T0)
    await idle(store)
    await store.stop(5)
    [call], _ = await rows(migrated_url)
    assert (call["status"], call["ended_by"], call["summary"]) == (
        "not_streamed", "no_stream", {"reason": REASON, "fix": FIX},
    )  # fmt: skip
    [event] = await events(migrated_url)
    assert event == {
        "id": "call.not_streamed:CA1", "type": "call.not_streamed", "created_at": (T0 + _s(10)).isoformat(),
        "data": {
            "call_sid": "CA1", "from": "+14155550100", "to": "+14155550199", "direction": "inbound",
            "answered_at": T0.isoformat(), "ended_at": (T0 + _s(10)).isoformat(), "ended_by": "no_stream",
            "reason": REASON, "fix": FIX,
        },
    }  # fmt: skip
    assert await claim(migrated_url) is ClaimOutcome.NOT_STREAMED


async def test_a_stream_recorded_first_wins_and_the_call_completes_once(migrated_url: str, tmp_path: Path) -> None:
    """The stream's claim came before the watch's outcome (another process had the stream): the outcome is
    dropped, the row takes the stream's start, and the call ends with `call.completed` only."""
    clock = Clock()
    store = new_store(hooked(migrated_url, tmp_path), clock)
    await store.start()
    answer(store)
    await idle(store)
    assert await claim(migrated_url) is ClaimOutcome.CLAIMED
    store.call_not_streamed("CA1", how=NotStreamed.NO_STREAM, reason=REASON, fix=FIX)
    store.call_started(started("CA1", at=T0 + _s(2)))
    store.transcript(result("CA1", "inbound", 0.5, "Hello there."))
    store.call_ended(ended("CA1"))
    await idle(store)
    await store.stop(5)
    [call], _ = await rows(migrated_url)
    assert (call["status"], call["ended_by"], call["stream_sid"]) == ("completed", "stop", "MZCA1")
    assert call["started_at"].replace(tzinfo=datetime.UTC) == T0 + _s(2)  # the stream's start, not the answer's
    assert [event["type"] for event in await events(migrated_url)] == ["utterance.final", "call.completed"]


async def test_a_busy_answer_is_not_streamed_at_once(migrated_url: str, tmp_path: Path) -> None:
    """/voice answered without a stream: the row and its outcome in one go, `busy`, with one event."""
    store = new_store(hooked(migrated_url, tmp_path), Clock())
    await store.start()
    answer(store)
    store.call_not_streamed("CA1", how=NotStreamed.BUSY, reason="at MAX_CALLS (1)", fix="raise MAX_CALLS")
    await idle(store)
    await store.stop(5)
    [call], _ = await rows(migrated_url)
    assert (call["status"], call["ended_by"], call["summary"]["reason"]) == ("not_streamed", "busy", "at MAX_CALLS (1)")
    [event] = await events(migrated_url)
    assert (event["type"], event["data"]["ended_by"], event["data"]["from"]) == (
        "call.not_streamed", "busy", "+14155550100",
    )  # fmt: skip


async def test_an_outcome_before_the_answer_makes_the_row_that_the_answer_leaves_alone(
    migrated_url: str, tmp_path: Path
) -> None:
    """The watch of one process decided before another's /voice write arrived: the outcome made the row, and the
    answer written after it changes nothing."""
    store = new_store(hooked(migrated_url, tmp_path), Clock())
    await store.start()
    store.call_not_streamed("CA1", how=NotStreamed.NO_STREAM, reason=REASON, fix=FIX, answered_at=T0)
    await idle(store)
    answer(store)
    await idle(store)
    await store.stop(5)
    [call], _ = await rows(migrated_url)
    assert (call["status"], call["ended_by"], call["from_number"]) == ("not_streamed", "no_stream", "")
    assert [event["type"] for event in await events(migrated_url)] == ["call.not_streamed"]


async def test_an_answer_replayed_after_the_calls_deletion_stores_nothing(migrated_url: str, tmp_path: Path) -> None:
    """A captured /voice request played again after DELETE /api/calls/{sid}: the call had its stream
    (`streamed_calls` keeps it), so the answer makes no row, and no watch can end it a second time."""
    store = new_store(hooked(migrated_url, tmp_path), Clock())
    await store.start()
    answer(store)
    await idle(store)
    assert await claim(migrated_url) is ClaimOutcome.CLAIMED
    engine = create_engine(migrated_url)
    try:
        assert await queries.delete_call(engine, "CA1") is True
    finally:
        await engine.dispose()
    answer(store)
    store.call_not_streamed("CA1", how=NotStreamed.NO_STREAM, reason=REASON, fix=FIX)
    await idle(store)
    await store.stop(5)
    assert await rows(migrated_url) == ([], [])
    assert await events(migrated_url) == []


async def test_a_stream_let_in_unchecked_after_the_outcome_gets_no_second_terminal_event(
    migrated_url: str, tmp_path: Path, log_lines: LogLines
) -> None:
    """A stream the database could not vet (its claim unanswered) ends after its call was recorded as not
    streamed: its words are stored, but the outcome stands and no `call.completed` follows; a line says so."""
    store = new_store(hooked(migrated_url, tmp_path), Clock())
    await store.start()
    answer(store)
    store.call_not_streamed("CA1", how=NotStreamed.NO_STREAM, reason=REASON, fix=FIX)
    store.call_started(started("CA1"))
    store.transcript(result("CA1", "inbound", 0.5, "Hello there."))
    store.call_ended(ended("CA1"))
    await idle(store)
    await store.stop(5)
    [call], [utterance] = await rows(migrated_url)
    assert (call["status"], call["ended_by"], utterance["text"]) == ("not_streamed", "no_stream", "Hello there.")
    assert [event["type"] for event in await events(migrated_url)] == ["call.not_streamed", "utterance.final"]
    assert log_lines.events("store.stream_after_not_streamed", call_sid="CA1")


async def test_streams_and_outcomes_racing_from_two_processes_leave_one_terminal_event_per_call(
    migrated_url: str, tmp_path: Path
) -> None:
    """For 20 calls, two stores (two processes) record each as not streamed, after the claims of four and while
    claims of eight more race in: each call ends with exactly one outcome, and a call.not_streamed event exactly
    when no claim came first (a claim that came later is refused with that reason)."""
    stores = [new_store(hooked(migrated_url, tmp_path / f"p{n}"), Clock()) for n in range(2)]
    for n, store in enumerate(stores):
        (tmp_path / f"p{n}").mkdir()
        await store.start()
    sids = [f"CA{n:02d}" for n in range(20)]
    for sid in sids:
        answer(stores[0], sid)
    await idle(stores[0])
    # SQLite's test databases give up on a lock in a fraction of a second: an unanswered claim is another case.
    early = {sid: await claim(migrated_url, sid, f"MZ{sid}") for sid in sids[:4]}  # surely first: both cases occur
    claims = [asyncio.ensure_future(claim(patient(migrated_url), sid, f"MZ{sid}")) for sid in sids[4::2]]
    for sid in sids:
        for store in stores:
            store.call_not_streamed(sid, how=NotStreamed.NO_STREAM, reason=REASON, fix=FIX)
    outcomes = early | dict(zip(sids[4::2], await asyncio.gather(*claims), strict=True))
    assert set(early.values()) == {ClaimOutcome.CLAIMED}
    for store in stores:
        await idle(store)
        await store.stop(5)
    calls, _ = await rows(migrated_url)
    terminal = [event["data"]["call_sid"] for event in await events(migrated_url)]
    assert sorted(terminal) == sorted(set(terminal))  # never twice
    for call in calls:
        claimed = outcomes.get(call["call_sid"]) is ClaimOutcome.CLAIMED
        assert call["status"] == ("active" if claimed else "not_streamed")
        assert (call["call_sid"] in terminal) is not claimed
        if call["call_sid"] in outcomes and not claimed:
            assert outcomes[call["call_sid"]] is ClaimOutcome.NOT_STREAMED


async def test_the_calls_still_waiting_for_their_stream_are_found_for_a_restart(
    migrated_url: str, tmp_path: Path
) -> None:
    """What a restart watches again: answered calls with no stream, oldest first; not a streamed or ended one."""
    clock = Clock()
    store = new_store(settings_for(migrated_url, tmp_path), clock)
    await store.start()
    for sid in ("CA3", "CA1", "CA2", "CA4"):
        answer(store, sid)
        clock.advance(1)
    store.call_started(started("CA2"))
    store.call_not_streamed("CA4", how=NotStreamed.BUSY, reason="busy", fix="")
    await idle(store)
    await store.stop(5)
    assert await claim(migrated_url, "CA1") is ClaimOutcome.CLAIMED  # claimed, its call_started not yet in
    engine = create_engine(migrated_url)
    try:
        found = await calls_awaiting_stream(engine, limit=10)
        assert await calls_awaiting_stream(engine, limit=0) == []
    finally:
        await engine.dispose()
    assert found == [("CA3", T0)]


def test_the_new_writes_survive_a_journal_line_unchanged() -> None:
    """An answer and an outcome go through the journal as they are, datetimes and summary included."""
    writes = [
        call_answered_write(
            call_sid="CA1", account_sid="AC1", from_number="+1", to_number="+2", direction="inbound", answered_at=T0
        ),
        call_not_streamed_write("CA1", how=NotStreamed.BUSY, reason="r", fix="f", answered_at=T0, at=T0 + _s(1)),
    ]
    assert [decode(encode(write)) for write in writes] == writes
    assert dataclasses.asdict(writes[1])["row"]["ended_by"] == "busy"


def _s(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=seconds)
