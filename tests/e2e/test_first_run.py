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
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from service.web.dashboard import CSRF_COOKIE
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


async def log_in(url: str, password: str) -> httpx.Response:
    """The page's login form posted with `password`, as a browser on this machine posts it (cookies by hand:
    they are Secure, and httpx keeps them from plain http)."""
    async with httpx.AsyncClient(base_url=url) as client:
        form = await client.get("/login")
        cookie = form.cookies[CSRF_COOKIE]
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None, form.text
        return await client.post(
            "/login", data={"csrf": csrf.group(1), "password": password}, headers={"Cookie": f"{CSRF_COOKIE}={cookie}"}
        )


def process_group(pgid: int) -> list[str]:
    """The command lines of the processes still in process group `pgid` (read from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # a zombie is gone, only not yet reaped
                members.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
    return members


def port_free(port: int) -> bool:
    """Whether a server could listen on `port` again (SO_REUSEADDR, as servers bind: closed connections may wait)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_a_fresh_clone_make_try_transcribes_a_call_with_no_account_then_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    """No .env, no .venv, no key: `make try` installs, starts the stand-in and the service, prints the demo call's
    transcript in placeholder words labelled as such and the page's address and password (which log in); Ctrl+C
    to its process group then stops everything: no process left, both ports free, nothing written to .env."""
    clone = await fresh_clone(tmp_path)
    assert not (clone / ".env").exists()
    assert not (clone / ".venv").exists()
    port, standin_port = free_port(), free_port()
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        "make", "try", f"PORT={port}", f"ARGS=--standin-port {standin_port}", cwd=clone, env=user_environment(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    output = Output()
    reader = asyncio.create_task(output.read(process.stdout))
    try:
        try:
            await eventually(lambda: "Ctrl+C stops both" in output.text, timeout=180, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"make try's output:\n{output.text}") from exc
        took_s = time.monotonic() - started
        running = process_group(process.pid)
        password = re.search(r"password: (\S+)", output.text)
        assert password is not None, output.text
        login = await log_in(f"http://127.0.0.1:{port}", password.group(1))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        await asyncio.wait_for(process.wait(), timeout=30)
        await asyncio.wait_for(reader, timeout=5)
    standin = f"http://127.0.0.1:{standin_port}"
    note = "placeholder words chosen from the audio, not speech recognition"
    assert f"transcript ({note}, by the Deepgram stand-in at {standin}):\n[00:00.00] caller: " in output.text
    assert f"The page:      http://127.0.0.1:{port}/  password: " in output.text
    assert len(password.group(1)) >= 12
    assert (login.status_code, login.headers.get("location")) == (303, "/"), "the printed password logs in"
    assert any(" -m service try " in line for line in running), running
    assert any(" -m service serve " in line for line in running), running
    assert "try: stopped: the service and the stand-in" in output.text, output.text
    assert process_group(process.pid) == [], "no process of make try's left running"
    assert port_free(port), "the service's port is free"
    assert port_free(standin_port), "the stand-in's port is free"
    assert not (clone / ".env").exists(), "make try writes no .env"
    assert "Traceback" not in output.text, output.text
    assert took_s < 180
