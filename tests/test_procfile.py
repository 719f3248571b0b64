"""The Procfile's web line, run as Heroku runs it: a real Hypercorn process on $PORT that stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx

from service.simulator import CallSpec, simulate_call
from tests.conftest import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.test_calls import call_audio

ROOT = Path(__file__).resolve().parent.parent


def web_command() -> str:
    [line] = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")]
    return line.removeprefix("web:").strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_procfile_web_process_serves_calls_and_stops_on_sigterm(deepgram: FakeDeepgram) -> None:
    """`web:` binds $PORT, transcribes a simulated call, logs JSON lines, and exits cleanly on SIGTERM."""
    port = free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "PORT": str(port),
        "DEEPGRAM_API_KEY": DEEPGRAM_KEY,
        "DEEPGRAM_URL": deepgram.url,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", f"exec {web_command()}", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                try:
                    unsigned = await client.post(f"{url}/voice", data={"CallSid": "CA1"})
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        assert unsigned.status_code == 403
        spec = CallSpec(inbound=call_audio(61, 1.5), speed=0)
        result = await simulate_call(url, spec, auth_token=TWILIO_TOKEN)
        assert result.close_code == 1000
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    events = [line["event"] for line in lines]
    assert events[0] == "service.ready"
    assert any(event.startswith("Running on") for event in events), "Hypercorn's own lines are JSON too"
    finals = [line for line in lines if line["event"] == "transcript" and line["is_final"]]
    assert [w for line in finals for w in line["text"].split()] == expected_words(bytes(deepgram.connections[0].audio))
    assert events[-1] == "service.stopped"
    assert stderr.decode() == ""
