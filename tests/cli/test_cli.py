"""The command line: `python -m service simulate` calls a running service the way Twilio does."""

from __future__ import annotations

import asyncio
import sys

from service.simulator.audio import wav_to_mulaw
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines
from tests.helpers.paths import ROOT, SAMPLES
from tests.helpers.service import make_settings, running_service

SAMPLE = SAMPLES / "hello.wav"


async def run_simulate(url: str, token: str) -> tuple[int | None, str, str]:
    """`python -m service simulate` with the shipped sample, as a separate process; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "simulate", str(SAMPLE), "--url", url, "--speed", "0", "--auth-token", token,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_simulate_command_places_a_whole_call(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """The shipped simulator, as a separate process with the sample WAV, produces the call's full transcript."""
    async with running_service(make_settings(deepgram)) as service:
        code, stdout, stderr = await run_simulate(service.url, TWILIO_TOKEN)
        summary = await log_lines.wait_for("call.ended")
    assert code == 0, stderr
    assert summary["ended_by"] == "stop"
    audio = wav_to_mulaw(SAMPLE.read_bytes())
    [connection] = deepgram.connections
    assert bytes(connection.audio[: len(audio)]) == audio
    words = [w for line in log_lines.events("transcript", is_final=True) for w in line["text"].split()]
    assert words == expected_words(bytes(connection.audio))
    assert summary["call_sid"] in stdout


async def test_simulate_command_reports_a_refused_call(deepgram: FakeDeepgram) -> None:
    """A wrong auth token makes /voice answer 403, and the simulator exits non-zero saying so."""
    async with running_service(make_settings(deepgram)) as service:
        code, _, stderr = await run_simulate(service.url, "wrong-token")
    assert code == 1
    assert "403" in stderr
    assert deepgram.upgrade_attempts == 0
