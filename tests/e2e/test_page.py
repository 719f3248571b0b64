"""End to end: the page at `/` in a real headless Chromium, the real service, a simulated two-track call.

The browser logs in, watches the list of calls and one call's page while the call runs: interim text appears
faint in the speaker's lane and turns final there, a reload mid-call shows the whole call once, the list moves
the call from "On now" to "Recent", and the download links serve the stored transcript. A login over plain http
works on a loopback address and, from the machine's other address, is told on the page why it cannot; a page
open across a restart of the service comes back live; no page asks for something that is not there; an analysed
call shows its summary, tags and sentiment.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import socket

import pytest
from playwright.async_api import Page, Response, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.storage.analyses import stored_analysis
from tests.helpers.audio import call_audio
from tests.helpers.browser import chromium
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words, saying
from tests.helpers.logs import LogLines
from tests.helpers.paths import ROOT
from tests.helpers.service import make_settings, running_service
from tests.helpers.waiting import eventually

PASSWORD = "page-passw0rd"
# Set to docs/images (relative to the checkout) to refresh the README's pictures.
SCREENSHOTS = os.environ.get("CALLSCRIBE_SCREENSHOT_DIR")


async def log_in(page: Page, url: str) -> None:
    await page.goto(f"{url}/")
    await expect(page).to_have_url(f"{url}/login")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{url}/")


def other_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (a LAN's, a container's), or None when it has none."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        found |= {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # UDP: nothing is sent, the kernel only picks the address it would send from
        found.add(probe.getsockname()[0])
    usable = sorted(a for a in found if not (ip := ipaddress.ip_address(a)).is_loopback and not ip.is_unspecified)
    return usable[0] if usable else None


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
    # Readable words (each window heard as the word it spells), for the README's pictures: 6 s and 5 s of audio.
    caller = saying("Hi, I am calling about my order from last week, please.")
    agent = saying("Sure, I can help you with that order today.")
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


async def test_a_login_over_plain_http_works_on_loopback_and_from_another_address_is_told_why_not(
    deepgram: FakeDeepgram,
) -> None:
    """Served on every address as `make run` does: http://127.0.0.1 logs in; the machine's other address, where
    the browser drops the Secure cookies, says so on the page (before and after a try), never "Wrong password"."""
    address = other_address()
    if address is None:
        pytest.skip("this machine has no IPv4 address but loopback: no other address to open the page at")
    settings = make_settings(deepgram, dashboard_password=PASSWORD)
    every_address = "0.0.0.0"  # noqa: S104  (as `make run` serves: the point of the test)
    async with running_service(settings, host=every_address) as service, chromium() as browser:
        local = await (await browser.new_context()).new_page()
        await log_in(local, f"http://127.0.0.1:{service.port}")
        await expect(local.locator("#feed-status")).to_have_text("live")
        assert not await local.locator("#login-insecure").count()

        context = await browser.new_context()
        remote = await context.new_page()
        url = f"http://{address}:{service.port}"
        await remote.goto(f"{url}/")
        await expect(remote).to_have_url(f"{url}/login")
        notice = remote.locator("#login-insecure")
        await expect(notice).to_contain_text(f"plain http at {address}:{service.port}")
        await expect(notice).to_contain_text(f"http://localhost:{service.port}/")
        await remote.fill("#password", PASSWORD)
        await remote.click("button[type=submit]")
        await expect(notice).to_contain_text("Your browser did not send the login back")
        await expect(remote).to_have_url(f"{url}/login")
        await expect(remote.locator("#login-failed")).to_have_count(0)
        assert "Wrong password" not in await remote.content()
        assert await context.cookies() == []  # the browser kept nothing: the cookies stayed Secure


async def test_a_page_open_across_a_restart_comes_back_live(deepgram: FakeDeepgram) -> None:
    """The list stays open while the service restarts on its port: the feed comes back with events it no longer
    has, and the page ends up live, showing the next call, with no reason of the feed's own left on it."""
    settings = make_settings(deepgram, dashboard_password=PASSWORD)
    before, after = CallSpec(inbound=call_audio(611, 1.0), speed=4), CallSpec(inbound=call_audio(612, 1.0), speed=4)
    async with chromium() as browser:
        page = await (await browser.new_context()).new_page()
        status = page.locator("#feed-status")
        async with running_service(settings) as first:
            url, port = f"http://127.0.0.1:{first.port}", first.port
            await log_in(page, url)
            await expect(status).to_have_text("live")
            await simulate_call(first.url, before, auth_token=TWILIO_TOKEN)
            await expect(page.locator(f'#recent tr[data-call-sid="{before.call_sid}"]')).to_have_count(1)
        await expect(status).to_have_text("reconnecting…")
        async with running_service(settings, port=port) as second:
            await expect(status).to_have_text("live", timeout=15000)
            await simulate_call(second.url, after, auth_token=TWILIO_TOKEN)
            await expect(page.locator(f'#recent tr[data-call-sid="{after.call_sid}"]')).to_have_count(1)
            await expect(status).to_have_text("live")
            await expect(status).to_have_attribute("data-kind", "live")
            await expect(page.locator(f'#recent tr[data-call-sid="{before.call_sid}"]')).to_have_count(1)


async def test_no_page_asks_for_what_is_not_there(deepgram: FakeDeepgram) -> None:
    """The login, the list and a call's page load without one failed request: the icon is there too."""
    settings = make_settings(deepgram, dashboard_password=PASSWORD)
    async with running_service(settings) as service, chromium() as browser:
        page = await (await browser.new_context()).new_page()
        failed: list[str] = []

        def check(response: Response) -> None:
            if response.status >= 400:
                failed.append(f"{response.status} {response.url}")

        page.on("response", check)
        url = f"http://127.0.0.1:{service.port}"
        await log_in(page, url)
        icon = await page.evaluate("fetch(document.querySelector('link[rel=icon]').href).then(r => r.status)")
        await page.goto(f"{url}/calls/CA0123")
        await page.goto(f"{url}/favicon.ico")
    assert icon == 200
    assert failed == [f"404 {url}/calls/CA0123"]  # the missing call's page, and nothing else


async def test_an_analysed_call_shows_its_summary_tags_and_sentiment_in_the_browser(deepgram: FakeDeepgram) -> None:
    """ANALYSIS on, the fake /v1/read: once the call has ended and been analysed, its page shows the fake's summary
    above the lanes, the topics and intent as tags, the sentiment overall and per speaker and beside each line;
    the list shows the summary under the call."""
    spec = CallSpec(inbound=call_audio(611, 16.0), outbound=call_audio(612, 14.0), speed=0, from_number="+15005550124")
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as read_api:
        settings = make_settings(
            deepgram, dashboard_password=PASSWORD, stream_track="both_tracks", analysis="on",
            deepgram_batch_url=read_api.url,
        )  # fmt: skip
        async with running_service(settings) as service, chromium() as browser:
            url = f"http://localhost:{service.port}"
            await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
            await eventually(lambda: analysed(service.service.store.engine, spec.call_sid), timeout=20)
            context = await browser.new_context(viewport={"width": 1100, "height": 900})
            page = await context.new_page()
            await log_in(page, url)
            summary = page.locator(f'#recent tr[data-call-sid="{spec.call_sid}"] .summary-line')
            await expect(summary).to_contain_text("Summary of ")
            said = await summary.text_content() or ""
            await page.goto(f"{url}/calls/{spec.call_sid}")
            await expect(page.locator("#summary")).to_have_text(said)
            await expect(page.locator(".tags .tag.topic")).to_have_count(3)
            await expect(page.locator(".tags .tag.intent")).to_have_text("Make a statement")
            await expect(page.locator("#sentiment")).to_contain_text("overall")
            await expect(page.locator("#sentiment")).to_contain_text("caller")
            await expect(page.locator("#sentiment")).to_contain_text("agent")
            lines = page.locator(".lane li.final")
            await expect(page.locator(".lane li.final .sentiment")).to_have_count(await lines.count())
            top = await page.locator("#analysis").bounding_box()
            lanes = await page.locator("#lanes").bounding_box()
            assert top is not None
            assert lanes is not None
            assert top["y"] < lanes["y"]  # the analysis above the transcript
            await context.close()


async def analysed(engine: AsyncEngine, call_sid: str) -> bool:
    return (await stored_analysis(engine, call_sid)) is not None
