"""`python -m service spool list | retry`, run as separate processes the way an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.cli.spool import spool_table
from service.spool.directory import Spool
from tests.helpers.audio import SPEECH
from tests.helpers.credentials import DEEPGRAM_KEY
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.fakes.deepgram_server import expected_words
from tests.helpers.paths import ROOT
from tests.helpers.spool import spool_audio


@pytest.fixture
async def batch_api() -> AsyncIterator[FakeDeepgramBatch]:
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as fake:
        yield fake


async def run_spool(command: str, spool_dir: Path, batch_url: str = "http://127.0.0.1:9") -> tuple[int | None, str]:
    """`python -m service spool <command>` in its own process, away from any .env; (exit code, stdout)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DEEPGRAM_API_KEY": DEEPGRAM_KEY,
        "DEEPGRAM_URL": "http://127.0.0.1:9",
        "DEEPGRAM_BATCH_URL": batch_url,
        "SPOOL_DIR": str(spool_dir),
        "LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "spool", command,
        cwd=spool_dir.parent, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert not stderr, stderr.decode()
    return process.returncode, stdout.decode()


async def test_list_says_when_the_spool_is_empty(tmp_path: Path) -> None:
    """`spool list` on an empty (or absent) spool says so and exits 0."""
    assert await run_spool("list", tmp_path / "spool") == (0, "spool is empty\n")


async def test_retry_delivers_everything_and_exits_zero(batch_api: FakeDeepgramBatch, tmp_path: Path) -> None:
    """`spool retry`: the entry's batch transcripts are logged with every word, it leaves the spool, exit 0."""
    spool_dir = tmp_path / "spool"
    entry = spool_audio(spool_dir, SPEECH, start_s=4.0)
    code, listing = await run_spool("list", spool_dir)
    assert code == 0
    assert entry.id in listing
    assert "HTTP 401 at upgrade" in listing
    code, stdout = await run_spool("retry", spool_dir, batch_api.url)
    assert code == 0, stdout
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    transcripts = [line for line in lines if line["event"] == "transcript"]
    assert [w for line in transcripts for w in line["text"].split()] == expected_words(SPEECH)
    assert all(line["batch"] and line["is_final"] for line in transcripts)
    assert [line["batch_key"] for line in transcripts] == [f"{entry.id}#0", f"{entry.id}#1"]
    assert transcripts[0]["start"] == 4.0
    assert stdout.splitlines()[-1] == "delivered 1, failed 0"
    assert await run_spool("list", spool_dir) == (0, "spool is empty\n")


async def test_retry_that_fails_exits_one_and_list_shows_why(batch_api: FakeDeepgramBatch, tmp_path: Path) -> None:
    """`spool retry` against a failing Deepgram: exit 1; `spool list` shows the attempt and its error."""
    spool_dir = tmp_path / "spool"
    spool_audio(spool_dir, SPEECH, start_s=0.0)
    batch_api.fail_status = 503
    code, stdout = await run_spool("retry", spool_dir, batch_api.url)
    assert code == 1
    assert stdout.splitlines()[-1] == "delivered 0, failed 1"
    _, listing = await run_spool("list", spool_dir)
    header, row = listing.splitlines()
    assert header.split() == [
        "ID", "CALL", "TRACK", "START", "DURATION", "SPOOLED", "BECAUSE", "ATTEMPTS", "LAST", "ERROR"
    ]  # fmt: skip
    assert "  1  " in row
    assert "HTTP 503" in row


def test_the_table_lines_up(tmp_path: Path) -> None:
    """Columns are aligned whatever the lengths, with a dash for no error yet."""
    spool_audio(tmp_path, b"\x01" * 8000, start_s=1.0, call_sid="CAshort")
    spool_audio(tmp_path, b"\x02" * 16000, start_s=12.25, call_sid="CAmuch_longer_call_sid")
    header, first, second = spool_table(Spool(tmp_path).entries()).splitlines()
    column = header.index("CALL")
    assert first[column:].startswith("CAshort ")
    assert second[column:].startswith("CAmuch_longer_call_sid ")
    column = header.index("DURATION")
    assert (first[column : column + 5], second[column : column + 5]) == ("1.00s", "2.00s")
    assert first.endswith(" -")
