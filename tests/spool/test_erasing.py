"""Spooled audio and erasure: an erasure removes a call's local entries (complete, or left by a crash) and no one
else's, and never a segment still being written; an entry erased while batch transcribes it delivers nothing
(local, and in the shared spool on SQLite and PostgreSQL); and the spool's audio is gone as soon as batch has
delivered its transcript, on every backend: the disk, the database's chunks, S3."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.deepgram.engines import batch_engines
from service.settings import Settings
from service.spool.directory import Spool
from service.spool.worker import BatchWorker
from service.storage import erasure
from service.storage.schema import SpoolChunk, SpoolSegment
from service.storage.spool_objects import S3Audio
from service.storage.spool_segments import AudioStore, ChunkAudio, DatabaseSpool
from service.stt.engine import BatchEngine
from service.stt.events import BatchAnswer
from tests.helpers.audio import SPEECH
from tests.helpers.databases import database_url, migrated_url
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.logs import LogLines
from tests.helpers.s3 import S3Server, s3_server, s3_settings
from tests.helpers.service import make_settings
from tests.helpers.spool import AUDIO, Sink, batch_api, engine, names, spool_audio

__all__ = ["batch_api", "database_url", "engine", "migrated_url", "s3_server"]  # fixtures


def test_an_erasure_takes_its_calls_entries_only_and_never_one_being_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool_audio(tmp_path, AUDIO, start_s=0.0, call_sid="CAgone")
    spool_audio(tmp_path, AUDIO, start_s=5.0, call_sid="CAgone")
    kept = spool_audio(tmp_path, AUDIO, start_s=0.0, call_sid="CAkept")
    writing = spool.open_segment(call_sid="CAgone", stream_sid="MZ", track="outbound", start_s=0.0, reason="r")
    writing.write(AUDIO)
    crashed = spool.open_segment(call_sid="CAgone", stream_sid="MZ", track="inbound", start_s=9.0, reason="r")
    crashed.write(AUDIO)
    crashed._fd, fd = None, crashed._fd  # a crash: the lock goes with the process, the files stay
    assert fd is not None
    os.close(fd)
    (tmp_path / f"{kept.id}.json.tmp").write_text("{}")  # a temporary of an entry that stays, left alone

    assert spool.erase(["CAgone"]) == 3  # two complete entries and the crashed segment
    left = names(tmp_path)
    assert not any("CAgone" in name for name in left if writing.id not in name)
    assert [entry.call_sid for entry in spool.entries()] == ["CAkept"]
    assert writing.close() is not None  # the call still on finishes its entry as if nothing happened
    assert spool.erase(["CAnever"]) == 0


class ErasingFirst:
    """A batch engine that erases the entry's call while it transcribes (an erasure arriving mid-request)."""

    def __init__(self, inner: BatchEngine, erase: Any) -> None:
        self._inner = inner
        self._erase = erase

    @property
    def name(self) -> str:
        return self._inner.name

    async def transcribe(self, wav: bytes) -> BatchAnswer:
        answer = await self._inner.transcribe(wav)
        await self._erase()
        return answer


def erasing_engines(erase: Any) -> Any:
    def engines(settings: Settings, order: Sequence[str]) -> list[BatchEngine]:
        return [ErasingFirst(engine, erase) for engine in batch_engines(settings, order)]

    return engines


async def test_a_local_entry_erased_mid_transcription_delivers_nothing(
    batch_api: FakeDeepgramBatch, tmp_path: Path, log_lines: LogLines
) -> None:
    spool = Spool(tmp_path)
    spool_audio(tmp_path, SPEECH, start_s=0.0, call_sid="CAgone")

    async def erase() -> None:
        spool.erase(["CAgone"])

    sink = Sink()
    settings = make_settings(None, deepgram_batch_url=batch_api.url, spool_dir=tmp_path)
    worker = BatchWorker(settings, spool, sink, engines=erasing_engines(erase))
    await worker.run_pass()
    assert sink.transcripts == []
    assert batch_api.request_count == 1
    assert names(tmp_path) == []
    assert log_lines.events("batch.erased", call_sid="CAgone")


async def test_a_shared_segment_erased_mid_transcription_delivers_nothing(
    engine: AsyncEngine, batch_api: FakeDeepgramBatch, tmp_path: Path, log_lines: LogLines
) -> None:
    shared = DatabaseSpool(lambda: engine, owner="a", max_bytes=10**7, lease_s=60, retention_days=None)
    spool_audio(tmp_path, SPEECH, start_s=0.0, call_sid="CAgone")

    async def erase() -> None:
        await erasure.delete_call(engine, "CAgone")

    sink = Sink()
    settings = make_settings(None, deepgram_batch_url=batch_api.url, spool_dir=tmp_path)
    worker = BatchWorker(settings, Spool(tmp_path), sink, shared, engines=erasing_engines(erase))
    await worker.run_pass()
    assert sink.transcripts == []
    assert batch_api.request_count == 1
    assert await shared.waiting() == 0
    assert log_lines.events("batch.erased", call_sid="CAgone")


async def rows(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as connection:
        segments = await connection.scalar(select(func.count()).select_from(SpoolSegment))
        chunks = await connection.scalar(select(func.count()).select_from(SpoolChunk))
    return int(segments or 0), int(chunks or 0)


@pytest.mark.parametrize("backend", ["disk", "chunks", "s3"])
async def test_spooled_audio_goes_as_soon_as_batch_has_delivered_its_transcript(
    engine: AsyncEngine, batch_api: FakeDeepgramBatch, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """Each backend holds the audio while it waits (the positive control), and nothing of it once the pass that
    delivered its words is over: no file, no row, no chunk, no object."""
    spool_dir = tmp_path / "spool"  # not the test's directory, where a SQLite database lives
    spool_dir.mkdir()
    overrides: dict[str, Any] = {}
    audio: AudioStore = ChunkAudio()
    s3: S3Server | None = None
    if backend == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = s3.new_bucket()
        overrides = {name.lower(): value for name, value in s3_settings(s3, bucket).items()}
        audio = S3Audio(make_settings(None, **overrides))
    settings = make_settings(None, deepgram_batch_url=batch_api.url, spool_dir=spool_dir, **overrides)
    shared = (
        None if backend == "disk"
        else DatabaseSpool(lambda: engine, owner="a", max_bytes=10**7, lease_s=60, retention_days=None, audio=audio)
    )  # fmt: skip
    sink = Sink()
    worker = BatchWorker(settings, Spool(spool_dir), sink, shared, engines=batch_engines)
    spool_audio(spool_dir, SPEECH, start_s=0.0, call_sid="CAsaid")
    if shared is not None:
        assert await worker.share_local() == 1
        assert (await rows(engine))[0] == 1
        if backend == "chunks":
            assert (await rows(engine))[1] >= 1
        if s3 is not None:
            assert len(s3.keys(bucket)) == 1
    else:
        assert names(spool_dir) != []
    await worker.run_pass()
    assert sink.transcripts != []
    assert names(spool_dir) == []
    assert await rows(engine) == (0, 0)
    if s3 is not None:
        assert s3.keys(bucket) == []
