"""Pause and resume from another process than the one holding the call: two real service processes (the Procfile's
web line) on one database, a caller's stream on the first, `POST /api/calls/{sid}/pause` and `/resume` to the
second, as a load balancer would route them.

The caller says words before the pause, during it and after it; the fake Deepgram hears each 0.5 s window of what it
is sent as one word (`said`). The words said while paused must appear nowhere (not at Deepgram, in neither
process's log, not in the database, the live feed, a webhook or an export); the others all do, in order, with one
`[paused]` marker between them, and the coverage counts the paused seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from service.simulator.messages import CallSpec
from service.storage import migrate
from service.storage.schema import create_engine
from tests.helpers.databases import dialect_of, shared_database
from tests.helpers.fakes.deepgram_server import FakeDeepgram, said
from tests.helpers.processes import start_web
from tests.helpers.sse import FeedReader
from tests.helpers.twilio_stream import streaming
from tests.helpers.waiting import eventually
from tests.helpers.webhooks import SECRET, Clock, Receiver, serving

API_TOKEN = "pause-t0ken"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
WINDOW = 4000  # bytes: one 0.5 s word of the fake's
FRAME = 160
BEFORE = ["hello", "my", "name", "is"]
PAUSED = ["quokka", "xylophone", "nebula", "zeppelin"]  # said while paused: never to be seen
AFTER = ["thanks", "for", "waiting", "goodbye"]
SILENCE = b"\xff" * WINDOW


def spoken(words: list[str]) -> bytes:
    """The words, then a silent window (which ends the fake's final)."""
    return b"".join(said(word) for word in words) + SILENCE


def frames(audio: bytes) -> int:
    return len(audio) // FRAME


async def stop(process: asyncio.subprocess.Process) -> str:
    os.killpg(process.pid, signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=40)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with shared_database(request.param, tmp_path) as url:
        if dialect_of(url) == "postgresql":
            await migrate.upgrade(url)  # the release phase's; a SQLite file, the first process migrates
        yield url


async def test_words_said_while_paused_from_another_process_appear_nowhere(
    deepgram: FakeDeepgram, database: str, tmp_path: Path
) -> None:
    first, second, after = spoken(BEFORE), spoken(PAUSED), spoken(AFTER)
    spec = CallSpec(inbound=first + second + after, speed=0)
    receiver = Receiver(Clock.real())
    async with serving(receiver) as hook:
        env = {"DATABASE_URL": database, "API_TOKEN": API_TOKEN, "TRANSCRIPT_WEBHOOK_URL": hook,
               "WEBHOOK_SECRET": SECRET}  # fmt: skip
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        holder, holder_url = await start_web(deepgram, tmp_path / "a", **env, DB_JOURNAL_PATH=str(tmp_path / "a.jsonl"))
        other, other_url = await start_web(deepgram, tmp_path / "b", **env, DB_JOURNAL_PATH=str(tmp_path / "b.jsonl"))
        try:
            async with (
                FeedReader(holder_url, AUTH) as feed,
                httpx.AsyncClient(base_url=other_url, headers=AUTH, timeout=10) as api,
            ):
                async with streaming(holder_url, spec) as stream:
                    await stream.send_media(frames(first))
                    await eventually(lambda: deepgram.connections and len(deepgram.connections[0].audio) >= len(first))
                    await eventually(lambda: api_has(api, f"/api/calls/{spec.call_sid}"))
                    paused = await api.post(f"/api/calls/{spec.call_sid}/pause", json={"by": "agent-7"})
                    await stream.send_media(frames(second))
                    await eventually(lambda: len(deepgram.connections[0].audio) >= len(first + second))
                    resumed = await api.post(f"/api/calls/{spec.call_sid}/resume", json={"by": "agent-7"})
                await receiver.wait_for("call.completed")
                await feed.wait_for("call.ended", call_sid=spec.call_sid)
                path = f"/api/calls/{spec.call_sid}"
                transcript = (await api.get(f"{path}/transcript", params={"format": "json"})).json()
                exports = [
                    (await api.get(f"{path}/transcript", params={"format": fmt})).text for fmt in ("text", "srt", "vtt")
                ]
                call = (await api.get(path)).json()
                report = (await api.get(f"{path}/report")).text
            stored = await database_text(database)
        finally:
            logs = [await stop(holder), await stop(other)]

    # Applied where the call is, at once, where the first part ended; resumed where the second ended.
    assert paused.status_code == 200, paused.text
    assert paused.json()["at_s"] == pytest.approx(len(first) / 8000, abs=0.1)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["at_s"] == pytest.approx(len(first + second) / 8000, abs=0.1)
    # Deepgram heard silence in the pause's place: the connection's audio is as long as the call's, not a word of it.
    heard = bytes(deepgram.connections[0].audio)
    assert heard[: len(first)] == first
    assert heard[len(first) : len(first + second)] == b"\xff" * len(second)
    assert heard[len(first + second) :] == after
    # The transcript: every word said outside the pause, in order, and the marker where the pause was.
    words = [word for utterance in transcript for word in utterance["text"].split()]
    assert words == [*BEFORE, "[paused]", *AFTER]
    [marker] = [u for u in transcript if u["text"] == "[paused]"]
    assert (marker["start"], marker["end"]) == (paused.json()["at_s"], resumed.json()["at_s"])
    assert call["coverage"]["paused_s"] == pytest.approx(len(second) / 8000, abs=0.1)
    assert call["coverage"]["complete"] is True
    # Nowhere: not in a log line, the database, a webhook, the feed or an export.
    webhooks = json.dumps(receiver.accepted)
    feed_text = json.dumps([event.data for event in feed.events])
    for place, content in [("holder's log", logs[0]), ("other's log", logs[1]), ("database", stored),
                           ("webhooks", webhooks), ("feed", feed_text), ("exports", "\n".join(exports)),
                           ("report", report)]:  # fmt: skip
        assert not [word for word in PAUSED if word in content], (
            place,
            [line for line in content.splitlines() if any(w in line for w in PAUSED)][:3],
        )
    assert all(word in webhooks for word in BEFORE + AFTER)
    # The feed said the call was paused, and by whom, then streaming again.
    states = [(event.data["state"], event.data["reason"]) for event in feed.of("call.state", call_sid=spec.call_sid)]
    assert ("paused", next(reason for state, reason in states if state == "paused")) in states
    assert any(reason == "transcription resumed by agent-7" for _, reason in states)
    # Audited in the log of the process that was asked, without content.
    audit_lines = [json.loads(line) for line in logs[1].splitlines() if '"audit"' in line]
    assert [(line["action"], line["actor"], line["subject"]) for line in audit_lines] == [
        ("pause", "agent-7", spec.call_sid), ("resume", "agent-7", spec.call_sid)
    ]  # fmt: skip


async def api_has(api: httpx.AsyncClient, path: str) -> bool:
    return (await api.get(path)).status_code == 200


async def database_text(url: str) -> str:
    """Every text a table holds, as one string."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            tables = ["calls", "utterances", "streams", "coverage", "webhook_deliveries", "alerts", "audit",
                      "call_controls"]  # fmt: skip
            rows = [
                str(row)
                for table in tables
                for row in (await connection.execute(text(f"SELECT * FROM {table}")))  # noqa: S608 - our own table names
            ]
    finally:
        await engine.dispose()
    return "\n".join(rows)
