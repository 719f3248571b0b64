"""The start-up "what next" block: the missing settings, the `.env` line for each, and never a secret."""

from __future__ import annotations

import httpx

from service.logs import render_text
from service.web.next_steps import next_steps
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings, running_service

API_TOKEN = "api-token-never-printed"


async def served(url: str) -> None:
    """Hypercorn answers only once start-up (where the block is logged) has finished."""
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/healthz")).status_code == 200


def test_nothing_is_said_when_everything_is_set() -> None:
    settings = make_settings(api_token=API_TOKEN, public_url="https://calls.example.com")
    assert next_steps(settings, twilio_usable=True, deepgram_configured=True) is None


def test_with_only_optional_settings_unset_the_block_says_a_local_call_is_ready() -> None:
    """TWILIO_AUTH_TOKEN and DEEPGRAM_API_KEY set: API_TOKEN and PUBLIC_URL are offered, not asked for."""
    steps = next_steps(make_settings(), twilio_usable=True, deepgram_configured=True)
    assert steps is not None
    assert steps.ready
    assert steps.missing == ["API_TOKEN", "PUBLIC_URL"]
    assert "nothing a local call needs is missing" in steps.lines[0]
    assert "some settings are missing" not in "\n".join(steps.lines)
    assert steps.lines[-1].startswith("Now: make demo")


def test_each_missing_setting_gets_its_env_line() -> None:
    steps = next_steps(make_settings(), twilio_usable=False, deepgram_configured=False)
    assert steps is not None
    assert not steps.ready
    assert steps.missing == ["TWILIO_AUTH_TOKEN", "DEEPGRAM_API_KEY", "API_TOKEN", "PUBLIC_URL"]
    block = "\n".join(steps.lines)
    assert "  TWILIO_AUTH_TOKEN=<your Twilio Auth Token>\n" in block
    assert "any value works" in block
    assert "  DEEPGRAM_API_KEY=<your Deepgram API key>\n" in block
    assert "make demo" in steps.lines[-1]


def test_the_text_log_shows_the_block_line_by_line() -> None:
    steps = next_steps(make_settings(), twilio_usable=False, deepgram_configured=True)
    assert steps is not None
    event = {"event": "service.next_steps", "level": "warning", "missing": steps.missing, "lines": steps.lines}
    rendered = render_text(None, "warning", event).splitlines()
    assert rendered[0].startswith(" WARNING service.next_steps missing=")
    assert rendered[1:] == [f"    {line}" for line in steps.lines]


async def test_start_up_logs_the_block_with_what_is_missing(log_lines: LogLines) -> None:
    settings = make_settings(twilio_auth_token=None, api_token=API_TOKEN)
    async with running_service(settings) as service:
        await served(service.url)
        [line] = log_lines.events("service.next_steps")
    assert line["missing"] == ["TWILIO_AUTH_TOKEN", "PUBLIC_URL"]
    assert line["level"] == "warning"
    assert any("TWILIO_AUTH_TOKEN=<your Twilio Auth Token>" in text for text in line["lines"])
    assert API_TOKEN not in log_lines.text()


async def test_start_up_with_only_public_url_unset_is_info_not_a_warning(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """PUBLIC_URL is not needed locally: with the rest set, the block is INFO and says nothing needed is missing."""
    async with running_service(make_settings(deepgram, api_token=API_TOKEN)) as service:
        await served(service.url)
        [line] = log_lines.events("service.next_steps")
    assert (line["level"], line["missing"]) == ("info", ["PUBLIC_URL"])
    assert line["lines"][0].startswith("callscribe is serving, and nothing a local call needs is missing.")


async def test_start_up_with_everything_set_logs_no_block(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    settings = make_settings(deepgram, api_token=API_TOKEN, public_url="https://calls.example.com")
    async with running_service(settings) as service:
        await served(service.url)
    assert log_lines.events("service.next_steps") == []
