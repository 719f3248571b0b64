"""What an unauthenticated client can make the log say: one line per request at most, and a flood summarised."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import pytest
import structlog
from websockets.exceptions import InvalidStatus

from service import logs, refusals
from tests.helpers.clock import Clock
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings, running_service
from tests.helpers.twilio_stream import open_media

TOKEN = "t0ken-for-refusals"
ATTACKER, OTHER = "203.0.113.7", "198.51.100.2"


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """The service's log in the text format, as a person reads it."""
    buffer = io.StringIO()
    logs.configure("INFO", "text", stream=buffer)
    yield buffer
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.getLogger().handlers.clear()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The process's refusal summary on a clock the test moves."""
    clock = Clock()
    monkeypatch.setattr(refusals, "summary", refusals.RefusalSummary(clock=clock))
    return clock


async def test_a_path_with_an_encoded_newline_and_no_break_spaces_writes_one_line(text_log: io.StringIO) -> None:
    """%0a and U+00A0 in an unauthenticated /api path cannot make a second line, nor a [FINAL] of a real call."""
    forged = "2026-12-07T10:00:00.000000Z%20[FINAL]%C2%A0CA0123456789abcdef0123456789abcdef%C2%A000:01.00"
    async with running_service(make_settings(api_token=TOKEN)) as service, httpx.AsyncClient() as client:
        response = await client.get(f"{service.url}/api/calls/x%0a{forged}-00:02.00%C2%A0caller:%C2%A0hi")
    assert response.status_code == 401
    lines = [line for line in text_log.getvalue().splitlines() if "logger=httpx" not in line]  # the test's client
    [line] = [line for line in lines if "[FINAL]" in line]
    assert " api.refused " in line
    assert "\\n2026-12-07T10:00:00.000000Z [FINAL]\\u00a0CA0123" in line
    assert " address=127.0.0.1 " in line


async def test_a_flood_of_api_refusals_from_one_address_is_summarised(log_lines: LogLines, clock: Clock) -> None:
    """100 refusals from one address: 5 lines, then one summary whose count makes up the 100; others unaffected."""
    async with running_service(make_settings(api_token=TOKEN)) as service, httpx.AsyncClient() as client:
        for _ in range(100):
            response = await client.get(f"{service.url}/api/calls", headers={"X-Forwarded-For": ATTACKER})
            assert response.status_code == 401
        for _ in range(3):
            await client.get(f"{service.url}/api/calls", headers={"X-Forwarded-For": OTHER})
        assert len(log_lines.events("api.refused", address=ATTACKER)) == refusals.REFUSAL_BURST
        assert len(log_lines.events("api.refused", address=OTHER)) == 3
        assert log_lines.events("api.refused.suppressed") == []
        clock.now += refusals.REFUSAL_WINDOW_S
        await client.get(f"{service.url}/api/calls", headers={"X-Forwarded-For": ATTACKER})
    [summary] = log_lines.events("api.refused.suppressed")
    assert (summary["address"], summary["window_s"], summary["level"]) == (ATTACKER, 60.0, "warning")
    assert refusals.REFUSAL_BURST + summary["count"] == 100
    assert len(log_lines.events("api.refused", address=ATTACKER)) == refusals.REFUSAL_BURST + 1  # a new window


async def test_unsigned_voice_and_media_floods_are_summarised_with_the_address(
    deepgram: FakeDeepgram, log_lines: LogLines, clock: Clock
) -> None:
    """/voice and the /media upgrade without Twilio's signature: 5 lines each, the rest in one summary each."""
    async with running_service(make_settings(deepgram)) as service:
        async with httpx.AsyncClient() as client:
            for _ in range(20):
                response = await client.post(f"{service.url}/voice", data={"CallSid": "CA1"})
                assert response.status_code == 403
        for _ in range(20):
            with pytest.raises(InvalidStatus):
                await open_media(service.url, headers={"X-Twilio-Signature": "forged"})
        clock.now += refusals.REFUSAL_WINDOW_S
        refusals.flush_refusals(structlog.get_logger("callscribe.app"))  # the periodic flush
    for event in ("voice.refused", "media.refused"):
        assert len(log_lines.events(event, address="127.0.0.1")) == refusals.REFUSAL_BURST
        [summary] = log_lines.events(f"{event}.suppressed", address="127.0.0.1")
        assert summary["count"] == 20 - refusals.REFUSAL_BURST


def test_the_summary_forgets_ended_windows_and_bounds_the_addresses_it_tracks() -> None:
    """Past max_pairs, new addresses share one `other` pair; an ended window is reported once, then forgotten."""
    clock = Clock()
    summary = refusals.RefusalSummary(burst=1, window_s=10.0, max_pairs=2, clock=clock)
    assert [summary.admit("e", address)[0] for address in ("a", "b", "c", "d", "a")] == [True, True, True, False, False]
    clock.now += 10.0
    logged, ended = summary.admit("e", "z")
    assert logged
    assert sorted((s.address, s.count) for s in ended) == [("a", 1), ("other", 1)]
    assert summary.ended(clock.now + 10.0) == []  # b and z counted nothing: nothing to report
