"""The service as a separate process: the Procfile's web line, run as Heroku runs it, on a free port."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import httpx

from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.paths import ROOT
from tests.helpers.waiting import eventually


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
        unsigned = await eventually(lambda: answer(client, f"{url}/voice"), timeout=30.0, interval=0.05)
    assert unsigned.status_code == 403
    return process, url


async def answer(client: httpx.AsyncClient, voice_url: str) -> httpx.Response | None:
    """An unsigned POST to /voice: the response once the process serves it, None while nothing listens."""
    try:
        return await client.post(voice_url, data={"CallSid": "CA1"})
    except httpx.TransportError:
        return None
