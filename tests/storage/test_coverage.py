"""A call's coverage in the database (migration 0008), on SQLite and a real PostgreSQL: each stream's parts
stored idempotently with its end (a journal replay, a retry), streams summed (a hand-over), a spool entry moved
by batch's outcome whichever comes first, and a shared segment that expired turned lost."""

from __future__ import annotations

import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from service.calls.coverage import Lost, Outcome, Part, SpoolPiece, TrackTally, stream_parts
from service.calls.events import CallEnded
from service.deepgram.engines import batch_engines
from service.spool.directory import Spool
from service.spool.worker import BatchWorker
from service.storage import queries
from service.storage.writes import Write, call_ended_write, decode, encode, outcome_write, statements
from tests.helpers.databases import database_url, migrated_url
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.service import make_settings
from tests.helpers.spool import Clock, Sink, batch_api, engine, spool_audio
from tests.spool.test_shared import shared

__all__ = ["batch_api", "database_url", "engine", "migrated_url"]  # fixtures: SQLite and PostgreSQL

T0 = datetime.datetime(2026, 12, 7, 15, 0, tzinfo=datetime.UTC)
SECOND = 8000


def ended(stream_sid: str, parts: list[Part], *, ended_by: str = "stop") -> CallEnded:
    return CallEnded(
        call_sid="CA1", stream_sid=stream_sid, ended_at=T0, ended_by=ended_by, deepgram_request_ids=(),
        audio_s_by_track={}, coverage=tuple(parts),
    )  # fmt: skip


async def apply(engine: AsyncEngine, *writes: Write) -> None:
    """What the writer does with a batch: each write's statements in one transaction."""
    async with engine.begin() as connection:
        for write in writes:
            for statement, parameters in statements(connection.dialect.name, write, T0):
                await connection.execute(statement, parameters)


async def coverage(engine: AsyncEngine) -> dict[str, object]:
    return (await queries.get_coverage(engine, ["CA1"], per_track=True))["CA1"]


WAITING = {
    "inbound": TrackTally(received=6 * SECOND, spooled=[SpoolPiece("e1", 5 * SECOND, "DEEPGRAM_API_KEY is not set")])
}


async def test_a_streams_coverage_stored_again_from_the_journal_is_stored_once(engine: AsyncEngine) -> None:
    """The call's end with its parts, applied, then again from its journal line: the same coverage."""
    write = call_ended_write(ended("MZ1", stream_parts(WAITING)))
    await apply(engine, write)
    first = await coverage(engine)
    await apply(engine, decode(encode(write)))
    assert await coverage(engine) == first
    assert (first["audio_s"], first["live_s"], first["waiting_s"], first["complete"]) == (6.0, 1.0, 5.0, False)
    assert first["missing"] == "5 s waiting for batch: DEEPGRAM_API_KEY is not set"


async def test_batch_moves_a_waiting_entry_whether_it_comes_before_or_after_the_streams_end(
    engine: AsyncEngine,
) -> None:
    """Batch may transcribe an entry while its stream is on: its outcome, stored first, holds when the stream's
    parts come (and when they come again from a journal); after the end it moves the stored part."""
    done = outcome_write(Outcome("CA1", "MZ1", "inbound", "e1"))
    await apply(engine, done)
    assert (await queries.get_coverage(engine, ["CA1"]))["CA1"]["audio_s"] == 0.0  # no seconds before the stream says
    end = call_ended_write(ended("MZ1", stream_parts(WAITING)))
    await apply(engine, end, end)
    shown = await coverage(engine)
    assert (shown["batch_s"], shown["waiting_s"], shown["complete"], shown["missing"]) == (5.0, 0.0, True, "")

    later = {"inbound": TrackTally(received=2 * SECOND, spooled=[SpoolPiece("e2", 2 * SECOND, "Deepgram down")])}
    await apply(engine, call_ended_write(ended("MZ2", stream_parts(later))))
    assert (await coverage(engine))["waiting_s"] == 2.0
    await apply(engine, outcome_write(Outcome("CA1", "MZ2", "inbound", "e2")))
    await apply(engine, outcome_write(Outcome("CA1", "MZ2", "inbound", "e2")))  # delivered again after a crash
    shown = await coverage(engine)
    assert (shown["audio_s"], shown["batch_s"], shown["complete"]) == (8.0, 7.0, True)


async def test_a_handed_over_calls_streams_are_summed_per_track(engine: AsyncEngine) -> None:
    """The old stream (handed over) and the new one: each keeps its own rows; the call shows their sum."""
    old = {"inbound": TrackTally(received=10 * SECOND, replayed=SECOND), "outbound": TrackTally(received=10 * SECOND)}
    new = {"inbound": TrackTally(received=4 * SECOND, chunks_missing=5), "outbound": TrackTally(received=4 * SECOND)}
    await apply(engine, call_ended_write(ended("MZnew", stream_parts(new))))
    await apply(engine, call_ended_write(ended("MZold", stream_parts(old), ended_by="handed_over")))
    shown = await coverage(engine)
    assert (shown["audio_s"], shown["replayed_s"], shown["lost_s"]) == (28.1, 1.0, 0.1)
    assert shown["tracks"]["inbound"]["audio_s"] == 14.1  # type: ignore[index]
    assert shown["missing"] == "0.1 s lost: gaps in Twilio's chunk numbers"


async def test_a_shared_segment_that_expires_turns_its_seconds_lost(engine: AsyncEngine) -> None:
    """Past SPOOL_RETENTION_DAYS the segment goes, and the call's coverage says its audio is lost, and why."""
    clock = Clock()
    spool = shared(engine, "one", clock, retention_days=2)
    await apply(engine, call_ended_write(ended("MZ1", stream_parts(WAITING))))
    await spool.put(_segment("e1", clock.now), b"RIFF")
    clock.advance(3 * 86400)
    assert await spool.purge() == 1
    shown = await coverage(engine)
    why = "not transcribed by batch within SPOOL_RETENTION_DAYS"
    assert shown["lost"] == [{"reason": Lost.SPOOL_EXPIRED, "why": why, "seconds": 5.0}]
    assert (shown["waiting_s"], shown["complete"]) == (0.0, False)


async def test_the_worker_reports_each_entry_it_delivers_from_the_shared_spool(
    engine: AsyncEngine, batch_api: FakeDeepgramBatch, tmp_path: Path
) -> None:
    """The outcome names the entry the call's coverage keyed it by: its id, stream and track."""
    entry = spool_audio(tmp_path / "a", b"\xff" * SECOND, start_s=1.0, call_sid="CA1")
    outcomes: list[Outcome] = []
    settings = make_settings(None, deepgram_batch_url=batch_api.url, spool_dir=tmp_path / "a")
    batch = BatchWorker(
        settings, Spool(tmp_path / "a"), Sink(), shared(engine, "one", Clock()), engines=batch_engines,
        outcomes=outcomes.append,
    )  # fmt: skip
    assert await batch.run_once() == 1
    assert outcomes == [Outcome("CA1", "MZCA1", "inbound", entry.id)]


def _segment(segment_id: str, created_at: datetime.datetime) -> dict[str, object]:
    return {
        "id": segment_id, "call_sid": "CA1", "stream_sid": "MZ1", "track": "inbound", "start_s": 0.0,
        "duration_s": 5.0, "reason": "r", "created_at": created_at, "attempts": 0, "last_error": None,
    }  # fmt: skip
