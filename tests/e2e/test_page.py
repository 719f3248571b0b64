"""End to end: the page at `/` in a real headless Chromium, the real service, a simulated two-track call.

The browser logs in, watches the list of calls and one call's page while the call runs: interim text appears
faint in the speaker's lane and turns final there, a reload mid-call shows the whole call once, the list moves
the call from "On now" to "Recent", and the download links serve the stored transcript.
"""

from __future__ import annotations

import asyncio
import os
import re

from playwright.async_api import Page, expect

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from tests.helpers.audio import call_audio
from tests.helpers.browser import chromium
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines
from tests.helpers.paths import ROOT
from tests.helpers.service import make_settings, running_service

PASSWORD = "page-passw0rd"
# Set to docs/images (relative to the checkout) to refresh the README's pictures.
SCREENSHOTS = os.environ.get("CALLSCRIBE_SCREENSHOT_DIR")


async def log_in(page: Page, url: str) -> None:
    await page.goto(f"{url}/")
    await expect(page).to_have_url(f"{url}/login")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{url}/")


async def lane_words(page: Page, speaker: str) -> list[str]:
    texts = await page.locator(f'.lane[data-speaker="{speaker}"] li.final .text').all_text_contents()
    return [word for text in texts for word in text.split()]


async def shoot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        directory = ROOT / SCREENSHOTS
        directory.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(directory / name), full_page=True)


async def test_the_page_shows_a_call_live_and_whole(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """Login, the active list, interim then final text per lane, a reload mid-call without repeats, downloads."""
    caller, agent = call_audio(601, 6.0), call_audio(602, 5.0)
    spec = CallSpec(inbound=caller, outbound=agent, speed=1, from_number="+15005550123")
    settings = make_settings(deepgram, dashboard_password=PASSWORD, stream_track="both_tracks")
    async with running_service(settings) as service, chromium() as browser:
        url = f"http://localhost:{service.port}"
        context = await browser.new_context(viewport={"width": 1100, "height": 700})
        listing = await context.new_page()
        await log_in(listing, url)
        await expect(listing.locator("#feed-status")).to_have_text("live")

        call = asyncio.create_task(simulate_call(service.url, spec, auth_token=TWILIO_TOKEN))
        row = listing.locator(f'#active tr[data-call-sid="{spec.call_sid}"]')
        await expect(row).to_contain_text("+15005550123")
        await expect(row.locator(".state")).to_have_text("streaming")
        duration = row.locator(".duration")
        await expect(duration).to_have_text(re.compile(r"^0:0\d$"))
        await expect(duration).not_to_have_text(await duration.text_content() or "", timeout=5000)  # it ticks

        page = await context.new_page()
        await page.goto(f"{url}/calls/{spec.call_sid}")
        caller_lane = page.locator('.lane[data-speaker="caller"]')
        await expect(caller_lane.locator("li.interim")).to_have_count(1, timeout=10000)
        await expect(caller_lane.locator("li.interim .text")).to_have_css("font-style", "italic")  # shown faint
        interim = await caller_lane.locator("li.interim").element_handle()
        # The interim line itself becomes the final one, in place, with the final text.
        await page.wait_for_function("item => item.classList.contains('final')", arg=interim, timeout=10000)
        await expect(caller_lane.locator("li.final").first).to_contain_text(expected_words(caller)[0], timeout=10000)
        await shoot(listing, "calls.png")
        await shoot(page, "live-call.png")

        await page.reload()  # mid-call: what was said so far, then live again, nothing twice
        await expect(page.locator("#feed-status")).to_have_text("live")
        result = await call
        assert result.close_code == 1000
        await expect(page.locator("#call-state")).to_have_text("ended", timeout=15000)
        await expect(caller_lane.locator("li.interim")).to_have_count(0)
        assert await lane_words(page, "caller") == expected_words(caller)
        assert await lane_words(page, "agent") == expected_words(agent)
        lanes = await page.locator(".lane").evaluate_all("ls => ls.map(l => getComputedStyle(l).borderTopColor)")
        assert len(set(lanes)) == 2, "each speaker has a colour of its own"

        await expect(listing.locator(f'#recent tr[data-call-sid="{spec.call_sid}"]')).to_contain_text("stop")
        await expect(row).to_have_count(0)

        for extension, words in (("txt", expected_words(caller)[:2]), ("json", expected_words(agent)[:2])):
            link = page.locator(f'.downloads a[href$="transcript.{extension}"]')
            response = await context.request.get(url + (await link.get_attribute("href") or ""))
            assert response.status == 200
            body = await response.text()
            assert all(word in body for word in words)
        await context.close()

    [summary] = log_lines.events("call.ended", call_sid=spec.call_sid)
    assert summary["ended_by"] == "stop"
