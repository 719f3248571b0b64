"""A pause end to end in one process: a call paused before its stream starts is silent from its first frame (the
stream reads its call's record before relaying), a pause past its maximum length resumes by itself, audited as
callscribe's, and the page (in a real headless Chromium) shows a pause as it happens."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.async_api import expect

from service.simulator.messages import CallSpec
from service.storage.audit import audit_entries
from service.storage.schema import create_engine
from tests.e2e.test_not_streamed import answer_voice
from tests.e2e.test_page import PASSWORD, log_in
from tests.e2e.test_pause import AFTER, BEFORE, frames, spoken
from tests.helpers.browser import chromium
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings, running_service
from tests.helpers.twilio_stream import streaming
from tests.helpers.waiting import eventually

API_TOKEN = "pause-t0ken"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def test_a_call_paused_before_its_stream_starts_is_silent_from_its_first_frame(
    deepgram: FakeDeepgram, tmp_path: Path
) -> None:
    first, after = spoken(BEFORE), spoken(AFTER)
    spec = CallSpec(inbound=first + after, speed=0)
    settings = make_settings(deepgram, api_token=API_TOKEN, database_url=f"sqlite:///{tmp_path / 'calls.sqlite3'}",
                             db_journal_path=tmp_path / "journal.jsonl")  # fmt: skip
    async with running_service(settings) as service, httpx.AsyncClient(base_url=service.url, headers=AUTH) as api:
        assert (await answer_voice(service.url, spec)).status_code == 200
        await eventually(lambda: api_has(api, f"/api/calls/{spec.call_sid}"))  # /voice's record, written queued
        early = await api.post(f"/api/calls/{spec.call_sid}/pause", json={"by": "agent-7"})
        async with streaming(service.url, spec) as stream:
            await stream.send_media(frames(first))
            await eventually(lambda: deepgram.connections and len(deepgram.connections[0].audio) >= len(first))
            resumed = await api.post(f"/api/calls/{spec.call_sid}/resume")
        await eventually(lambda: called_ended(api, spec.call_sid))
        utterances = (await api.get(f"/api/calls/{spec.call_sid}/transcript", params={"format": "json"})).json()

    # Recorded while no process had the call's stream: 202, applied when the stream started.
    assert early.status_code == 202
    assert early.json()["applied"] is False
    assert resumed.status_code == 200
    heard = bytes(deepgram.connections[0].audio)
    assert heard[: len(first)] == b"\xff" * len(first)
    assert heard[len(first) :] == after
    assert [u["text"] for u in utterances][:1] == ["[paused]"]
    assert utterances[0]["start"] == 0.0
    assert " ".join(u["text"] for u in utterances[1:]) == " ".join(AFTER)


async def test_a_pause_past_its_maximum_resumes_by_itself(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path
) -> None:
    first, after = spoken(BEFORE), spoken(AFTER)
    spec = CallSpec(inbound=first + after, speed=0)
    database = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    settings = make_settings(deepgram, api_token=API_TOKEN, database_url=database,
                             db_journal_path=tmp_path / "journal.jsonl")  # fmt: skip
    async with running_service(settings) as service, httpx.AsyncClient(base_url=service.url, headers=AUTH) as api:
        async with streaming(service.url, spec) as stream:
            await stream.send_media(frames(first) - 25)  # all but its last (silent) window
            await eventually(lambda: api_has(api, f"/api/calls/{spec.call_sid}"))
            paused = await api.post(f"/api/calls/{spec.call_sid}/pause", json={"max_s": 1})
            await log_lines.wait_for("call.resumed", by="callscribe")
        await eventually(lambda: called_ended(api, spec.call_sid))
        utterances = (await api.get(f"/api/calls/{spec.call_sid}/transcript", params={"format": "json"})).json()

    assert paused.status_code == 200
    assert paused.json()["resume_at"] is not None
    words = [word for u in utterances for word in u["text"].split()]
    assert words == [*BEFORE, "[paused]", *AFTER]  # the pause covered only silence: nothing said was lost
    engine = create_engine(database)
    try:
        entries = await audit_entries(engine)
    finally:
        await engine.dispose()
    assert [(entry.action, entry.actor) for entry in entries] == [("auto_resume", "callscribe"), ("pause", "api")]
    assert bytes(deepgram.connections[0].audio) == first + after  # nothing said while paused: nothing silenced


async def api_has(api: httpx.AsyncClient, path: str) -> bool:
    return (await api.get(path)).status_code == 200


async def called_ended(api: httpx.AsyncClient, call_sid: str) -> bool:
    response = await api.get(f"/api/calls/{call_sid}")
    return response.status_code == 200 and response.json()["status"] == "completed"


async def test_the_page_shows_a_pause_as_it_happens(deepgram: FakeDeepgram) -> None:
    first, after = spoken(BEFORE), spoken(AFTER)
    spec = CallSpec(inbound=first + after, speed=0, from_number="+15005550199")
    settings = make_settings(deepgram, api_token=API_TOKEN, dashboard_password=PASSWORD)
    async with (
        running_service(settings) as service,
        chromium() as browser,
        httpx.AsyncClient(base_url=service.url, headers=AUTH) as api,
    ):
        url = f"http://localhost:{service.port}"
        context = await browser.new_context()
        listing = await context.new_page()
        await log_in(listing, url)
        await expect(listing.locator("#feed-status")).to_have_text("live")
        async with streaming(service.url, spec) as stream:
            await stream.send_media(frames(first))
            row = listing.locator(f'#active tr[data-call-sid="{spec.call_sid}"] .state')
            await expect(row).to_have_text("streaming")
            page = await context.new_page()
            await page.goto(f"{url}/calls/{spec.call_sid}")
            await expect(page.locator("#feed-status")).to_have_text("live")
            await eventually(lambda: api_has(api, f"/api/calls/{spec.call_sid}"))
            assert (await api.post(f"/api/calls/{spec.call_sid}/pause", json={"by": "agent-7"})).status_code == 200
            await expect(row).to_have_text("paused")
            await expect(row).to_have_attribute("title", re.compile("transcription paused on request"))
            await expect(page.locator("#call-state")).to_have_text("paused")
            assert (await api.post(f"/api/calls/{spec.call_sid}/resume")).status_code == 200
            await expect(page.locator("#call-state")).to_have_text("streaming")
            await expect(row).to_have_text("streaming")
        await expect(page.locator("#call-state")).to_have_text("ended", timeout=15000)
        caller = page.locator('.lane[data-speaker="caller"] li.final .text')
        await expect(caller.filter(has_text="[paused]")).to_have_count(1)
        await context.close()
