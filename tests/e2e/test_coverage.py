"""End to end: a call's coverage, counted by the real service from a simulated call, stored, and shown by the API,
`calls show` and the page; a call spooled for batch says so and why, and turns complete when batch succeeds."""

from __future__ import annotations

import argparse
import asyncio
import html
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli import calls as calls_cli
from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.web import login_tokens
from service.web.dashboard import SESSION_COOKIE
from tests.helpers.audio import call_audio
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.databases import database_url, migrated_url
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings, running_service
from tests.helpers.waiting import eventually
from tests.helpers.webhooks import SECRET as HOOK
from tests.helpers.webhooks import Clock, Receiver, serving

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

API_TOKEN = "api-t0ken"
PASSWORD = "dash-passw0rd"
SECRET = "0123456789abcdef" * 4
KEYS = login_tokens.page_keys(SECRET.encode(), PASSWORD.encode())


def settings_for(deepgram: FakeDeepgram | None, migrated_url: str, tmp_path: Path, **more: Any) -> Any:
    return make_settings(
        deepgram, database_url=migrated_url, api_token=API_TOKEN, dashboard_password=PASSWORD, session_secret=SECRET,
        spool_dir=tmp_path / "spool", db_journal_path=tmp_path / "journal.jsonl", **more,
    )  # fmt: skip


async def stored_coverage(client: httpx.AsyncClient, url: str, call_sid: str, **expected: Any) -> dict[str, Any]:
    """The call's coverage from GET /api/calls/{sid} once it has the `expected` values (the writer runs beside)."""

    async def read() -> dict[str, Any] | None:
        response = await client.get(f"{url}/api/calls/{call_sid}", headers={"Authorization": f"Bearer {API_TOKEN}"})
        coverage = response.json().get("coverage") if response.status_code == 200 else None
        if coverage is not None and all(coverage.get(name) == value for name, value in expected.items()):
            return dict(coverage)
        return None

    return await eventually(read, timeout=15, interval=0.05)


async def page_says(client: httpx.AsyncClient, url: str, call_sid: str) -> str:
    """The call's page as a signed-in browser gets it (the coverage line and the feed's words, unescaped)."""
    session = login_tokens.issue_session(KEYS, now=time.time(), lifetime_s=3600)
    response = await client.get(f"{url}/calls/{call_sid}", headers={"Cookie": f"{SESSION_COOKIE}={session}"})
    assert response.status_code == 200
    return html.unescape(response.text)


async def calls_show(call_sid: str, migrated_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> tuple[str, str]:
    """`python -m service calls show CALL_SID` (its own event loop: in a thread, as from another shell)."""
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    parser = argparse.ArgumentParser()
    calls_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["calls", "show", call_sid])
    capsys.readouterr()  # what the service printed before
    assert await asyncio.to_thread(args.handler, args) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


async def test_a_call_without_a_deepgram_key_is_recorded_as_waiting_for_batch_and_says_why(
    log_lines: LogLines, migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """No key: every second of both tracks waits in the spool, and the API, `calls show` and the page say so, with
    the reason; the ended call's page no longer says its feed is live."""
    caller, agent = call_audio(401, 2.0), call_audio(402, 1.0)
    spec = CallSpec(inbound=caller, outbound=agent, speed=0)
    settings = settings_for(None, migrated_url, tmp_path, deepgram_api_key=None, stream_track="both_tracks")
    async with running_service(settings) as service, httpx.AsyncClient() as client:
        await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        coverage = await stored_coverage(client, service.url, spec.call_sid, complete=False)
        page = await page_says(client, service.url, spec.call_sid)

    assert (coverage["audio_s"], coverage["waiting_s"], coverage["live_s"]) == (3.0, 3.0, 0.0)
    assert coverage["waiting"] == [{"reason": "DEEPGRAM_API_KEY is not set", "seconds": 3.0}]
    assert coverage["missing"] == "3 s waiting for batch: DEEPGRAM_API_KEY is not set"
    assert (coverage["tracks"]["inbound"]["waiting_s"], coverage["tracks"]["outbound"]["waiting_s"]) == (2.0, 1.0)
    assert "Transcript incomplete: 3 s waiting for batch: DEEPGRAM_API_KEY is not set" in page
    assert "call ended: words from batch appear here as they come" in page
    assert ">connecting…<" not in page
    out, err = await calls_show(spec.call_sid, migrated_url, monkeypatch, capsys)
    assert out == ""
    assert err == (
        "coverage: incomplete: 3 s waiting for batch: DEEPGRAM_API_KEY is not set\n"
        "the transcript is empty: its audio is waiting for batch transcription (see coverage above)\n"
        "alerts: none\n"
    )


async def test_a_call_deepgram_refused_turns_complete_when_batch_transcribes_it(
    deepgram: FakeDeepgram, log_lines: LogLines, migrated_url: str, tmp_path: Path
) -> None:
    """Live refuses every connection (401): the call waits for batch with Deepgram's reason; batch fails at first
    (still waiting), then succeeds: the call is complete, its seconds counted as batch, its words stored."""
    deepgram.faults.reject_status = 401
    audio = call_audio(403, 2.0)
    spec = CallSpec(inbound=audio, speed=0)
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as batch:
        batch.fail_status = 503
        settings = settings_for(deepgram, migrated_url, tmp_path, deepgram_batch_url=batch.url, spool_retry_s=0.2)
        async with running_service(settings) as service, httpx.AsyncClient() as client:
            await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
            await log_lines.wait_for("batch.failed", timeout=10, call_sid=spec.call_sid)
            waiting = await stored_coverage(client, service.url, spec.call_sid, complete=False)
            batch.fail_status = None
            done = await stored_coverage(client, service.url, spec.call_sid, complete=True)
            page = await page_says(client, service.url, spec.call_sid)
            transcript = (
                await client.get(
                    f"{service.url}/api/calls/{spec.call_sid}/transcript",
                    headers={"Authorization": f"Bearer {API_TOKEN}"},
                )
            ).json()

    [(reason, seconds)] = [(w["reason"], w["seconds"]) for w in waiting["waiting"]]
    assert "401" in reason
    assert seconds == 2.0
    assert (done["batch_s"], done["waiting_s"], done["lost_s"], done["missing"]) == (2.0, 0.0, 0.0, "")
    assert "Transcript complete: all 2 s of audio transcribed" in page
    assert "call ended<" in page  # nothing left for the feed to bring
    assert [w for u in transcript for w in u["text"].split()] == expected_words(audio)


async def test_a_live_call_is_complete_and_call_completed_carries_its_coverage(
    deepgram: FakeDeepgram, migrated_url: str, tmp_path: Path
) -> None:
    """Every second final from live Deepgram: complete, nothing missing; GET /api/calls lists it so too, and the
    call.completed webhook carries the same coverage, per track."""
    spec = CallSpec(inbound=call_audio(404, 2.0), speed=0)
    receiver = Receiver(Clock.real())
    async with serving(receiver) as hook_url:
        settings = settings_for(deepgram, migrated_url, tmp_path, transcript_webhook_url=hook_url, webhook_secret=HOOK)
        async with running_service(settings) as service, httpx.AsyncClient() as client:
            await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
            coverage = await stored_coverage(client, service.url, spec.call_sid, complete=True)
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            listed = (await client.get(f"{service.url}/api/calls", headers=headers)).json()
            await receiver.wait_for("call.completed")
    [completed] = [event for event in receiver.accepted if event["type"] == "call.completed"]
    assert (coverage["audio_s"], coverage["live_s"], coverage["missing"]) == (2.0, 2.0, "")
    assert coverage["tracks"]["inbound"]["live_s"] == 2.0
    assert listed["calls"][0]["coverage"] == {name: value for name, value in coverage.items() if name != "tracks"}
    assert completed["data"]["coverage"] == coverage
