"""End to end: post-call analysis (ANALYSIS). A two-sided call, streamed through the simulator to the fake live
Deepgram, is analysed by the fake `/v1/read` through the real SDK once it has ended; `call.analyzed` reaches the
webhook receiver with the fake's summary, and the API serves the analysis. A process stopped (SIGTERM) while its
analysis was under way leaves the job to the next process, which finishes it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.storage import migrate
from service.storage.schema import Job, create_engine
from tests.helpers.audio import call_audio
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.databases import database_url, migrated_url, shared_database
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch, summary_for
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.processes import start_web
from tests.helpers.service import make_settings, running_service
from tests.helpers.webhooks import SECRET, Clock, Receiver, serving

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

API_TOKEN = "api-t0ken"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def long_call() -> CallSpec:
    """Caller and agent, each with enough words (one per half second of the fake's audio) for an analysis."""
    return CallSpec(inbound=call_audio(501, 16.0), outbound=call_audio(502, 14.0), speed=0)


def analyzed(receiver: Receiver) -> list[dict[str, Any]]:
    return [event for event in receiver.accepted if event["type"] == "call.analyzed"]


def expected_summary(transcript: list[dict[str, Any]]) -> str:
    """The fake's summary of the text callscribe sends: one line per utterance, in order."""
    return summary_for("\n".join(utterance["text"] for utterance in transcript))


async def test_a_call_with_analysis_on_is_analysed_once_and_delivered(
    deepgram: FakeDeepgram, migrated_url: str, tmp_path: Path
) -> None:
    """call.analyzed carries the fake's summary, topics, intents and sentiment (per speaker: both sides spoke);
    GET /api/calls/{sid} has the same analysis, GET /api/calls the summary; /v1/read was asked once."""
    spec = long_call()
    receiver = Receiver(Clock.real())
    async with serving(receiver) as hook_url, FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as read_api:
        settings = make_settings(
            deepgram, stream_track="both_tracks", database_url=migrated_url, api_token=API_TOKEN,
            transcript_webhook_url=hook_url, webhook_secret=SECRET, db_journal_path=tmp_path / "journal.jsonl",
            deepgram_batch_url=read_api.url, analysis="on",
        )  # fmt: skip
        async with running_service(settings) as service, httpx.AsyncClient() as client:
            await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
            await receiver.wait_for("call.analyzed", timeout=30)
            call = (await client.get(f"{service.url}/api/calls/{spec.call_sid}", headers=AUTH)).json()
            listed = (await client.get(f"{service.url}/api/calls", headers=AUTH)).json()["calls"]
            transcript = (await client.get(f"{service.url}/api/calls/{spec.call_sid}/transcript", headers=AUTH)).json()
    [event] = analyzed(receiver)
    data = event["data"]
    assert data["call_sid"] == spec.call_sid
    assert (data["status"], data["reason"]) == ("done", None)
    assert data["summary"] == expected_summary(transcript)
    assert data["words"] == sum(len(u["text"].split()) for u in transcript) >= 50
    assert data["features"] == ["summary", "topics", "intents", "sentiment"]
    assert len(data["topics"]) == 3
    assert data["intents"] == [{"intent": "Make a statement", "confidence": 0.8}]
    assert set(data["sentiment"]["speakers"]) == {"caller", "agent"}
    assert len(data["sentiment"]["utterances"]) == len(transcript)
    assert event["id"] == f"call.analyzed:{spec.call_sid}:{data['version']}"
    assert call["analysis"] == {name: value for name, value in data.items() if name != "call_sid"}
    assert [entry["analysis_summary"] for entry in listed] == [data["summary"]]
    [request] = [r for r in read_api.requests if r.path == "/v1/read"]
    assert request.option("language") == "en"


async def test_a_short_call_is_skipped_with_its_reason_and_deepgram_is_not_asked(
    deepgram: FakeDeepgram, migrated_url: str, tmp_path: Path
) -> None:
    spec = CallSpec(inbound=call_audio(503, 2.0), speed=0)
    receiver = Receiver(Clock.real())
    async with serving(receiver) as hook_url, FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as read_api:
        settings = make_settings(
            deepgram, database_url=migrated_url, transcript_webhook_url=hook_url, webhook_secret=SECRET,
            db_journal_path=tmp_path / "journal.jsonl", deepgram_batch_url=read_api.url, analysis="summary",
        )  # fmt: skip
        async with running_service(settings) as service:
            await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
            await receiver.wait_for("call.analyzed", timeout=30)
    [event] = analyzed(receiver)
    assert event["data"]["status"] == "skipped"
    assert event["data"]["reason"].endswith("words: fewer than the 50 an analysis needs")
    assert event["data"]["summary"] is None
    assert read_api.requests == []


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_an_analysis_cut_short_by_sigterm_is_finished_by_the_next_process(
    deepgram: FakeDeepgram, tmp_path: Path, kind: str
) -> None:
    """The first process asks /v1/read, which holds the request; SIGTERM stops the process with the analysis
    unanswered (its job given back). A second process on the same database claims the job and delivers
    call.analyzed with the summary; the job is done, tried twice, and nothing was delivered twice."""
    spec = long_call()
    receiver = Receiver(Clock.real())
    async with (
        shared_database(kind, tmp_path) as url,
        serving(receiver) as hook_url,
        FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as read_api,
    ):
        await migrate.upgrade(url)
        common = {
            "DATABASE_URL": url, "ANALYSIS": "on", "STREAM_TRACK": "both_tracks", "DEEPGRAM_BATCH_URL": read_api.url,
            "TRANSCRIPT_WEBHOOK_URL": hook_url, "WEBHOOK_SECRET": SECRET,
        }  # fmt: skip
        read_api.read_hold = asyncio.Event()
        (tmp_path / "a").mkdir()
        first, first_url = await start_web(deepgram, tmp_path / "a", **common)
        try:
            await simulate_call(first_url, spec, auth_token=TWILIO_TOKEN)
            async with asyncio.timeout(30):
                await read_api.read_arrived.wait()  # the first process is analysing
        finally:
            os.killpg(first.pid, signal.SIGTERM)
            first_out, _ = await asyncio.wait_for(first.communicate(), timeout=40)
        assert analyzed(receiver) == []
        read_api.read_hold.set()  # too late for the first process: its connection is gone
        (tmp_path / "b").mkdir()
        second, _ = await start_web(deepgram, tmp_path / "b", **common)
        try:
            await receiver.wait_for("call.analyzed", timeout=30)
        finally:
            os.killpg(second.pid, signal.SIGTERM)
            await asyncio.wait_for(second.communicate(), timeout=40)
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                jobs = (await connection.execute(select(Job.status, Job.attempts, Job.reason))).all()
        finally:
            await engine.dispose()
    [event] = analyzed(receiver)
    assert event["data"]["status"] == "done"
    [held, answered] = [request for request in read_api.requests if request.path == "/v1/read"]
    assert held.body == answered.body  # the same transcript, asked again
    assert event["data"]["summary"] == summary_for(json.loads(answered.body)["text"])
    assert jobs == [("done", 2, None)]
    assert b"analysis.claim_given_back" in first_out
