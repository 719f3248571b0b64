"""Spooled audio for tests: a known payload, a spool entry made as the live path makes one, and a crash.

`crash_while_spooling` runs the spool in a separate process and SIGKILLs it at a chosen step, so the recovery
tests see exactly what a killed dyno leaves on disk.
"""

from __future__ import annotations

import datetime
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.calls.transcript import Transcript, TranscriptSink
from service.deepgram.engines import batch_engines
from service.settings import Settings
from service.spool.directory import Spool, SpoolEntry
from service.spool.worker import BatchWorker, SharedSpool, transcribe
from service.storage.schema import create_engine
from tests.helpers.credentials import DEEPGRAM_KEY
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.paths import ROOT


def batch_worker(
    settings: Settings, spool: Spool, sink: TranscriptSink, shared: SharedSpool | None = None
) -> BatchWorker:
    """The batch worker as the service builds it: on Deepgram's pre-recorded API, the primary's then the
    fallback's."""
    return BatchWorker(settings, spool, sink, shared, engines=batch_engines)


async def transcribe_entry(
    settings: Settings, entry: SpoolEntry, wav: bytes | None = None, *, order: tuple[str, ...] = ("primary", "fallback")
) -> list[Transcript]:
    """One entry through Deepgram's pre-recorded APIs, in `order`."""
    return await transcribe(settings, entry, wav, engines=batch_engines, order=order)


AUDIO = bytes(i % 251 for i in range(10_001))  # odd length: the WAV needs its pad byte


def names(directory: Path) -> list[str]:
    """The file names in `directory`, sorted: what a spool left behind."""
    return sorted(path.name for path in directory.iterdir())


def spool_audio(
    directory: Path, audio: bytes, *, start_s: float, call_sid: str = "CAbatch", reason: str = "HTTP 401 at upgrade"
) -> SpoolEntry:
    """A complete spool entry of `audio`, spooled for `reason`, written in Twilio's 160-byte frames."""
    segment = Spool(directory).open_segment(
        call_sid=call_sid, stream_sid=f"MZ{call_sid}", track="inbound", start_s=start_s, reason=reason
    )
    for offset in range(0, len(audio), 160):  # as Twilio's frames arrive
        segment.write(audio[offset : offset + 160])
    entry = segment.close()
    assert entry is not None
    return entry


# The crashing process: the same AUDIO, the same segment every time, killed at the step `crash_at` names.
CRASH = """
import os, pathlib, signal, sys
import service.spool.directory as spool_module
from tests.helpers.paths import ROOT

directory, crash_at = pathlib.Path(sys.argv[1]), sys.argv[2]
audio = bytes(i % 251 for i in range(10_001))

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

replace = pathlib.Path.replace
write_atomically = spool_module._write_atomically
if crash_at == "renaming-the-wav":  # header patched, not yet renamed
    pathlib.Path.replace = lambda self, target: die() if self.name.endswith(".wav.part") else replace(self, target)
if crash_at == "writing-the-sidecar":  # WAV renamed, sidecar half written
    def half_write(path, data):
        if path.name.endswith(".segment.json"):
            return write_atomically(path, data)
        path.with_name(path.name + ".tmp").write_text('{"version": 1, "call_')
        die()
    spool_module._write_atomically = half_write
if crash_at == "tidying-up":  # sidecar written, segment metadata not yet removed
    spool_module.fsync_directory = die

segment = spool_module.Spool(directory).open_segment(
    call_sid="CAcrash", stream_sid="MZcrash", track="inbound", start_s=1.5, reason="Deepgram unavailable for 20 s"
)
for offset in range(0, len(audio), 160):
    segment.write(audio[offset : offset + 160])
if crash_at == "writing-audio":
    die()
segment.close()
"""


def crash_while_spooling(directory: Path, crash_at: str) -> None:
    """A separate process spools AUDIO and is killed (SIGKILL) at `crash_at`: no cleanup of any kind runs."""
    process = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", CRASH, str(directory), crash_at], cwd=ROOT, capture_output=True, timeout=30, check=False
    )
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()


class Clock:
    """A wall clock the test moves (`advance`): leases and retention run out when the test says."""

    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


class Sink:
    """The batch worker's transcripts, as they come."""

    def __init__(self) -> None:
        self.transcripts: list[Transcript] = []

    def __call__(self, transcript: Transcript) -> None:
        self.transcripts.append(transcript)

    def words(self) -> list[str]:
        return [word for transcript in self.transcripts for word in transcript.text.split()]


@pytest.fixture
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's migrated database (the module's `migrated_url` fixture)."""
    engine = create_engine(migrated_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def batch_api() -> AsyncIterator[FakeDeepgramBatch]:
    """The fake pre-recorded API, taking the tests' Deepgram key."""
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as fake:
        yield fake
