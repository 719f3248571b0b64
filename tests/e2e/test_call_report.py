"""End to end, the call's one report: a two-track call with live alerts, post-call analysis and coverage, read as
its page shows it (in Chromium) and as `call.completed` and `call.analyzed` deliver it.

The caller and the agent say readable words (each a window of audio the fake Deepgram hears as that word), so the
page's screenshot (`CALLSCRIBE_SCREENSHOT_DIR=docs/images`) shows a call as a user would see one.
"""

from __future__ import annotations

import json
import re

import httpx
from playwright.async_api import expect

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from tests.e2e.test_page import PASSWORD, lane_words, log_in, shoot
from tests.helpers.browser import chromium
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch, summary_for
from tests.helpers.fakes.deepgram_server import FakeDeepgram, saying
from tests.helpers.service import make_settings, running_service
from tests.helpers.waiting import eventually
from tests.helpers.webhooks import SECRET, Clock, Receiver, serving

API_TOKEN = "report-t0ken"
CALLER = (
    "Hi, I have a problem with my order. It arrived broken and I am really unhappy about it. "
    "I want to cancel my account today unless you can fix this. Can you help me with a refund, please?"
)
AGENT = (
    "Thanks for calling Acme support, my name is Sam. I am sorry to hear that. "
    "I can refund the order right now and send a new one. Is there anything else I can help with today?"
)
RULES = [
    {"name": "cancel", "phrases": ["cancel my account"], "speaker": "caller"},
    # Never said, and the call is shorter than the window: decided at the call's end.
    {"name": "disclosure", "phrases": ["this call is recorded"], "speaker": "agent", "absent_within_s": 600},
]


async def test_a_finished_call_reads_as_one_report(deepgram: FakeDeepgram) -> None:
    spec = CallSpec(inbound=saying(CALLER), outbound=saying(AGENT), speed=0, from_number="+15005550123")
    receiver = Receiver(Clock.real())
    async with serving(receiver) as hook_url, FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as read_api:
        settings = make_settings(
            deepgram, stream_track="both_tracks", dashboard_password=PASSWORD, api_token=API_TOKEN,
            alert_rules=json.dumps(RULES), analysis="on", deepgram_batch_url=read_api.url,
            transcript_webhook_url=hook_url, webhook_secret=SECRET,
        )  # fmt: skip
        async with running_service(settings) as service, chromium() as browser:
            assert (await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)).close_code == 1000
            await receiver.wait_for("call.analyzed", timeout=30)
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_TOKEN}"}) as api:
                transcript = await eventually(
                    lambda: _transcript(api, f"{service.url}/api/calls/{spec.call_sid}/transcript"), timeout=10
                )

            url = f"http://localhost:{service.port}"
            context = await browser.new_context(viewport={"width": 1100, "height": 900})
            page = await context.new_page()
            await log_in(page, url)
            await page.goto(f"{url}/calls/{spec.call_sid}")
            expected = summary_for("\n".join(utterance["text"] for utterance in transcript))
            await expect(page.locator("#summary")).to_have_text(expected)
            await expect(page.locator(".tags .tag")).not_to_have_count(0)
            await expect(page.locator("#sentiment")).to_contain_text("caller")
            await expect(page.locator("#alerts li.alert")).to_have_count(2)
            await expect(page.locator("#alerts li.alert-absent")).to_contain_text("not said by agent")
            await expect(page.locator("#coverage")).to_have_text(re.compile(r"^Transcript complete"))
            marked = page.locator('.lane[data-speaker="caller"] mark.alert-words')
            assert " ".join(await marked.all_text_contents()).split() == ["cancel", "my", "account"]
            assert await lane_words(page, "caller") == CALLER.split()
            assert await lane_words(page, "agent") == AGENT.split()
            await shoot(page, "call-report.png")
            # The page's report.json: the same report read now, so with the analysis that followed the call's end.
            download = await context.request.get(f"{url}/calls/{spec.call_sid}/report.json")
            report = await download.json()
            assert (report["analysis"]["summary"], len(report["alerts"])) == (expected, 2)
            assert report["coverage"]["complete"] is True
            await page.goto(f"{url}/")
            row = page.locator(f'#recent tr[data-call-sid="{spec.call_sid}"]')
            await expect(row.locator(".summary-line")).to_have_text(expected)
            await expect(row.locator(".alerts")).to_have_text("2")
            await expect(row.locator(".coverage")).to_have_text("complete")
            await context.close()

    [completed] = [event for event in receiver.accepted if event["type"] == "call.completed"]
    data = completed["data"]
    assert [(alert["rule"], alert["kind"]) for alert in data["alerts"]] == [
        ("disclosure", "absent"),
        ("cancel", "said"),
    ]
    assert data["coverage"]["complete"] is True
    assert data["analysis"] is None, "the analysis runs after the call's end: it follows as call.analyzed"
    [analyzed] = [event for event in receiver.accepted if event["type"] == "call.analyzed"]
    assert analyzed["data"]["summary"] == expected


async def _transcript(api: httpx.AsyncClient, url: str) -> list[dict[str, object]] | None:
    response = await api.get(url)
    return list(response.json()) if response.status_code == 200 and response.json() else None
