"""End to end: a call in two languages (DEEPGRAM_LANGUAGE=multi) keeps them everywhere it goes.

Twilio's simulator drives `/voice` and `/media`; the fake Deepgram gives each word a language picked by its audio
(`expected_languages`). The caller speaks mostly English and the agent Spanish, so most of the call's words are
Spanish: the caller's utterances are the ones in another language than the call's. Each word's language and
each utterance's languages must reach the database, the API's JSON, the WebVTT export (a `<lang>` span on
exactly the caller's cues), the live feed and the call's page.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
from typing import Any

import httpx
import sqlalchemy as sa
import webvtt
from playwright.async_api import expect

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.storage.schema import create_engine
from tests.helpers.audio import call_audio
from tests.helpers.browser import chromium
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.databases import database_url, migrated_url
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_languages, expected_words, languages_of
from tests.helpers.service import make_settings, running_service
from tests.helpers.sse import FeedReader
from tests.helpers.waiting import eventually

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

API_TOKEN = "lang-t0ken"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PASSWORD = "page-passw0rd"
# Chosen so that the call's language is Spanish by either count the page makes (words, or each final's words
# for its first language): 9 English words and 11 Spanish, each caller final English-first, each agent final
# Spanish-first.
CALLER, AGENT = call_audio(710, 4.0), call_audio(723, 6.0)


def test_the_call_is_in_two_languages_and_mostly_spanish() -> None:
    """What the other tests take as given about the audio: both languages, Spanish the most words, each caller
    final (four words) English-first and each agent final Spanish-first."""
    spoken = collections.Counter(expected_languages(CALLER) + expected_languages(AGENT))
    assert spoken["es"] > spoken["en"] > 0
    for audio, first in ((CALLER, "en"), (AGENT, "es")):
        languages = expected_languages(audio)
        assert {languages_of(languages[i : i + 4])[0] for i in range(0, len(languages), 4)} == {first}


async def stored_transcript(client: httpx.AsyncClient, url: str, call_sid: str) -> list[dict[str, Any]]:
    words = len(expected_words(CALLER)) + len(expected_words(AGENT))

    async def complete() -> list[dict[str, Any]] | None:
        response = await client.get(f"{url}/api/calls/{call_sid}/transcript", headers=AUTH)
        if response.status_code == 200 and sum(len(u["words"]) for u in response.json()) >= words:
            return list(response.json())
        return None

    return await eventually(complete, timeout=10, interval=0.05)


async def test_two_languages_reach_the_database_the_exports_and_the_feed(
    deepgram: FakeDeepgram, migrated_url: str
) -> None:
    """Every word keeps its language, every utterance its languages (most words first), in the stored rows, the
    JSON, the feed's finals; the WebVTT export marks exactly the cues not in the call's language, Spanish."""
    spec = CallSpec(inbound=CALLER, outbound=AGENT, speed=0)
    settings = make_settings(
        deepgram, stream_track="both_tracks", database_url=migrated_url, api_token=API_TOKEN, deepgram_language="multi"
    )
    async with running_service(settings) as service, FeedReader(service.url, AUTH) as feed:
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        assert result.close_code == 1000
        await feed.wait_for("call.ended", call_sid=spec.call_sid)
        async with httpx.AsyncClient() as client:
            transcript = await stored_transcript(client, service.url, spec.call_sid)
            vtt = await client.get(f"{service.url}/api/calls/{spec.call_sid}/transcript?format=vtt", headers=AUTH)

    assert {connection.option("language") for connection in deepgram.connections} == {"multi"}
    for track, audio in (("inbound", CALLER), ("outbound", AGENT)):
        utterances = [u for u in transcript if u["track"] == track]
        assert [w["word"] for u in utterances for w in u["words"]] == expected_words(audio)
        assert [w["language"] for u in utterances for w in u["words"]] == expected_languages(audio)
    assert all(u["languages"] == languages_of([w["language"] for w in u["words"]]) for u in transcript)

    engine = create_engine(migrated_url)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(sa.text("SELECT key, languages FROM utterances ORDER BY start, track, key"))
            ).all()
    finally:
        await engine.dispose()
    stored = [json.loads(languages) if isinstance(languages, str) else languages for _, languages in rows]
    assert stored == [u["languages"] for u in transcript]

    cues = webvtt.from_string(vtt.text).captions
    assert len(cues) == len(transcript)
    marks = [re.fullmatch(r"<v [^>]+><lang ([a-z-]+)>.*</lang>", cue.raw_text) for cue in cues]
    own = [u["languages"][0] for u in transcript]
    assert [mark[1] if mark else None for mark in marks] == [None if language == "es" else language for language in own]
    assert {mark[1] for mark in marks if mark} == {"en"}

    finals = [e.data for e in feed.events if e.event == "transcript" and e.data["is_final"]]
    finals.sort(key=lambda final: (final["start"], final["track"]))
    assert [(f["track"], f["start"], f["languages"]) for f in finals] == [
        (u["track"], u["start"], u["languages"]) for u in transcript
    ]


async def test_the_page_tags_what_is_not_in_the_calls_language_live_and_after_a_reload(deepgram: FakeDeepgram) -> None:
    """The call's page, watched while the call runs: each caller final gets an `en` tag, no agent final one; a
    reload (the stored transcript, rendered by the server) shows the same tags."""
    spec = CallSpec(inbound=CALLER, outbound=AGENT, speed=1)
    settings = make_settings(
        deepgram, stream_track="both_tracks", dashboard_password=PASSWORD, api_token=API_TOKEN,
        deepgram_language="multi",
    )  # fmt: skip
    async with running_service(settings) as service, chromium() as browser, httpx.AsyncClient() as client:
        url = f"http://localhost:{service.port}"
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{url}/login")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await expect(page).to_have_url(f"{url}/")
        call = asyncio.create_task(simulate_call(service.url, spec, auth_token=TWILIO_TOKEN))

        async def started() -> bool:
            return (await client.get(f"{service.url}/api/calls/{spec.call_sid}", headers=AUTH)).status_code == 200

        await eventually(started, timeout=10, interval=0.05)
        await page.goto(f"{url}/calls/{spec.call_sid}")
        assert (await call).close_code == 1000
        await expect(page.locator("#call-state")).to_have_text("ended", timeout=15000)
        for reloaded in (False, True):
            if reloaded:
                await page.reload()
            caller = page.locator('.lane[data-speaker="caller"] li.final')
            await expect(caller).to_have_count(2)
            await expect(caller.locator(".lang")).to_have_text(["en", "en"])
            await expect(page.locator('.lane[data-speaker="agent"] li.final')).to_have_count(3)
            await expect(page.locator('.lane[data-speaker="agent"] .lang')).to_have_count(0)
            await expect(caller.locator(".text").first).to_have_attribute("lang", "en")
        await context.close()
