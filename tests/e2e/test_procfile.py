"""The Procfile's web line, run as Heroku runs it: a real Hypercorn process on $PORT that stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from tests.conftest import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.e2e.test_calls import call_audio
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.paths import ROOT


def web_command() -> str:
    [line] = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")]
    return line.removeprefix("web:").strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_web(
    deepgram: FakeDeepgram, spool_dir: Path, **extra_env: str
) -> tuple[asyncio.subprocess.Process, str]:
    """The Procfile's web line as a real process (`extra_env` added); returns it and its URL once /voice answers."""
    port = free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "PORT": str(port),
        "DEEPGRAM_API_KEY": DEEPGRAM_KEY,
        "DEEPGRAM_URL": deepgram.url,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "LOG_FORMAT": "json",
        "SPOOL_DIR": str(spool_dir),
        # The process runs in the checkout: its database and journal go to the test's directory instead.
        "DATABASE_URL": f"sqlite:///{spool_dir / 'callscribe.sqlite3'}",
        "DB_JOURNAL_PATH": str(spool_dir / "callscribe-journal.jsonl"),
        **extra_env,
    }
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", f"exec {web_command()}", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                unsigned = await client.post(f"{url}/voice", data={"CallSid": "CA1"})
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    assert unsigned.status_code == 403
    return process, url


def json_lines(stdout: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


async def test_the_procfile_web_process_serves_calls_and_stops_on_sigterm(
    deepgram: FakeDeepgram, tmp_path: Path
) -> None:
    """`web:` binds $PORT, transcribes a simulated call, logs JSON lines, and exits cleanly on SIGTERM."""
    process, url = await start_web(deepgram, tmp_path)
    try:
        spec = CallSpec(inbound=call_audio(61, 1.5), speed=0)
        result = await simulate_call(url, spec, auth_token=TWILIO_TOKEN)
        assert result.close_code == 1000
        await asyncio.wait_for(deepgram.connections[0].closed.wait(), timeout=10)  # the call's last finals
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # as Heroku does: every process of the dyno
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    lines = json_lines(stdout)
    events = [line["event"] for line in lines]
    assert events[0] == "service.ready"
    assert any(event.startswith("Running on") for event in events), "Hypercorn's own lines are JSON too"
    finals = [line for line in lines if line["event"] == "transcript" and line["is_final"]]
    assert [w for line in finals for w in line["text"].split()] == expected_words(bytes(deepgram.connections[0].audio))
    assert events[-1] == "service.stopped"
    assert stderr.decode() == ""


async def test_sigterm_with_a_call_in_flight_finishes_it_before_exiting(deepgram: FakeDeepgram, tmp_path: Path) -> None:
    """SIGTERM mid-call: Twilio's stream is closed 1001, Deepgram's last finals arrive, the process exits 0."""
    process, url = await start_web(deepgram, tmp_path)
    spec = CallSpec(inbound=call_audio(62, 6.0), speed=1)
    call = asyncio.create_task(simulate_call(url, spec, auth_token=TWILIO_TOKEN))
    await deepgram.wait_for_connections(1)
    await asyncio.sleep(1.0)
    started = asyncio.get_running_loop().time()
    os.killpg(process.pid, signal.SIGTERM)  # as Heroku does: every process of the dyno
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    result = await call
    assert process.returncode == 0, stderr.decode()
    assert asyncio.get_running_loop().time() - started < 25  # inside Heroku's 30 s
    assert result.close_code == 1001
    assert result.close_reason == "callscribe is restarting"
    lines = json_lines(stdout)
    [summary] = [line for line in lines if line["event"] == "call.ended"]
    assert summary["ended_by"] == "shutdown"
    assert summary["audio_s_spooled"] == 0
    [connection] = deepgram.connections
    assert connection.control[-1] == {"type": "CloseStream"}
    heard = bytes(connection.audio)
    assert 0 < len(heard) < len(spec.inbound)
    finals = [line for line in lines if line["event"] == "transcript" and line["is_final"]]
    assert [w for line in finals for w in line["text"].split()] == expected_words(heard)
    [stopped] = [line for line in lines if line["event"] == "service.stopped"]
    assert (stopped["calls"], stopped["calls_spooled"]) == (1, 0)


async def test_sigterm_while_deepgram_catches_up_loses_nothing(deepgram: FakeDeepgram, tmp_path: Path) -> None:
    """SIGTERM just after Twilio's stop, with audio still queued for Deepgram: it is all sent and transcribed."""
    process, url = await start_web(deepgram, tmp_path)
    spec = CallSpec(inbound=call_audio(63, 3.0), speed=0)  # all at once: Deepgram gets it at 1.25x real time
    result = await simulate_call(url, spec, auth_token=TWILIO_TOKEN)
    os.killpg(process.pid, signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert (result.close_code, process.returncode) == (1000, 0), stderr.decode()
    [connection] = deepgram.connections
    assert bytes(connection.audio) == bytes(result.sent["inbound"])
    lines = json_lines(stdout)
    finals = [line for line in lines if line["event"] == "transcript" and line["is_final"]]
    assert [w for line in finals for w in line["text"].split()] == expected_words(bytes(connection.audio))
