"""The spool every process shares, on SQLite and a real PostgreSQL: two batch workers (two processes' worth: own
disks, own claims) on one database, the real SDK against the fake pre-recorded API."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.spool.directory import Spool
from service.spool.worker import BatchWorker
from service.storage.schema import SpoolChunk
from service.storage.spool_segments import CHUNK_BYTES, DatabaseSpool, is_postgresql
from tests.helpers.audio import SPEECH, call_audio
from tests.helpers.databases import database_url, migrated_url
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.fakes.deepgram_server import expected_words
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings
from tests.helpers.spool import Clock, Sink, batch_api, batch_worker, engine, spool_audio

__all__ = ["batch_api", "database_url", "engine", "migrated_url"]  # fixtures: SQLite and PostgreSQL

LEASE_S = 60.0


def shared(engine: AsyncEngine, owner: str, clock: Clock, **overrides: Any) -> DatabaseSpool:
    options: dict[str, Any] = {"max_bytes": 10_000_000, "lease_s": LEASE_S, "retention_days": 7, **overrides}
    return DatabaseSpool(lambda: engine, owner=owner, clock=clock, **options)


def worker(batch_api: FakeDeepgramBatch, spool_dir: Path, spool: DatabaseSpool, sink: Sink) -> BatchWorker:
    spool_dir.mkdir(exist_ok=True)
    settings = make_settings(None, deepgram_batch_url=batch_api.url, spool_dir=spool_dir)
    return batch_worker(settings, Spool(spool_dir), sink, spool)


async def test_audio_one_process_spooled_is_transcribed_by_another_once_after_the_first_died_holding_it(
    engine: AsyncEngine, batch_api: FakeDeepgramBatch, tmp_path: Path
) -> None:
    """A's entry goes to the database and off A's disk; A claims it and dies; B cannot take it while A's lease
    holds, then takes it, transcribes it once (every word, on the call's timeline), and it is gone for both."""
    clock = Clock()
    a_sink, b_sink = Sink(), Sink()
    a_shared, b_shared = shared(engine, "dyno-a", clock), shared(engine, "dyno-b", clock)
    a = worker(batch_api, tmp_path / "a", a_shared, a_sink)
    b = worker(batch_api, tmp_path / "b", b_shared, b_sink)
    spool_audio(tmp_path / "a", SPEECH, start_s=3.0)
    assert await a.share_local() == 1
    assert Spool(tmp_path / "a").entries() == []  # the dyno's disk may go now
    claimed = await a_shared.claim()  # ... and A dies here, holding the claim
    assert claimed is not None
    assert await b.run_once() == 0
    assert b_sink.transcripts == []
    clock.advance(LEASE_S + 1)
    assert await b.run_once() == 1
    assert b_sink.words() == expected_words(SPEECH)
    assert b_sink.transcripts[0].start == 3.0
    assert all(t.batch and t.call_sid == "CAbatch" for t in b_sink.transcripts)
    assert await b.run_once() == 0
    assert await a.run_once() == 0
    assert a_sink.transcripts == []
    assert await b_shared.waiting() == 0
    assert batch_api.request_count == 1


class CompletingMeanwhile(DatabaseSpool):
    """A shared spool during whose purge (the pass's first call to it) a live call completes a local entry."""

    directory = Path()

    async def purge(self) -> int:
        spool_audio(self.directory, SPEECH, start_s=0.0)
        return await super().purge()


async def test_an_entry_completed_while_the_pass_talked_to_the_shared_spool_is_shared_not_transcribed_here(
    engine: AsyncEngine, batch_api: FakeDeepgramBatch, tmp_path: Path
) -> None:
    """The entry appears after share_local looked: the same pass puts it in the shared spool instead of holding it
    here (where a dyno that dies takes it along), and the next pass transcribes it from there."""
    spool = CompletingMeanwhile(lambda: engine, owner="a", max_bytes=10_000_000, lease_s=LEASE_S, retention_days=7)
    spool.directory = tmp_path / "a"
    sink = Sink()
    local = worker(batch_api, tmp_path / "a", spool, sink)
    assert (await local.run_pass()).delivered == 0
    assert Spool(tmp_path / "a").entries() == []
    assert await spool.waiting() == 1
    assert batch_api.request_count == 0
    spool.directory = tmp_path / "elsewhere"
    spool.directory.mkdir()
    assert await local.run_once() == 1
    assert sink.words() == expected_words(SPEECH)


async def test_two_processes_claiming_at_once_get_each_segment_once(engine: AsyncEngine) -> None:
    """Three segments, two claimers taking turns: each segment is claimed by exactly one of them."""
    clock = Clock()
    one, other = shared(engine, "one", clock), shared(engine, "other", clock)
    for number in range(3):
        await one.put(segment(f"seg{number}", clock.now + datetime.timedelta(seconds=number)), b"RIFF" + bytes(100))
    taken = [await claimer.claim() for claimer in (one, other, one, other)]
    assert [row["id"] if row else None for row in taken] == ["seg0", "seg1", "seg2", None]


async def test_a_segment_is_stored_in_chunks_and_read_back_whole(engine: AsyncEngine) -> None:
    """A WAV of two and a half chunks is three rows, and comes back byte for byte; putting it again adds nothing."""
    spool = shared(engine, "one", Clock())
    wav = call_audio(160, (CHUNK_BYTES * 2.5) / 8000)
    assert await spool.put(segment("big", Clock().now), wav)
    assert await spool.put(segment("big", Clock().now), wav)
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(SpoolChunk)) == 3
    assert await spool.wav("big") == wav


async def test_past_its_bound_the_shared_spool_refuses_and_the_entry_is_transcribed_where_it_is(
    engine: AsyncEngine, batch_api: FakeDeepgramBatch, tmp_path: Path, log_lines: LogLines
) -> None:
    """Over SPOOL_SHARED_MAX_MB: nothing goes to the database, the entry stays on the disk and this process
    transcribes it as without a shared spool (nothing lost)."""
    sink = Sink()
    local = worker(batch_api, tmp_path / "a", shared(engine, "a", Clock(), max_bytes=1000), sink)
    spool_audio(tmp_path / "a", SPEECH, start_s=0.0)
    assert await local.share_local() == 0
    [full] = log_lines.events("spool.shared_full")
    assert "SPOOL_SHARED_MAX_MB" in full["why"]
    assert await local.run_once() == 1
    assert sink.words() == expected_words(SPEECH)
    assert Spool(tmp_path / "a").entries() == []


async def test_a_failed_attempt_waits_for_the_next_pass_and_expired_segments_are_deleted_and_logged(
    engine: AsyncEngine, log_lines: LogLines
) -> None:
    """A failure counts, keeps its error and keeps the segment from every claimer until `retry_s` passed;
    past SPOOL_RETENTION_DAYS a segment is deleted with a `spool.expired` line."""
    clock = Clock()
    spool = shared(engine, "one", clock, retention_days=2)
    await spool.put(segment("seg", clock.now), b"RIFF")
    assert (await spool.claim() or {}).get("id") == "seg"
    assert await spool.failed("seg", "HTTP 503", retry_s=30) == 1
    assert await spool.claim() is None
    clock.advance(31)
    again = await spool.claim()
    assert again is not None
    assert (again["attempts"], again["last_error"]) == (1, "HTTP 503")
    clock.advance(3 * 86400)
    assert await spool.purge() == 1
    assert await spool.waiting() == 0
    [expired] = log_lines.events("spool.expired")
    assert (expired["spool_id"], expired["call_sid"]) == ("seg", "CA1")


def test_only_postgresql_is_a_database_every_process_shares() -> None:
    """Heroku's postgres:// and postgresql+asyncpg:// yes; a SQLite file no."""
    assert is_postgresql("postgres://u:p@db.example.com:5432/d")
    assert is_postgresql("postgresql+asyncpg://u@h/d")
    assert not is_postgresql("sqlite+aiosqlite:///callscribe.sqlite3")


def segment(segment_id: str, created_at: datetime.datetime) -> dict[str, Any]:
    return {
        "id": segment_id, "call_sid": "CA1", "stream_sid": "MZ1", "track": "inbound", "start_s": 0.0,
        "duration_s": 1.0, "reason": "test", "created_at": created_at, "attempts": 0, "last_error": None,
    }  # fmt: skip
