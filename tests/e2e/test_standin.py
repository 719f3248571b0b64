"""`python -m service standin` as a user runs it, with the service pointed at it: three real processes (the
stand-in, `python -m service serve`, `python -m service demo`), the real deepgram-sdk in the service, and the
transcript in the stand-in's readable words, labelled as placeholders wherever it is shown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from service.cli.demo import SAMPLE
from service.simulator.audio import frames, wav_to_mulaw
from service.standin.words import WORDS, readable_word
from tests.helpers.fakes.deepgram_server import expected_words
from tests.helpers.paths import ROOT
from tests.helpers.processes import free_port
from tests.helpers.waiting import eventually

TOKEN = "e2e-standin-twilio-token"
API_TOKEN = "e2e-standin-api-token-0123456789"


def environment(**settings: str) -> dict[str, str]:
    """A clean environment (no callscribe setting of this machine's) with `settings`."""
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **settings}


@contextlib.asynccontextmanager
async def process(*args: str, cwd: Path, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m service ARGS` in its own process group, stopped with SIGINT (Ctrl+C) after, then reaped."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield child
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGINT)
        await asyncio.wait_for(child.wait(), timeout=15)


async def healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def test_the_standin_command_transcribes_a_call_through_the_service_in_readable_labelled_words(
    tmp_path: Path,
) -> None:
    """The stand-in's start-up line names DEEPGRAM_URL and says its words are placeholders; the service, pointed
    there, transcribes the demo call live through the SDK; the demo prints the readable words the audio maps to,
    labelled as the stand-in's placeholders; Ctrl+C stops the stand-in with exit 0 and frees its port."""
    standin_port, service_port = free_port(), free_port()
    standin_url, url = f"http://127.0.0.1:{standin_port}", f"http://127.0.0.1:{service_port}"
    env = environment(
        DEEPGRAM_URL=standin_url, DEEPGRAM_API_KEY="anything", TWILIO_AUTH_TOKEN=TOKEN, API_TOKEN=API_TOKEN
    )
    async with process("standin", "--port", str(standin_port), cwd=tmp_path, env=environment()) as standin:
        assert standin.stdout is not None
        startup = (await asyncio.wait_for(standin.stdout.read(400), timeout=15)).decode()
        while startup.count("\n") < 3:
            startup += (await asyncio.wait_for(standin.stdout.readline(), timeout=5)).decode()
        async with process("serve", "--host", "127.0.0.1", "--port", str(service_port), cwd=tmp_path, env=env):
            await eventually(lambda: healthy(url), timeout=60, interval=0.1)
            demo = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service", "demo", "--url", url, "--speed", "0", cwd=tmp_path, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output = (await asyncio.wait_for(demo.communicate(), timeout=60))[0].decode()
        assert demo.returncode == 0, output
    assert standin.returncode == 0
    assert f"DEEPGRAM_URL={standin_url}" in startup
    assert "placeholders chosen from the audio" in startup
    assert "not speech recognition" in startup
    note = "placeholder words chosen from the audio, not speech recognition"
    label = f"transcript ({note}, by the Deepgram stand-in at {standin_url}):"
    assert label in output, output
    lines = output.split(label, 1)[1].strip().splitlines()
    heard = [word for line in lines for word in line.split("caller:", 1)[1].split()]
    streamed = b"".join(frames(wav_to_mulaw(SAMPLE.read_bytes())))  # as sent: the last frame padded with silence
    assert heard == expected_words(streamed, words=readable_word)
    assert all(word in WORDS for word in heard)
    assert not await healthy(standin_url), "the stand-in's port is free again"
