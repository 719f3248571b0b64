"""`python -m service demo`: one simulated call to a running service, and its transcript printed or what to fix."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.paths import ROOT
from tests.helpers.processes import free_port
from tests.helpers.service import make_settings, running_service

API_TOKEN = "api-token-for-the-demo-test"


async def run_demo(url: str, workdir: Path, **env: str) -> tuple[int | None, str, str]:
    """`python -m service demo` as a separate process in `workdir` (where the service's SQLite file is)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "demo", "--url", url, "--speed", "0", "--wait-s", "10",
        cwd=workdir, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, stdout.decode(), stderr.decode()


def printed_words(stdout: str) -> list[str]:
    """The words of the transcript `demo` printed (text format: `[00:00.00] caller: words`)."""
    transcript = stdout.split("transcript:\n", 1)[1]
    return [word for line in transcript.splitlines() for word in line.split(": ", 1)[1].split()]


async def test_demo_prints_the_transcript_read_through_the_api(deepgram: FakeDeepgram, tmp_path: Path) -> None:
    """With API_TOKEN on both sides, the transcript comes from /api; exit 0."""
    async with running_service(make_settings(deepgram, api_token=API_TOKEN)) as service:
        code, stdout, stderr = await run_demo(
            service.url, tmp_path, TWILIO_AUTH_TOKEN=TWILIO_TOKEN, API_TOKEN=API_TOKEN
        )
    assert code == 0, stderr
    [connection] = deepgram.connections
    assert printed_words(stdout) == expected_words(bytes(connection.audio))


async def test_demo_without_api_token_reads_the_database(deepgram: FakeDeepgram, tmp_path: Path) -> None:
    """No API_TOKEN: the transcript comes from the service's (self-migrated) SQLite file directly."""
    async with running_service(make_settings(deepgram)) as service:
        code, stdout, stderr = await run_demo(service.url, tmp_path, TWILIO_AUTH_TOKEN=TWILIO_TOKEN)
    assert code == 0, stderr
    [connection] = deepgram.connections
    assert printed_words(stdout) == expected_words(bytes(connection.audio))


async def test_demo_with_the_wrong_token_says_to_set_it_the_same(deepgram: FakeDeepgram, tmp_path: Path) -> None:
    async with running_service(make_settings(deepgram)) as service:
        code, stdout, stderr = await run_demo(service.url, tmp_path, TWILIO_AUTH_TOKEN="not-the-services-token")
    assert code == 1
    assert "403" in stderr
    assert "TWILIO_AUTH_TOKEN" in stderr
    assert "not-the-services-token" not in stdout + stderr
    assert "transcript:" not in stdout
    assert deepgram.upgrade_attempts == 0


async def test_demo_against_a_service_without_deepgram_key_says_to_set_it(tmp_path: Path) -> None:
    async with running_service(make_settings(deepgram_api_key=None)) as service:
        code, _, stderr = await run_demo(service.url, tmp_path, TWILIO_AUTH_TOKEN=TWILIO_TOKEN)
    assert code == 1
    assert "DEEPGRAM_API_KEY=" in stderr


async def test_demo_with_no_service_running_says_make_run(tmp_path: Path) -> None:
    code, _, stderr = await run_demo(f"http://127.0.0.1:{free_port()}", tmp_path, TWILIO_AUTH_TOKEN=TWILIO_TOKEN)
    assert code == 1
    assert "make run" in stderr
