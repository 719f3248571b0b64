"""End to end in a real headless Chromium: the list of calls shows each call's first line (its first final,
shortened), and the calls on now show their state in colour, with the state's word and its meaning as a title
and a legend, so colour is never the only sign."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.storage import queries
from service.web.dashboard import STATES, shortened
from tests.e2e.test_page import PASSWORD, log_in
from tests.helpers.audio import call_audio
from tests.helpers.browser import chromium
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.service import make_settings, running_service
from tests.helpers.waiting import eventually


@pytest.mark.parametrize(
    ("text", "limit", "shown"),
    [
        ("Hello there.", 60, "Hello there."),
        ("  spaced\nout   words ", 60, "spaced out words"),
        ("one two three four", 12, "one two…"),
        ("first, second", 8, "first…"),
        ("unbroken", 5, "unbr…"),
        ("", 60, ""),
    ],
)
def test_a_first_line_is_cut_at_a_words_end(text: str, limit: int, shown: str) -> None:
    """Whitespace folded; past `limit` characters, cut at the last whole word (without its comma), with "…"."""
    assert shortened(text, limit) == shown
    assert len(shortened(text, limit)) <= limit


async def test_the_list_shows_first_lines_and_the_calls_on_now_in_colour(deepgram: FakeDeepgram) -> None:
    """A call on now is `streaming`, coloured unlike `starting`, with its meaning as the cell's title and in the
    legend; its first final appears as its first line while it runs, and stays on it in the recent list after a
    reload (from the database)."""
    caller = call_audio(611, 4.0)
    spec = CallSpec(inbound=caller, speed=1, from_number="+15005550124")
    settings = make_settings(deepgram, dashboard_password=PASSWORD)
    async with running_service(settings) as service, chromium() as browser:
        url = f"http://localhost:{service.port}"
        page = await (await browser.new_context()).new_page()
        await log_in(page, url)
        await expect(page.locator("#feed-status")).to_have_text("live")
        legend = page.locator("#states")
        for state, meaning in STATES.items():
            await expect(legend).to_contain_text(f"{state}{meaning}")
        colours = await legend.locator("dt").evaluate_all("ds => ds.map(d => getComputedStyle(d).color)")
        assert len(set(colours)) == len(STATES), "each state has a colour of its own"

        call = asyncio.create_task(simulate_call(service.url, spec, auth_token=TWILIO_TOKEN))
        row = page.locator(f'#active tr[data-call-sid="{spec.call_sid}"]')
        state = row.locator(".state")
        await expect(state).to_have_text("streaming")
        await expect(state).to_have_attribute("title", STATES["streaming"])
        first_word = expected_words(caller)[0]
        await expect(row.locator(".first-line")).to_contain_text(first_word, timeout=10000)
        assert (await call).close_code == 1000

        engine = service.service.store.engine
        stored = await eventually(lambda: queries.get_utterances(engine, spec.call_sid))
        await page.reload()
        recent = page.locator(f'#recent tr[data-call-sid="{spec.call_sid}"]')
        await expect(recent.locator(".first-line")).to_have_text(shortened(stored[0].text))
