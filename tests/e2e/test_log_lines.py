"""The log under Hypercorn's supervisor: WEB_CONCURRENCY=2 workers share one stdout, and no line is broken."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
from pathlib import Path

import httpx

from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.processes import start_web

REQUESTS = 400


async def test_two_workers_under_the_supervisor_write_whole_lines(deepgram: FakeDeepgram, tmp_path: Path) -> None:
    """`python -m service serve` with 2 workers, unbuffered: every line parses, every refusal is there once."""
    process, url = await start_web(deepgram, tmp_path, WEB_CONCURRENCY="2", PYTHONUNBUFFERED="1")
    assert process.stdout is not None
    stdout = asyncio.create_task(process.stdout.read())  # read as it comes: the workers must never block on it
    try:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=20)) as client:
            # Each from its own address (so none is summarised), some with a path that makes a line over 4 KiB.
            answers = await asyncio.gather(*(_refused(client, url, n) for n in range(REQUESTS)))
        assert set(answers) == {503}  # API_TOKEN unset: the API is off
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        data = await asyncio.wait_for(stdout, timeout=30)
        assert process.stderr is not None
        stderr = await asyncio.wait_for(process.stderr.read(), timeout=30)
        await asyncio.wait_for(process.wait(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    lines = data.split(b"\n")
    assert lines.pop() == b""
    assert max(len(line) + 1 for line in lines) <= select.PIPE_BUF
    records = [json.loads(line) for line in lines]
    assert sum(record["event"] == "service.ready" for record in records) == 2  # both workers wrote
    # Two workers on one SQLite file: the supervisor says once that they share its write lock, and what to do.
    [shared] = [record for record in records if record["event"] == "settings.sqlite_workers"]
    assert shared["workers"] == 2
    assert "PostgreSQL" in shared["action"]
    refused = sorted(record["address"] for record in records if record["event"] == "api.refused")
    assert refused == sorted(_address(n) for n in range(REQUESTS))


async def _refused(client: httpx.AsyncClient, url: str, n: int) -> int:
    path = f"/api/calls/{n}" + ("x" * 5000 if n % 10 == 0 else "")
    response = await client.get(f"{url}{path}", headers={"X-Forwarded-For": _address(n)})
    return response.status_code


def _address(n: int) -> str:
    return f"203.0.{n // 250}.{n % 250 + 1}"
