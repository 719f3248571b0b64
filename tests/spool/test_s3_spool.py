"""The shared spool with its audio in S3 (SPOOL_URL=s3://bucket/prefix) and its claims in the database (SQLite
and a real PostgreSQL): real aiobotocore against moto's S3 server, batch workers with disks of their own, the
real SDK against the fake pre-recorded API."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.settings import Settings
from service.spool.directory import Spool
from service.spool.worker import BatchWorker
from service.storage.schema import SpoolChunk, SpoolSegment
from service.storage.spool_objects import S3Audio, split_spool_url
from service.storage.spool_segments import DatabaseSpool
from tests.helpers.audio import SPEECH
from tests.helpers.databases import database_url, migrated_url
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.fakes.deepgram_server import expected_words
from tests.helpers.logs import LogLines
from tests.helpers.s3 import ACCESS_KEY, SECRET_KEY, S3Server, check_credentials, s3_server, s3_settings
from tests.helpers.service import make_settings
from tests.helpers.spool import Clock, Sink, batch_api, batch_worker, engine, spool_audio

__all__ = ["batch_api", "database_url", "engine", "migrated_url", "s3_server"]  # fixtures

LEASE_S = 60.0


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


def settings_for(server: S3Server, bucket: str, **overrides: Any) -> Settings:
    values = {name.lower(): value for name, value in s3_settings(server, bucket).items()}
    return make_settings(None, **values, **overrides)


def shared(engine: AsyncEngine, settings: Settings, owner: str, clock: Clock, **overrides: Any) -> DatabaseSpool:
    options: dict[str, Any] = {"max_bytes": 10_000_000, "lease_s": LEASE_S, "retention_days": 7, **overrides}
    return DatabaseSpool(lambda: engine, owner=owner, clock=clock, audio=S3Audio(settings), **options)


def worker(settings: Settings, batch_api: FakeDeepgramBatch, spool_dir: Path, spool: DatabaseSpool) -> BatchWorker:
    spool_dir.mkdir(exist_ok=True)
    local = settings.model_copy(update={"deepgram_batch_url": batch_api.url, "spool_dir": spool_dir})
    return batch_worker(local, Spool(spool_dir), Sink(), spool)


def sink_of(batch: BatchWorker) -> Sink:
    sink = batch._sink  # the worker's own sink, made by `worker`
    assert isinstance(sink, Sink)
    return sink


def segment(segment_id: str, created_at: datetime.datetime) -> dict[str, Any]:
    return {
        "id": segment_id, "call_sid": "CA1", "stream_sid": "MZ1", "track": "inbound", "start_s": 0.0,
        "duration_s": 1.0, "reason": "test", "created_at": created_at, "attempts": 0, "last_error": None,
    }  # fmt: skip


async def test_audio_one_process_put_in_s3_is_transcribed_by_another_once_after_the_first_died_holding_it(
    engine: AsyncEngine, batch_api: FakeDeepgramBatch, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """A's entry becomes an object and a row (no chunks), and leaves A's disk; A claims it and dies; B waits out
    A's lease, transcribes it once, and both the row and the object are gone."""
    clock = Clock()
    settings = settings_for(s3_server, bucket)
    a_shared, b_shared = shared(engine, settings, "dyno-a", clock), shared(engine, settings, "dyno-b", clock)
    a = worker(settings, batch_api, tmp_path / "a", a_shared)
    b = worker(settings, batch_api, tmp_path / "b", b_shared)
    entry = spool_audio(tmp_path / "a", SPEECH, start_s=3.0)
    wav = entry.wav_path.read_bytes()
    assert await a.share_local() == 1
    assert Spool(tmp_path / "a").entries() == []
    assert s3_server.keys(bucket) == [f"spool/{entry.id}.wav"]
    assert s3_server.client().get_object(Bucket=bucket, Key=f"spool/{entry.id}.wav")["Body"].read() == wav
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(SpoolChunk)) == 0
    assert await a_shared.claim() is not None  # ... and A dies here, holding the claim
    assert await b.run_once() == 0
    clock.advance(LEASE_S + 1)
    assert await b.run_once() == 1
    assert sink_of(b).words() == expected_words(SPEECH)
    assert sink_of(b).transcripts[0].start == 3.0
    assert await b.run_once() == 0
    assert await a.run_once() == 0
    assert sink_of(a).transcripts == []
    assert batch_api.request_count == 1
    assert await b_shared.waiting() == 0
    assert s3_server.keys(bucket) == []


async def test_processes_claiming_at_the_same_time_get_each_segment_exactly_once(
    engine: AsyncEngine, s3_server: S3Server, bucket: str
) -> None:
    """Eight segments, four claimers racing on their own connections until none is left: every segment is
    claimed by exactly one of them."""
    clock = Clock()
    settings = settings_for(s3_server, bucket)
    claimers = [shared(engine, settings, f"dyno-{number}", clock) for number in range(4)]
    for number in range(8):
        created = clock.now + datetime.timedelta(seconds=number)
        assert await claimers[0].put(segment(f"seg{number}", created), b"RIFF" + bytes(64))

    async def claim_all(claimer: DatabaseSpool) -> list[str]:
        won = []
        while (row := await claimer.claim()) is not None:
            won.append(str(row["id"]))
            await asyncio.sleep(0)  # let the others race for the next one
        return won

    taken = await asyncio.gather(*(claim_all(claimer) for claimer in claimers))
    claimed = [segment_id for won in taken for segment_id in won]
    assert sorted(claimed) == sorted(f"seg{number}" for number in range(8))
    async with engine.connect() as connection:
        owners = (await connection.execute(select(SpoolSegment.id, SpoolSegment.claimed_by))).all()
    assert dict(owners) == {segment_id: f"dyno-{index}" for index, won in enumerate(taken) for segment_id in won}


async def test_past_its_bound_nothing_goes_to_the_bucket_and_the_entry_is_transcribed_where_it_is(
    *, engine: AsyncEngine, batch_api: FakeDeepgramBatch, s3_server: S3Server, bucket: str, tmp_path: Path,
    log_lines: LogLines,
) -> None:  # fmt: skip
    """Over SPOOL_SHARED_MAX_MB: no object, no row; the entry stays on the disk and this process transcribes it."""
    settings = settings_for(s3_server, bucket)
    local = worker(settings, batch_api, tmp_path / "a", shared(engine, settings, "a", Clock(), max_bytes=1000))
    spool_audio(tmp_path / "a", SPEECH, start_s=0.0)
    assert await local.share_local() == 0
    assert log_lines.events("spool.shared_full")
    assert s3_server.keys(bucket) == []
    assert await local.run_once() == 1
    assert sink_of(local).words() == expected_words(SPEECH)
    assert Spool(tmp_path / "a").entries() == []


async def test_retention_deletes_the_objects_with_their_rows_and_objects_left_without_a_row(
    engine: AsyncEngine, s3_server: S3Server, bucket: str, log_lines: LogLines
) -> None:
    """Past SPOOL_RETENTION_DAYS a segment's row and object go (`spool.expired`); an object whose row is gone
    goes too once older than the lease, not before (its row may be on its way); other prefixes are not ours."""
    clock = Clock()
    settings = settings_for(s3_server, bucket)
    spool = shared(engine, settings, "one", clock, retention_days=2)
    await spool.put(segment("old", clock.now - datetime.timedelta(days=3)), b"RIFF-old")
    await spool.put(segment("kept", clock.now), b"RIFF-kept")
    await spool.put(segment("orphan", clock.now), b"RIFF-orphan")
    async with engine.begin() as connection:  # as a commit that failed after the object was written leaves it
        await connection.execute(delete(SpoolSegment).where(SpoolSegment.id == "orphan"))
    s3_server.client().put_object(Bucket=bucket, Key="elsewhere/notours.wav", Body=b"x")
    assert await spool.purge() == 1
    [expired] = log_lines.events("spool.expired")
    assert expired["spool_id"] == "old"
    assert s3_server.keys(bucket) == ["elsewhere/notours.wav", "spool/kept.wav", "spool/orphan.wav"]
    clock.advance(2 * LEASE_S)  # the objects' times are the server's: well past the lease, however slow the puts
    assert await spool.purge() == 0
    assert s3_server.keys(bucket) == ["elsewhere/notours.wav", "spool/kept.wav"]
    assert await spool.wav("kept") == b"RIFF-kept"
    assert log_lines.events("spool.orphans_deleted", count=1)


async def test_with_s3_down_the_audio_stays_on_the_disk_the_log_says_why_once_and_it_goes_when_s3_is_back(
    *, engine: AsyncEngine, batch_api: FakeDeepgramBatch, s3_server: S3Server, bucket: str, tmp_path: Path,
    log_lines: LogLines,
) -> None:  # fmt: skip
    """The server stopped: nothing is put, the entry stays on the disk (no row), one `spool.s3_failed` line says
    S3 cannot be reached over two passes; the server back, the entry goes to the bucket and `spool.s3_recovered`."""
    settings = settings_for(s3_server, bucket)
    local = worker(settings, batch_api, tmp_path / "a", shared(engine, settings, "a", Clock()))
    entry = spool_audio(tmp_path / "a", SPEECH, start_s=0.0)
    s3_server.stop()
    assert await local.share_local() == 0
    assert await local.share_local() == 0
    assert [listed.id for listed in Spool(tmp_path / "a").entries()] == [entry.id]
    [failed] = log_lines.events("spool.s3_failed")
    assert failed["error"] == "EndpointConnectionError"
    assert "cannot reach S3" in failed["why"]
    assert "SPOOL_S3_ENDPOINT_URL" in failed["why"]
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(SpoolSegment)) == 0
    s3_server.start()
    assert await local.share_local() == 1
    assert s3_server.keys(bucket) == [f"spool/{entry.id}.wav"]
    assert Spool(tmp_path / "a").entries() == []
    assert log_lines.events("spool.s3_recovered", bucket=bucket)


async def test_refused_credentials_are_one_clear_log_line_without_the_key_or_the_secret(
    *, engine: AsyncEngine, batch_api: FakeDeepgramBatch, s3_server: S3Server, bucket: str, tmp_path: Path,
    log_lines: LogLines, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """S3 refuses the key (InvalidAccessKeyId): the entry stays on the disk, and the line names the code and the
    settings to check, never the key's value or the secret."""
    settings = settings_for(s3_server, bucket)
    local = worker(settings, batch_api, tmp_path / "a", shared(engine, settings, "a", Clock()))
    spool_audio(tmp_path / "a", SPEECH, start_s=0.0)
    check_credentials(monkeypatch)
    assert await local.share_local() == 0
    [failed] = log_lines.events("spool.s3_failed")
    assert failed["why"] == (
        "S3 refused the credentials (InvalidAccessKeyId): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )
    assert len(Spool(tmp_path / "a").entries()) == 1
    assert ACCESS_KEY not in log_lines.text()
    assert SECRET_KEY not in log_lines.text()


def test_a_spool_url_names_a_bucket_and_a_prefix() -> None:
    """s3://bucket/a/b/ is bucket "bucket" under "a/b/"; without a path, the bucket's top; anything else is refused."""
    assert split_spool_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    assert split_spool_url("s3://bucket") == ("bucket", "")
    for bad in ("https://bucket/x", "s3:///prefix", "bucket/prefix"):
        with pytest.raises(ValueError, match="s3://bucket"):
            make_settings(None, spool_url=bad)
    assert make_settings(None, spool_url="").spool_url is None
