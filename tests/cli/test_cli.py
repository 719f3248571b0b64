"""The command line: `python -m service simulate` calls a running service the way Twilio does."""

from __future__ import annotations

import asyncio
import resource
import sys

from service.cli.serve import OPEN_FILES_WITHOUT_HARD_LIMIT, raise_open_files_limit
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


def test_serve_raises_the_open_files_limit_to_the_hard_one() -> None:
    """Every connection is a file: a soft limit of 1024 (a common default) must not be what stops the process
    accepting Twilio's connections; `serve` raises it to the hard limit before Hypercorn starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        raised = raise_open_files_limit()
        in_force = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert raised == in_force
    assert in_force == (OPEN_FILES_WITHOUT_HARD_LIMIT if hard == resource.RLIM_INFINITY else hard)
