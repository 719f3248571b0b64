"""One call against the real Deepgram, skipped unless DEEPGRAM_API_KEY and CALLSCRIBE_LIVE_TESTS=1 are set."""

from __future__ import annotations

import os

import pytest

from service.simulator.audio import wav_to_mulaw
from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.logs import LogLines
from tests.helpers.paths import SAMPLES
from tests.helpers.service import make_settings, running_service

# Read at import: the autouse fixture clears settings variables from the environment of each test.
LIVE_KEY = os.environ.get("DEEPGRAM_API_KEY", "")
SAMPLE = SAMPLES / "hello.wav"

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not (LIVE_KEY and os.environ.get("CALLSCRIBE_LIVE_TESTS") == "1"),
        reason="needs DEEPGRAM_API_KEY and CALLSCRIBE_LIVE_TESTS=1 (talks to the real Deepgram)",
    ),
]


async def test_the_sample_call_is_transcribed_by_real_deepgram(log_lines: LogLines) -> None:
    """The shipped spoken sample, streamed at real time, comes back from Deepgram with its words."""
    settings = make_settings(None, deepgram_api_key=LIVE_KEY, deepgram_url="https://api.deepgram.com")
    spec = CallSpec(inbound=wav_to_mulaw(SAMPLE.read_bytes()), speed=1)
    async with running_service(settings) as service:
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        await log_lines.wait_for("call.ended", timeout=30, call_sid=spec.call_sid)
    assert result.close_code == 1000
    finals = log_lines.events("transcript", call_sid=spec.call_sid, is_final=True)
    assert "transcribed" in " ".join(line["text"].lower() for line in finals)
