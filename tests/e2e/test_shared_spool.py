"""The spool outlives the dyno: two real service processes (the Procfile's web line) on one PostgreSQL database;
the first spools a call's audio, claims it for batch transcription and is killed (SIGKILL, its disk thrown away
as Heroku's is); the second transcribes it, once."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

from sqlalchemy import func, select, text

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.storage import migrate, queries
from service.storage.schema import SpoolSegment, create_engine
from tests.helpers.audio import call_audio
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.databases import fresh_postgres_database, postgres_server_url
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch, silent_api
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.processes import start_web
from tests.helpers.waiting import eventually

LEASE_S = "3"  # short, so the test need not wait minutes for the dead process's claim to run out


async def test_audio_spooled_by_a_killed_dyno_is_transcribed_by_the_other_once(
    deepgram: FakeDeepgram, tmp_path: Path
) -> None:
    """Live transcription refused (401): the call goes to the spool, the spool to the database; the first process
    claims it and dies; the second takes it once the lease ran out, and every word is stored once, from batch."""
    deepgram.faults.reject_status = 401
    spec = CallSpec(inbound=call_audio(171, 2.0), speed=0)
    async with fresh_postgres_database(postgres_server_url()) as url, silent_api() as silent:
        await migrate.upgrade(url)
        engine = create_engine(url)
        common = {"DATABASE_URL": url, "SPOOL_RETRY_S": "0.5", "SPOOL_CLAIM_LEASE_S": LEASE_S}
        try:
            (tmp_path / "a").mkdir()
            a, a_url = await start_web(deepgram, tmp_path / "a", **common, DEEPGRAM_BATCH_URL=silent)
            result = await simulate_call(a_url, spec, auth_token=TWILIO_TOKEN)
            assert result.close_code == 1000

            async def claimed() -> str | None:
                async with engine.connect() as connection:
                    return await connection.scalar(select(SpoolSegment.claimed_by))

            assert await eventually(claimed, timeout=20)  # in the database, and the first process is on it
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
                finally:
                    os.killpg(b.pid, signal.SIGTERM)
                    await asyncio.wait_for(b.communicate(), timeout=40)
                assert batch.request_count == 1
            async with engine.connect() as connection:
                left = await connection.scalar(select(func.count()).select_from(SpoolSegment))
                sources = (await connection.execute(text("SELECT DISTINCT source FROM utterances"))).scalars().all()
        finally:
            await engine.dispose()
    assert words == expected
    assert (left, list(sources)) == (0, ["batch"])
