"""A fresh clone's first `make run`, as a new user meets it: no `.env`, no `.venv`, nothing set.

The clone is `git clone` of this checkout (offline), so it holds what is committed and nothing of this machine:
no `.env`, no `.venv`, no database. `make run` builds its own `.venv` from `uv.lock` with uv, as a user's first
run does; uv's cache makes that a second or less on a machine that has run `make setup` once (CI has, before the
tests), so the test does not borrow this checkout's environment. The environment passed is only what finding
programs, uv's cache and the package index need: none of the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.helpers.paths import ROOT
from tests.helpers.processes import free_port
from tests.helpers.waiting import eventually

NEXT_STEPS = (
    "callscribe is serving, but some settings are missing. Add to .env (then restart: make run):",
    "TWILIO_AUTH_TOKEN=<your Twilio Auth Token>",
    "DEEPGRAM_API_KEY=<your Deepgram API key>",
    "Then: make demo (one simulated call, its transcript printed), or make simulate.",
)


async def fresh_clone(into: Path) -> Path:
    """`git clone` of this checkout: its committed files only."""
    clone = into / "callscribe"
    git = await asyncio.create_subprocess_exec(
        "git", "clone", "--quiet", str(ROOT), str(clone), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )  # fmt: skip
    _, errors = await asyncio.wait_for(git.communicate(), timeout=60)
    assert git.returncode == 0, errors.decode()
    return clone


def user_environment() -> dict[str, str]:
    """What a user's shell has that `make run` needs: where programs and uv's cache are, how this machine reaches
    the package index (proxies, certificates, pip's and uv's own settings), and no callscribe setting."""
    kept = {"PATH", "HOME", "LANG", "TMPDIR", "XDG_CACHE_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"}
    return {
        name: value
        for name, value in os.environ.items()
        if name in kept or name.startswith(("UV_", "PIP_")) or name.lower().endswith("_proxy")
    }


class Output:
    """A process's combined output, read as it comes."""

    def __init__(self) -> None:
        self.text = ""

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self.text += chunk.decode(errors="replace")


@contextlib.asynccontextmanager
async def make_run(clone: Path, port: int) -> AsyncIterator[tuple[asyncio.subprocess.Process, Output]]:
    """`make run PORT=port` in the clone; SIGTERM to its process group (as Ctrl-C reaches a terminal's) after."""
    process = await asyncio.create_subprocess_exec(
        "make", "run", f"PORT={port}", cwd=clone, env=user_environment(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    output = Output()
    reader = asyncio.create_task(output.read(process.stdout))
    try:
        yield process, output
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=30)
        await asyncio.wait_for(reader, timeout=5)


async def healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.TransportError:
        return False


async def test_a_fresh_clone_make_run_serves_and_says_what_to_set(tmp_path: Path) -> None:
    """No .env, no .venv: `make run` installs what serving needs (not the test tools), migrates its SQLite file,
    serves /healthz, and its start-up ends with the next steps (the .env lines to add); SIGTERM stops it cleanly."""
    clone = await fresh_clone(tmp_path)
    assert not (clone / ".env").exists()
    assert not (clone / ".venv").exists()
    port = free_port()
    async with make_run(clone, port) as (process, output):
        try:
            await eventually(lambda: healthy(f"http://127.0.0.1:{port}"), timeout=120, interval=0.1)
            await eventually(lambda: all(line in output.text for line in NEXT_STEPS), timeout=10)
        except AssertionError as exc:
            raise AssertionError(f"make run's output:\n{output.text}") from exc
        assert process.returncode is None
    assert "service.stopped" in output.text, output.text
    assert "store.migrated revision_before=empty" in output.text
    assert (clone / ".venv" / "bin" / "python").exists(), "the clone's own environment, built from uv.lock"
    assert not (clone / ".venv" / "bin" / "pytest").exists(), "make run installs what serving needs, no test tools"
    assert (clone / "callscribe.sqlite3").exists()
    assert "Traceback" not in output.text
