"""End to end: live alerts on a real port. A two-track call, with a rule for a phrase the caller says (split across
two finals) and a rule for a disclosure the agent never makes, raises each alert once: on the live feed, as a
signed webhook, stored with the call and served by /api, and on the page (in a real Chromium)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from playwright.async_api import expect

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from tests.e2e.test_live_feed import documented
from tests.e2e.test_page import PASSWORD, lane_words, log_in
from tests.helpers.audio import call_audio
from tests.helpers.browser import chromium
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.databases import database_url, migrated_url
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings, running_service
from tests.helpers.sse import FeedReader
from tests.helpers.waiting import eventually
from tests.helpers.webhooks import SECRET, Clock, Receiver, serving

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

API_TOKEN = "alerts-t0ken"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
WORD_S = 0.5  # the fake Deepgram hears one word per 0.5 s window, and sends a final every four


async def test_a_said_phrase_and_a_missing_disclosure_each_alert_once_everywhere(
    deepgram: FakeDeepgram, log_lines: LogLines, migrated_url: str, tmp_path: Any
) -> None:
    """The caller's phrase (its words in two finals) and the agent's missing disclosure: one `call.alert` each on
    the feed, one signed webhook each, the same two stored and served with the call."""
    caller, agent = call_audio(601, 3.0), call_audio(602, 2.0)
    said = expected_words(caller)
    phrase = f"{said[3].upper()} {said[4]}"  # words 4 and 5: the end of the first final, the start of the second
    rules = [
        {"name": "cancel", "phrases": [phrase], "speaker": "caller"},
        {"name": "disclosure", "phrases": ["this call is recorded"], "speaker": "agent", "absent_within_s": 1.0},
        {"name": "agent says it", "phrases": [phrase], "speaker": "agent"},  # said by the caller only: never fires
    ]
    spec = CallSpec(inbound=caller, outbound=agent, speed=0)
    receiver = Receiver(Clock.real())
    async with serving(receiver) as hook_url:
        settings = make_settings(
            deepgram, stream_track="both_tracks", database_url=migrated_url, api_token=API_TOKEN,
            transcript_webhook_url=hook_url, webhook_secret=SECRET, db_journal_path=tmp_path / "journal.jsonl",
            alert_rules=json.dumps(rules),
        )  # fmt: skip
        async with (
            running_service(settings) as service,
            FeedReader(service.url, AUTH) as feed,
            httpx.AsyncClient() as client,
        ):
            await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
            await feed.wait_for("call.ended", call_sid=spec.call_sid)
            await receiver.wait_for("call.completed")
            await eventually(lambda: sum(event["type"] == "call.alert" for event in receiver.accepted) >= 2)
            call = (await client.get(f"{service.url}/api/calls/{spec.call_sid}", headers=AUTH)).json()
            listed = (await client.get(f"{service.url}/api/calls", headers=AUTH)).json()["calls"]

    on_feed = [event for event in feed.events if event.event == "call.alert"]
    assert all(documented(event) for event in on_feed)
    by_rule = {event.data["rule"]: event.data for event in on_feed}
    assert sorted(event.data["rule"] for event in on_feed) == ["cancel", "disclosure"]  # once each
    cancel, disclosure = by_rule["cancel"], by_rule["disclosure"]
    assert cancel == {
        "type": "call.alert", "alert_id": cancel["alert_id"], "call_sid": spec.call_sid, "rule": "cancel",
        "kind": "said", "speaker": "caller", "track": "inbound", "phrase": phrase, "text": f"{said[3]} {said[4]}",
        "start": 3 * WORD_S, "end": 5 * WORD_S, "raised_at": cancel["raised_at"],
    }  # fmt: skip
    assert (disclosure["kind"], disclosure["speaker"], disclosure["track"]) == ("absent", "agent", "outbound")
    assert (disclosure["start"], disclosure["end"], disclosure["text"]) == (0.0, 1.0, "")

    inbound_finals = [e.data["text"].split() for e in feed.events if e.event == "transcript" and e.data["is_final"]
                      and e.data["track"] == "inbound"]  # fmt: skip
    assert not any(said[3] in words and said[4] in words for words in inbound_finals), "the phrase spans two finals"
    # The alert follows the final that completed the phrase, on the feed.
    order = [(event.event, event.data.get("track"), event.data.get("text", "")) for event in feed.events]
    completing = next(
        index for index, (kind, track, text) in enumerate(order)
        if kind == "transcript" and track == "inbound" and said[4] in text.split() and event_is_final(feed, index)
    )  # fmt: skip
    assert order.index(("call.alert", "inbound", cancel["text"])) == completing + 1

    hooks = [event for event in receiver.accepted if event["type"] == "call.alert"]
    assert sorted(event["data"]["rule"] for event in hooks) == ["cancel", "disclosure"]  # once each, signed
    for hook in hooks:
        data = {key: value for key, value in by_rule[hook["data"]["rule"]].items() if key != "type"}
        assert hook["id"] == f"call.alert:{data['alert_id']}"
        assert {key: value for key, value in hook["data"].items() if key != "raised_at"} == {
            key: value for key, value in data.items() if key != "raised_at"
        }

    # The call's one report carries them too, the disclosure decided at its end included.
    [completed] = [event for event in receiver.accepted if event["type"] == "call.completed"]
    assert [(a["rule"], a["alert_id"]) for a in completed["data"]["alerts"]] == [
        ("disclosure", disclosure["alert_id"]),
        ("cancel", cancel["alert_id"]),
    ]
    assert call["alert_count"] == 2
    assert [(alert["rule"], alert["start"]) for alert in call["alerts"]] == [("disclosure", 0.0), ("cancel", 1.5)]
    assert {alert["alert_id"] for alert in call["alerts"]} == {cancel["alert_id"], disclosure["alert_id"]}
    assert [entry["alert_count"] for entry in listed if entry["call_sid"] == spec.call_sid] == [2]
    assert len(log_lines.events("call.alert", call_sid=spec.call_sid)) == 2


def event_is_final(feed: FeedReader, index: int) -> bool:
    return bool(feed.events[index].data.get("is_final"))


async def test_the_page_lists_alerts_and_marks_their_words_live_and_after_a_reload(deepgram: FakeDeepgram) -> None:
    """In Chromium: the call's page marks the caller's phrase in the caller's lane as the alert comes, and lists
    both alerts; a reload shows the same from the database; the list counts the call's alerts."""
    caller, agent = call_audio(611, 4.0), call_audio(612, 3.0)
    said = expected_words(caller)
    rules = [
        {"name": "cancel", "phrases": [f"{said[3]} {said[4]}"], "speaker": "caller"},
        {"name": "disclosure", "phrases": ["this call is recorded"], "speaker": "agent", "absent_within_s": 1.0},
    ]
    spec = CallSpec(inbound=caller, outbound=agent, speed=1, from_number="+15005550123")
    settings = make_settings(
        deepgram, dashboard_password=PASSWORD, stream_track="both_tracks", alert_rules=json.dumps(rules)
    )
    async with running_service(settings) as service, chromium() as browser:
        url = f"http://localhost:{service.port}"
        context = await browser.new_context(viewport={"width": 1100, "height": 700})
        listing = await context.new_page()
        await log_in(listing, url)
        await expect(listing.locator("#feed-status")).to_have_text("live")
        call = asyncio.create_task(simulate_call(service.url, spec, auth_token=TWILIO_TOKEN))
        row = listing.locator(f'tr[data-call-sid="{spec.call_sid}"]')
        await expect(row).to_contain_text("+15005550123")

        page = await context.new_page()
        await page.goto(f"{url}/calls/{spec.call_sid}")
        marked = page.locator('.lane[data-speaker="caller"] mark.alert-words')
        await expect(marked).to_have_text([said[3], said[4]], timeout=10000)  # two finals, one mark in each
        await expect(page.locator("#alerts li.alert")).to_have_count(2, timeout=10000)
        await expect(page.locator("#alerts li.alert-absent")).to_contain_text("not said by agent within 1 s")
        assert (await call).close_code == 1000
        await expect(row.locator(".alerts")).to_have_text("2", timeout=10000)

        await page.reload()  # from the stored rows
        await expect(page.locator("#call-state")).to_have_text("ended", timeout=15000)
        await expect(page.locator("#alerts li.alert")).to_have_count(2)
        await expect(marked).to_have_text([said[3], said[4]])
        assert await lane_words(page, "caller") == said  # the marks change no word
        await listing.reload()
        await expect(listing.locator(f'#recent tr[data-call-sid="{spec.call_sid}"] .alerts')).to_have_text("2")
        await context.close()
