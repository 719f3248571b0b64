"""The database's record of streams on SQLite and a real PostgreSQL: claims, races between processes, outages,
and the streams going with their call."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import AsyncIterator

from sqlalchemy import insert, make_url, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from service.calls.stream.admission import ClaimOutcome
from service.storage import queries
from service.storage.retention import purge_older_than
from service.storage.schema import Call, Stream, StreamedCall, async_url, create_engine
from service.storage.streams import DatabaseStreamClaims, call_has_stream
from service.times import as_utc
from tests.helpers.databases import database_down, database_url, dialect_of, migrated_url
from tests.helpers.logs import LogLines

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

T0 = datetime.datetime(2025, 3, 4, 10, 0, 0, tzinfo=datetime.UTC)
TIMEOUT_S = 0.5


@contextlib.asynccontextmanager
async def engine_for(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def claim(
    claims: DatabaseStreamClaims, stream_sid: str, call_sid: str = "CA1", *, first_stream: bool = True
) -> ClaimOutcome:
    purpose = "voice" if first_stream else "handover"
    return await claims.claim(
        call_sid=call_sid, stream_sid=stream_sid, purpose=purpose, track="inbound_track", first_stream=first_stream
    )


async def streams(url: str) -> list[tuple[str, str, str, str, bool]]:
    async with engine_for(url) as engine, engine.connect() as connection:
        rows = await connection.execute(
            select(Stream.stream_sid, Stream.call_sid, Stream.purpose, Stream.track, Stream.first_stream).order_by(
                Stream.stream_sid
            )
        )
        return [(str(a), str(b), str(c), str(d), bool(e)) for a, b, c, d, e in rows]


def patient(url: str) -> str:
    """`url`, but SQLite waits seconds for a lock rather than the test databases' fraction of one."""
    return make_url(url).update_query_dict({"timeout": "30"}).render_as_string(False) if "sqlite" in url else url


@contextlib.asynccontextmanager
async def database_stalled(url: str) -> AsyncIterator[None]:
    """The database answers nothing about streams for the duration: another connection holds a lock that every
    claim waits behind (SQLite: the whole file; PostgreSQL: the streams table)."""
    if dialect_of(url) == "sqlite":
        async with database_down(url):
            yield
        return
    engine = create_async_engine(async_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            await connection.exec_driver_sql("LOCK TABLE streams IN ACCESS EXCLUSIVE MODE")
            yield
            await transaction.rollback()
    finally:
        await engine.dispose()


async def test_a_stream_is_claimed_once_and_its_call_has_one_first_stream(migrated_url: str) -> None:
    """Claim -> CLAIMED; the same stream again -> STREAM_TAKEN; another first stream of the call -> CALL_TAKEN;
    a hand-over of the call (not a first stream) -> CLAIMED; another call is not affected."""
    async with engine_for(migrated_url) as engine:
        claims = DatabaseStreamClaims(lambda: engine, clock=lambda: T0)
        assert await claim(claims, "MZ1") is ClaimOutcome.CLAIMED
        assert await claim(claims, "MZ1") is ClaimOutcome.STREAM_TAKEN
        assert await claim(claims, "MZ1", first_stream=False) is ClaimOutcome.STREAM_TAKEN
        assert await claim(claims, "MZ2") is ClaimOutcome.CALL_TAKEN
        assert await claim(claims, "MZ3", first_stream=False) is ClaimOutcome.CLAIMED
        assert await claim(claims, "MZ4", first_stream=False) is ClaimOutcome.CLAIMED
        assert await claim(claims, "MZ5", "CA2") is ClaimOutcome.CLAIMED
    assert await streams(migrated_url) == [
        ("MZ1", "CA1", "voice", "inbound_track", True),
        ("MZ3", "CA1", "handover", "inbound_track", False),
        ("MZ4", "CA1", "handover", "inbound_track", False),
        ("MZ5", "CA2", "voice", "inbound_track", True),
    ]


async def test_claims_made_together_are_answered_each_on_its_own(migrated_url: str) -> None:
    """Many starts at once share transactions, and each still gets its own answer: one first stream per call,
    a stream claimed twice in one group taken the second time, hand-overs let in."""
    async with engine_for(migrated_url) as engine:
        claims = DatabaseStreamClaims(lambda: engine, clock=lambda: T0)
        asked = [(f"MZ{n}a", f"CA{n}", True) for n in range(20)] + [(f"MZ{n}b", f"CA{n}", True) for n in range(20)]
        asked += [("MZ0a", "CA0", True), ("MZ1h", "CA1", False)]
        outcomes = await asyncio.gather(*(claim(claims, sid, call, first_stream=first) for sid, call, first in asked))
        await claims.settle()
    assert outcomes[:20] == [ClaimOutcome.CLAIMED] * 20
    assert outcomes[20:40] == [ClaimOutcome.CALL_TAKEN] * 20
    assert outcomes[40:] == [ClaimOutcome.STREAM_TAKEN, ClaimOutcome.CLAIMED]
    assert len(await streams(migrated_url)) == 21


async def test_a_claim_records_when_the_stream_started(migrated_url: str) -> None:
    async with engine_for(migrated_url) as engine:
        assert await claim(DatabaseStreamClaims(lambda: engine, clock=lambda: T0), "MZ1") is ClaimOutcome.CLAIMED
        async with engine.connect() as connection:
            started_at = await connection.scalar(select(Stream.started_at))
    assert started_at is not None
    assert started_at.replace(tzinfo=datetime.UTC) == T0  # SQLite hands it back without its zone


async def test_two_processes_racing_for_a_calls_first_stream_let_exactly_one_in(migrated_url: str) -> None:
    """Two engines (two processes) claim first streams of the same calls at once: one CLAIMED per call."""
    url = patient(migrated_url)
    async with engine_for(url) as one, engine_for(url) as other:
        claims = (DatabaseStreamClaims(lambda: one), DatabaseStreamClaims(lambda: other))
        for round_ in range(5):
            call_sid = f"CA{round_}"
            outcomes = await asyncio.gather(
                claim(claims[0], f"MZ{round_}a", call_sid), claim(claims[1], f"MZ{round_}b", call_sid)
            )
            assert sorted(outcomes) == [ClaimOutcome.CALL_TAKEN, ClaimOutcome.CLAIMED]
    assert len(await streams(migrated_url)) == 5


async def test_a_database_that_is_down_leaves_the_claim_unchecked(migrated_url: str, log_lines: LogLines) -> None:
    """An outage is UNCHECKED, soon, logged by the error's type alone; the database back, claims work again."""
    async with engine_for(migrated_url) as engine:
        claims = DatabaseStreamClaims(lambda: engine, timeout_s=TIMEOUT_S)
        assert await claim(claims, "MZ0", "CA0") is ClaimOutcome.CLAIMED  # the engine has a connection already
        async with database_down(migrated_url):
            began = time.monotonic()
            assert await claim(claims, "MZ1") is ClaimOutcome.UNCHECKED
            assert time.monotonic() - began < TIMEOUT_S + 0.5
        assert await claim(claims, "MZ1") is ClaimOutcome.CLAIMED
    [failed] = log_lines.events("store.claim_failed")
    assert set(failed) == {"event", "level", "timestamp", "error"}
    assert all(name.isidentifier() for name in failed["error"].split(" <- "))  # types, no text


async def test_a_database_that_does_not_answer_in_time_leaves_the_claim_unchecked(
    migrated_url: str, log_lines: LogLines
) -> None:
    """A database that waits (a lock held elsewhere) rather than failing: UNCHECKED when the timeout is up."""
    async with engine_for(patient(migrated_url)) as engine:
        claims = DatabaseStreamClaims(lambda: engine, timeout_s=TIMEOUT_S)
        assert await claim(claims, "MZ0", "CA0") is ClaimOutcome.CLAIMED
        async with database_stalled(migrated_url):
            began = time.monotonic()
            assert await claim(claims, "MZ1") is ClaimOutcome.UNCHECKED
            assert time.monotonic() - began < TIMEOUT_S + 0.5
        await claims.settle()  # the claim given up on lets go of its connection once the lock is gone
    assert log_lines.events("store.claim_timed_out", timeout_s=TIMEOUT_S)


async def test_a_database_without_the_streams_table_leaves_the_claim_unchecked(
    database_url: str, log_lines: LogLines
) -> None:
    """Unmigrated (no streams table): UNCHECKED, and the error's type is logged, not its text."""
    async with engine_for(database_url) as engine:
        assert await claim(DatabaseStreamClaims(lambda: engine), "MZ1") is ClaimOutcome.UNCHECKED
    [failed] = log_lines.events("store.claim_failed")
    assert all(name.isidentifier() for name in failed["error"].split(" <- "))  # "no such table" is not logged


async def test_an_engine_that_is_not_there_yet_leaves_the_claim_unchecked() -> None:
    """The store's engine is asked for at each claim; before the store has started it raises, and that is UNCHECKED."""

    def no_engine() -> AsyncEngine:
        raise RuntimeError("the store has not started")

    assert await claim(DatabaseStreamClaims(no_engine), "MZ1") is ClaimOutcome.UNCHECKED


async def test_deleting_a_call_deletes_its_streams_only(migrated_url: str) -> None:
    async with engine_for(migrated_url) as engine:
        await add_call(engine, "CA1", T0)
        await add_call(engine, "CA2", T0)
        claims = DatabaseStreamClaims(lambda: engine)
        for stream_sid, call_sid, first in (("MZ1", "CA1", True), ("MZ2", "CA1", False), ("MZ3", "CA2", True)):
            assert await claim(claims, stream_sid, call_sid, first_stream=first) is ClaimOutcome.CLAIMED
        assert await queries.delete_call(engine, "CA1") is True
    assert [row[0] for row in await streams(migrated_url)] == ["MZ3"]


async def test_purging_deletes_old_calls_streams_and_old_streams_without_a_call(migrated_url: str) -> None:
    """Retention takes the streams of the calls it deletes, and streams that never got a call row once they are
    as old; a recent stream stays, with or without its call row."""
    now = T0 + datetime.timedelta(days=40)
    recent = now - datetime.timedelta(days=1)
    async with engine_for(migrated_url) as engine:
        await add_call(engine, "CAold", T0)
        await add_call(engine, "CAnew", recent)
        old_claims = DatabaseStreamClaims(lambda: engine, clock=lambda: T0)
        # A stream of the old call whose record is recent (so only its call takes it), and an orphan that is old.
        new_claims = DatabaseStreamClaims(lambda: engine, clock=lambda: recent)
        assert await claim(new_claims, "MZold", "CAold") is ClaimOutcome.CLAIMED
        assert await claim(old_claims, "MZorphan", "CAorphan") is ClaimOutcome.CLAIMED
        assert await claim(new_claims, "MZnew", "CAnew") is ClaimOutcome.CLAIMED
        assert await claim(new_claims, "MZrecent", "CArecent") is ClaimOutcome.CLAIMED
        assert await purge_older_than(engine, 30, now) == 1
    assert [row[0] for row in await streams(migrated_url)] == ["MZnew", "MZrecent"]


async def streamed_calls(url: str) -> dict[str, datetime.datetime]:
    """The lasting record of calls that had a stream: each CallSid and when (in UTC), and nothing more."""
    async with engine_for(url) as engine, engine.connect() as connection:
        rows = (await connection.execute(select(StreamedCall.__table__))).mappings().all()
    assert all(set(row) == {"call_sid", "first_stream_at"} for row in rows)
    return {str(row["call_sid"]): as_utc(row["first_stream_at"]) for row in rows}


async def test_a_calls_first_stream_is_refused_for_good_after_delete_and_purge(migrated_url: str) -> None:
    """Once a call's row and streams are gone (DELETE, or RETENTION_DAYS), a new first stream of it is still
    refused, by a new process too; its record is the SID and a time; a hand-over is still let in."""
    now = T0 + datetime.timedelta(days=40)
    async with engine_for(migrated_url) as engine:
        first = DatabaseStreamClaims(lambda: engine, clock=lambda: T0)
        for call_sid in ("CAdeleted", "CApurged"):
            await add_call(engine, call_sid, T0)
            assert await claim(first, f"MZ{call_sid}", call_sid) is ClaimOutcome.CLAIMED
        assert await queries.delete_call(engine, "CAdeleted") is True
        assert await purge_older_than(engine, 30, now) == 1
        assert await streams(migrated_url) == []
        restarted = DatabaseStreamClaims(lambda: engine, clock=lambda: now)  # the process knows nothing of them
        for call_sid in ("CAdeleted", "CApurged"):
            assert await claim(restarted, f"MZ{call_sid}", call_sid) is ClaimOutcome.CALL_TAKEN  # the same start
            assert await claim(restarted, f"MZ{call_sid}2", call_sid) is ClaimOutcome.CALL_TAKEN  # a new streamSid
        assert await claim(restarted, "MZhandover", "CAdeleted", first_stream=False) is ClaimOutcome.CLAIMED
        # The watch for streams that never came hears that the purged call had one (its replay was refused).
        assert await call_has_stream(engine, "CApurged") is True
        assert await call_has_stream(engine, "CAnever") is False
    assert await streamed_calls(migrated_url) == {"CAdeleted": T0, "CApurged": T0}


async def test_a_first_stream_refused_for_its_stream_sid_leaves_its_call_unrecorded(migrated_url: str) -> None:
    """A start for a new call under a streamSid already taken is refused, and the call may still get its stream."""
    async with engine_for(migrated_url) as engine:
        claims = DatabaseStreamClaims(lambda: engine)
        assert await claim(claims, "MZ1", "CA1") is ClaimOutcome.CLAIMED
        assert await claim(claims, "MZ1", "CA2") is ClaimOutcome.STREAM_TAKEN
        assert set(await streamed_calls(migrated_url)) == {"CA1"}
        assert await claim(claims, "MZ2", "CA2") is ClaimOutcome.CLAIMED
    assert set(await streamed_calls(migrated_url)) == {"CA1", "CA2"}


async def add_call(engine: AsyncEngine, call_sid: str, started_at: datetime.datetime) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(Call),
            {
                "call_sid": call_sid, "stream_sid": f"MZ{call_sid}", "account_sid": "", "from_number": "",
                "to_number": "", "direction": "", "custom_parameters": {}, "tracks": [], "started_at": started_at,
                "status": "completed", "deepgram_request_ids": [], "audio_s_inbound": 0.0, "audio_s_outbound": 0.0,
                "summary": {},
            },
        )  # fmt: skip


async def test_a_hand_over_stream_is_placed_on_its_call_timeline_by_the_rows_start_times(migrated_url: str) -> None:
    """The offset of a stream is its start less the call's first stream's, from the rows every process reads; a
    stream (or a call's first stream) without a row has none yet."""
    clock = [T0]
    async with engine_for(migrated_url) as engine:
        claims = DatabaseStreamClaims(lambda: engine, clock=lambda: clock[0])
        assert await claims.offset_s("CA1", "MZ1") is None
        assert await claim(claims, "MZ1") is ClaimOutcome.CLAIMED
        clock[0] = T0 + datetime.timedelta(seconds=12.345)
        assert await claims.offset_s("CA1", "MZ2") is None  # asked for, not let in anywhere yet
        assert await claim(claims, "MZ2", first_stream=False) is ClaimOutcome.CLAIMED
        assert await claims.offset_s("CA1", "MZ1") == 0.0
        assert await claims.offset_s("CA1", "MZ2") == 12.345
        assert await claim(claims, "MZ9", "CA2", first_stream=False) is ClaimOutcome.CLAIMED
        assert await claims.offset_s("CA2", "MZ9") is None  # no first stream on record: nothing to place it by


async def test_a_new_stream_sees_the_streams_it_took_over_from_live_until_their_end_is_written(
    migrated_url: str,
) -> None:
    """`others_live` is true while an earlier stream of the call has no end; a later stream or another call's never
    counts."""
    clock = [T0]
    async with engine_for(migrated_url) as engine:
        claims = DatabaseStreamClaims(lambda: engine, clock=lambda: clock[0])
        await claim(claims, "MZ1")
        await claim(claims, "MZx", "CA2")
        clock[0] = T0 + datetime.timedelta(seconds=5)
        await claim(claims, "MZ2", first_stream=False)
        clock[0] = T0 + datetime.timedelta(seconds=9)
        await claim(claims, "MZ3", first_stream=False)
        assert await claims.others_live("CA1", "MZ2")
        assert not await claims.others_live("CA1", "MZ1")  # MZ2 and MZ3 started after it
        async with engine.begin() as connection:
            await connection.execute(Stream.__table__.update().where(Stream.stream_sid == "MZ1").values(ended_at=T0))
        assert not await claims.others_live("CA1", "MZ2")
        assert await claims.others_live("CA1", "MZ3")  # MZ2 is still going
