"""Post-call analysis on the job mechanism (`storage/analyses.py`), on SQLite and PostgreSQL, against the fake
`/v1/read` through the real SDK: when a job is queued (a call complete, batch changing an ended call's transcript,
never a hand-over's end, one job per version), and what each answer leaves (the `analyses` row, the
`call.analyzed` event in the outbox, the job's end)."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.deepgram.text import DeepgramText
from service.settings import Settings
from service.storage import queries
from service.storage.analyses import AnalysisWorker, analysis_due, enqueue_version, read_lines, stored_analysis
from service.storage.job_policy import Policy
from service.storage.retention import purge_older_than
from service.storage.schema import Job, WebhookDelivery, create_engine
from service.storage.writes import Write
from service.stt.analysis import version
from tests.helpers.callsdb import insert, make_call, make_utterance
from tests.helpers.credentials import DEEPGRAM_KEY
from tests.helpers.databases import database_url, migrated_url
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch, summary_for
from tests.helpers.service import make_settings
from tests.helpers.spool import Clock, engine
from tests.storage.test_writer import ended as ended_event
from tests.storage.test_writer import idle, new_store, result, started
from tests.storage.test_writer import settings_for as writer_settings

__all__ = ["database_url", "engine", "migrated_url"]  # fixtures: SQLite and PostgreSQL

SENTENCE = "I would like to talk about my bill because it looks wrong to me today"  # 15 words


@pytest.fixture
async def read_api() -> AsyncIterator[FakeDeepgramBatch]:
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as fake:
        yield fake


def settings_for(fake: FakeDeepgramBatch, **overrides: Any) -> Settings:
    return make_settings(
        None, deepgram_batch_url=fake.url, analysis="on", transcript_webhook_url="http://127.0.0.1:9/h",
        webhook_secret="s3cret-for-tests", **overrides,
    )  # fmt: skip


def worker(settings: Settings, engine: AsyncEngine, clock: Clock) -> AnalysisWorker:
    policy = Policy(max_attempts=3, base_s=1.0, cap_s=1.0)
    return AnalysisWorker(settings, lambda: engine, lambda: DeepgramText(settings), owner="test", policy=policy,
                          clock=clock)  # fmt: skip


async def a_call(engine: AsyncEngine, call_sid: str = "CA1", *, lines: int = 4, status: str = "completed") -> None:
    """A call of `lines` utterances, alternating caller and agent (15 words each)."""
    tracks = ("inbound", "outbound")
    await insert(engine, [make_call(call_sid, status=status),
                          *(make_utterance(call_sid, tracks[n % 2], 2.0 * n, 2.0 * n + 1.5, SENTENCE)
                            for n in range(lines))])  # fmt: skip


async def ended(engine: AsyncEngine, write: Write, clock: Clock) -> None:
    """What the writer's transaction does with `write`: the call's analysis job, when `write` makes it due."""
    async with engine.begin() as connection:
        if await analysis_due(connection, write):
            await enqueue_version(connection, write.call_sid, clock.now)


async def jobs(engine: AsyncEngine) -> list[tuple[str, str, int, str | None]]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(Job.key, Job.status, Job.attempts, Job.reason).order_by(Job.created_at))
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def events(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        return list(await connection.scalars(select(WebhookDelivery.payload).where(
            WebhookDelivery.event_type == "call.analyzed").order_by(WebhookDelivery.created_at)))  # fmt: skip


def call_ended(call_sid: str = "CA1", **row: Any) -> Write:
    return Write("call_ended", {"call_sid": call_sid, **row}, f"MZ{call_sid}")


def batch_final(call_sid: str = "CA1", source: str = "batch") -> Write:
    return Write("utterance", {"call_sid": call_sid, "source": source}, f"MZ{call_sid}")


async def test_a_job_is_queued_once_per_version_and_never_at_a_hand_overs_end(engine: AsyncEngine) -> None:
    clock = Clock()
    await a_call(engine)
    await ended(engine, call_ended(handed_over=True), clock)
    assert await jobs(engine) == []  # the stream moved on: the call goes on elsewhere
    await ended(engine, call_ended(), clock)
    await ended(engine, call_ended(), clock)  # a journal replay: the same version
    async with engine.connect() as connection:
        first = version(await read_lines(connection, "CA1"))
    assert await jobs(engine) == [(f"CA1:{first}", "pending", 0, None)]
    await ended(engine, batch_final(source="live"), clock)  # a live final: no new version to analyse
    await insert(engine, [make_utterance("CA1", "inbound", 20.0, 21.0, "and one more thing", source="batch")])
    clock.advance(1)
    await ended(engine, batch_final(), clock)
    async with engine.connect() as connection:
        second = version(await read_lines(connection, "CA1"))
    assert [key for key, *_ in await jobs(engine)] == [f"CA1:{first}", f"CA1:{second}"]  # batch filled a gap


async def test_batch_finals_of_an_ended_call_written_together_queue_one_analysis(
    migrated_url: str, tmp_path: Path
) -> None:
    """The writer queues a call's analysis once per batch, for its transcript after the batch: three batch finals of
    an ended call written together make one job (the last version), not one per intermediate version."""
    store = new_store(writer_settings(migrated_url, tmp_path, analysis="on"))
    await store.start()
    store.call_started(started("CA1"))
    store.transcript(result("CA1", "inbound", 0.5, "Hello there."))
    store.call_ended(ended_event("CA1"))
    await idle(store)
    for start in (5.0, 7.0, 9.0):  # in one go: the writer takes them as one batch
        store.transcript(result("CA1", "outbound", start, f"Filled in at {start:g} seconds.", batch=True))
    await idle(store)
    await store.stop(5)
    engine = create_engine(migrated_url)
    try:
        async with engine.connect() as connection:
            now = version(await read_lines(connection, "CA1"))
        keys = [key for key, *_ in await jobs(engine)]
    finally:
        await engine.dispose()
    assert len(keys) == 2, keys  # the call's end, then the batch
    assert keys[-1] == f"CA1:{now}"


async def test_batch_finals_of_a_call_still_on_queue_nothing(engine: AsyncEngine) -> None:
    clock = Clock()
    await a_call(engine, status="active")
    await ended(engine, batch_final(), clock)
    assert await jobs(engine) == []


async def test_a_429_is_tried_again_after_a_backoff_then_the_analysis_is_stored_and_reported(
    engine: AsyncEngine, read_api: FakeDeepgramBatch
) -> None:
    clock = Clock()
    await a_call(engine)
    await ended(engine, call_ended(), clock)
    read_api.read_fail_status, read_api.read_fail_count = 429, 1
    analyst = worker(settings_for(read_api), engine, clock)
    assert await analyst.run_once() == 0
    [(_, status, attempts, reason)] = await jobs(engine)
    assert (status, attempts) == ("pending", 1)
    assert reason is not None
    assert "HTTP 429" in reason
    assert await stored_analysis(engine, "CA1") is None
    clock.advance(1.01)
    assert await analyst.run_once() == 1
    analysis = await stored_analysis(engine, "CA1")
    assert analysis is not None
    assert analysis["status"] == "done"
    assert analysis["summary"] == summary_for("\n".join([SENTENCE] * 4))
    assert set(analysis["sentiment"]["speakers"]) == {"caller", "agent"}
    assert [(status, attempts) for _, status, attempts, _ in await jobs(engine)] == [("done", 2)]
    [event] = await events(engine)
    assert event["data"] == {"call_sid": "CA1", **analysis}
    assert len(read_api.requests) == 2


async def test_a_400_is_recorded_as_failed_with_deepgrams_words_and_not_tried_again(
    engine: AsyncEngine, read_api: FakeDeepgramBatch
) -> None:
    clock = Clock()
    await a_call(engine)
    await ended(engine, call_ended(), clock)
    read_api.read_fail_status = 400
    analyst = worker(settings_for(read_api), engine, clock)
    assert await analyst.run_once() == 1
    clock.advance(3600)
    assert await analyst.run_once() == 0
    analysis = await stored_analysis(engine, "CA1")
    assert analysis is not None
    assert (analysis["status"], analysis["summary"]) == ("failed", None)
    assert "HTTP 400" in analysis["reason"]
    assert [event["data"]["status"] for event in await events(engine)] == ["failed"]
    assert len(read_api.requests) == 1


@pytest.mark.parametrize(
    ("overrides", "lines", "reason"),
    [
        ({"deepgram_language": "es"}, 4, "the call is in es, and the analysis reads English only"),
        ({}, 3, "45 words: fewer than the 50 an analysis needs"),
    ],
)
async def test_what_cannot_be_analysed_is_skipped_with_its_reason_without_asking_deepgram(
    engine: AsyncEngine, read_api: FakeDeepgramBatch, overrides: dict[str, Any], lines: int, reason: str
) -> None:
    clock = Clock()
    await a_call(engine, lines=lines)
    await ended(engine, call_ended(), clock)
    assert await worker(settings_for(read_api, **overrides), engine, clock).run_once() == 1
    assert [(status, why) for _, status, _, why in await jobs(engine)] == [("skipped", reason)]
    analysis = await stored_analysis(engine, "CA1")
    assert analysis is not None
    assert (analysis["status"], analysis["reason"]) == ("skipped", reason)
    assert read_api.requests == []


async def test_an_older_job_after_the_newer_one_analyses_nothing_twice(
    engine: AsyncEngine, read_api: FakeDeepgramBatch
) -> None:
    """Two versions queued (the end, then a batch final) and both due: the first analyses the transcript as it
    is now, the second finds that version analysed already: one request, one event."""
    clock = Clock()
    await a_call(engine)
    await ended(engine, call_ended(), clock)
    await insert(engine, [make_utterance("CA1", "inbound", 20.0, 21.0, "and one more thing", source="batch")])
    await ended(engine, batch_final(), clock)
    assert await worker(settings_for(read_api), engine, clock).run_once() == 2
    assert sorted(status for _, status, _, _ in await jobs(engine)) == ["done", "skipped"]
    assert len(read_api.requests) == 1
    assert len(await events(engine)) == 1


async def test_by_hand_a_call_is_analysed_again_and_a_missing_one_is_none(
    engine: AsyncEngine, read_api: FakeDeepgramBatch
) -> None:
    clock = Clock()
    await a_call(engine)
    analyst = worker(settings_for(read_api), engine, clock)
    first = await analyst.analyze_now("CA1")
    assert first is not None
    assert first["status"] == "done"
    clock.advance(5)
    again = await analyst.analyze_now("CA1")
    assert again is not None
    assert again["analyzed_at"] > first["analyzed_at"]
    assert len(read_api.requests) == 2
    assert await analyst.analyze_now("CA404") is None
    read_api.read_fail_status = 503
    retry = await analyst.analyze_now("CA1")
    assert retry is not None
    assert retry["status"] == "retry"
    assert "HTTP 503" in retry["reason"]
    assert await stored_analysis(engine, "CA1") == again  # a failure that may pass is not stored


async def test_deleting_or_purging_a_call_takes_its_analysis_and_jobs_with_it(
    engine: AsyncEngine, read_api: FakeDeepgramBatch
) -> None:
    """A summary is the call's words: DELETE /api/calls/{sid} and RETENTION_DAYS remove it, and the call's jobs."""
    clock = Clock()
    for call_sid in ("CA1", "CA2"):
        await a_call(engine, call_sid)
        await ended(engine, call_ended(call_sid), clock)
    assert await worker(settings_for(read_api), engine, clock).run_once() == 2
    assert await queries.delete_call(engine, "CA1")
    assert await purge_older_than(engine, 1, datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3650)) == 1
    assert (await stored_analysis(engine, "CA1"), await stored_analysis(engine, "CA2")) == (None, None)
    assert await jobs(engine) == []
