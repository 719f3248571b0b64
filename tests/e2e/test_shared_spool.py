"""The spool outlives the dyno: two real service processes (the Procfile's web line) on one database; the first
spools a call's audio, claims it for batch transcription and is killed (SIGKILL, its disk thrown away as
Heroku's is); the second transcribes it, once. The audio is kept in PostgreSQL itself, or in S3
(SPOOL_URL=s3://bucket/prefix, moto's S3 server) with the rows in PostgreSQL as on Heroku, or in one SQLite
file as on one machine."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.storage import migrate, queries
from service.storage.schema import SpoolSegment, create_engine
from tests.helpers.audio import call_audio
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.databases import shared_database
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch, silent_api
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.processes import start_web
from tests.helpers.s3 import S3Server, s3_server, s3_settings
from tests.helpers.waiting import eventually

__all__ = ["s3_server"]  # fixture, taken by the S3 cases only

LEASE_S = "3"  # short, so the test need not wait minutes for the dead process's claim to run out


@pytest.mark.parametrize(("kind", "audio_in"), [("postgresql", "database"), ("postgresql", "s3"), ("sqlite", "s3")])
async def test_audio_spooled_by_a_killed_dyno_is_transcribed_by_the_other_once(
    deepgram: FakeDeepgram, tmp_path: Path, request: pytest.FixtureRequest, kind: str, audio_in: str
) -> None:
    """Live transcription refused (401): the call is spooled, its row into the database (its audio there too, or
    into the bucket); the first process claims it and dies; the second takes it once the lease ran out, every
    word is stored once, from batch, and neither row nor object is left."""
    deepgram.faults.reject_status = 401
    s3: S3Server | None = request.getfixturevalue("s3_server") if audio_in == "s3" else None
    bucket = s3.new_bucket() if s3 is not None else ""
    spec = CallSpec(inbound=call_audio(171, 2.0), speed=0)
    async with shared_database(kind, tmp_path) as url, silent_api() as silent:
        await migrate.upgrade(url)
        engine = create_engine(url)
        common = {
            "DATABASE_URL": url, "SPOOL_RETRY_S": "0.5", "SPOOL_CLAIM_LEASE_S": LEASE_S,
            **(s3_settings(s3, bucket) if s3 is not None else {}),
        }  # fmt: skip
        try:
            (tmp_path / "a").mkdir()
            a, a_url = await start_web(deepgram, tmp_path / "a", **common, DEEPGRAM_BATCH_URL=silent)
            result = await simulate_call(a_url, spec, auth_token=TWILIO_TOKEN)
            assert result.close_code == 1000

            async def claimed() -> str | None:
                async with engine.connect() as connection:
                    return await connection.scalar(select(SpoolSegment.claimed_by))

            assert await eventually(claimed, timeout=20)  # in the database, and the first process is on it
            if s3 is not None:
                assert len(s3.keys(bucket)) == 1  # its audio in the bucket
            os.killpg(a.pid, signal.SIGKILL)
            await a.wait()
            shutil.rmtree(tmp_path / "a")  # the dyno's disk goes with it
            async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as batch:
                (tmp_path / "b").mkdir()
                b, _ = await start_web(deepgram, tmp_path / "b", **common, DEEPGRAM_BATCH_URL=batch.url)
                try:
                    expected = expected_words(bytes(result.sent["inbound"]))

                    async def stored() -> list[str] | None:
                        utterances = await queries.get_utterances(engine, spec.call_sid)
                        words = [word for u in utterances for word in u.text.split()]
                        return words if len(words) >= len(expected) else None

                    words = await eventually(stored, timeout=30)
                    await eventually(lambda: batch.request_count >= 1)
                    if s3 is not None:
                        await eventually(lambda: s3.keys(bucket) == [], timeout=10)
                finally:
                    os.killpg(b.pid, signal.SIGTERM)
                    b_out, b_err = await asyncio.wait_for(b.communicate(), timeout=40)
                assert batch.request_count == 1
            async with engine.connect() as connection:
                left = await connection.scalar(select(func.count()).select_from(SpoolSegment))
                sources = (await connection.execute(text("SELECT DISTINCT source FROM utterances"))).scalars().all()
        finally:
            await engine.dispose()
    assert words == expected
    assert (left, list(sources)) == (0, ["batch"])
    if s3 is not None:
        b_log = (b_out + b_err).decode()
        assert f"s3://{bucket}/spool" in b_log  # the ready line says where the spool is
        assert "callscribe-test-secret" not in b_log
