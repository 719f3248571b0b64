"""Command line: `python -m service try` (`make try`), a transcribed call with no account and no `.env`.

It starts the Deepgram stand-in (in this process) and the service (a child process) on local ports, with secrets
made for this run and passed as environment variables, places the demo call (`python -m service demo`, which
prints the transcript), then prints the page's address with a password made for the run, and keeps both
running until Ctrl+C (or SIGTERM) stops both. With DEEPGRAM_API_KEY set in the environment the stand-in is left
out and the call goes to Deepgram itself: the same command, real speech recognition.

Nothing is written to the checkout: the service runs in a temporary directory (its SQLite database, spool and
session secret there, and no `.env` read), which is removed when it stops. Its log goes to a file there, so the
terminal shows the steps and the transcript; the last lines of the log are printed if it fails to start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the service runs elsewhere, so PYTHONPATH names it
DEFAULT_PORT = 5001
DEFAULT_STANDIN_PORT = 5002
START_TIMEOUT_S = 60.0  # the service's first start migrates a fresh SQLite database
POLL_S = 0.1
# Ctrl+C reaches the service too (one process group), which stops in about 1.3 s; one still running after this is
# sent SIGINT (a second SIGINT would stop Hypercorn without finishing the calls, so it is not sent at once).
STOP_ON_ITS_OWN_S = 3.0
STOP_TIMEOUT_S = 10.0  # then SIGKILL
LOG_TAIL_LINES = 20


class TryFailure(Exception):
    """What stopped the try, said as what to do about it."""


@dataclass(frozen=True, slots=True)
class Secrets:
    """The secrets made for one run: never written anywhere, the password printed once."""

    twilio_auth_token: str
    api_token: str
    dashboard_password: str
    deepgram_api_key: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            twilio_auth_token=secrets.token_hex(16),
            api_token=secrets.token_urlsafe(24),
            dashboard_password=secrets.token_urlsafe(12),  # 16 characters, over the page's minimum of 12
            deepgram_api_key=f"standin-{secrets.token_hex(8)}",  # the stand-in takes any key
        )


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "try", help="the stand-in and the service on local ports, one demo call, until Ctrl+C (`make try`)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", DEFAULT_PORT)),
        help=f"the service's port (default $PORT, else {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--standin-port",
        type=int,
        default=DEFAULT_STANDIN_PORT,
        help=f"the Deepgram stand-in's port (default {DEFAULT_STANDIN_PORT})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 after Ctrl+C with the call transcribed; 1 when something failed (and stderr says what to do)."""
    try:
        return asyncio.run(_try(args))
    except TryFailure as exc:
        sys.stderr.write(f"try: {exc}\n")
        return 1


def service_env(base: dict[str, str], made: Secrets, *, deepgram_url: str | None, workdir: Path) -> dict[str, str]:
    """The service's (and the demo's) environment: `base` with this run's secrets, database and Deepgram."""
    env = {
        **base,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")])),
        "TWILIO_AUTH_TOKEN": made.twilio_auth_token,
        "API_TOKEN": made.api_token,
        "DASHBOARD_PASSWORD": made.dashboard_password,
        "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'callscribe.sqlite3'}",
        "SPOOL_DIR": str(workdir / "spool"),
    }
    if deepgram_url is not None:  # the stand-in; else the environment's own DEEPGRAM_API_KEY and DEEPGRAM_URL
        env["DEEPGRAM_URL"] = deepgram_url
        env["DEEPGRAM_API_KEY"] = made.deepgram_api_key
    return env


def ready_lines(*, url: str, made: Secrets, standin_url: str | None, log: Path) -> str:
    """What is printed once the call is transcribed: the page and its login, the API, another call, the log."""
    deepgram = (
        f"the Deepgram stand-in at {standin_url} (placeholder words chosen from the audio, not speech recognition)"
        if standin_url is not None
        else "Deepgram (DEEPGRAM_API_KEY from the environment)"
    )
    return (
        f"\ncallscribe is running at {url}/ with {deepgram}.\n"
        f"  The page:      {url}/  password: {made.dashboard_password}  (made for this run, shown once)\n"
        f'  The API:       curl -H "Authorization: Bearer {made.api_token}" {url}/api/calls\n'
        f"  Another call:  {another_call(url, made, standin_url)}\n"
        f"  Service log:   {log}\n"
        "Ctrl+C stops both (and removes this run's data). With a real key: DEEPGRAM_API_KEY=<your key> make try\n"
    )


def another_call(url: str, made: Secrets, standin_url: str | None) -> str:
    """The command that places one more demo call: signed with this run's token, read through its API."""
    deepgram = f" DEEPGRAM_URL={standin_url}" if standin_url is not None else ""  # so the demo labels its words
    return (
        f"TWILIO_AUTH_TOKEN={made.twilio_auth_token} API_TOKEN={made.api_token}{deepgram} "
        f"{sys.executable} -m service demo --url {url}"
    )


async def _try(args: argparse.Namespace) -> int:
    from service.standin.server import StandIn  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    _check_port_free(args.port, "the service's")
    workdir = Path(tempfile.mkdtemp(prefix="callscribe-try-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            standin_url = None
            if not os.environ.get("DEEPGRAM_API_KEY"):
                try:
                    standin = await stack.enter_async_context(StandIn(port=args.standin_port))
                except OSError as exc:
                    raise TryFailure(
                        f"the Deepgram stand-in cannot listen on port {args.standin_port} ({exc.strerror or exc}): "
                        "stop what uses it, or pick another with `make try ARGS='--standin-port 5012'`"
                    ) from exc
                standin_url = standin.url
            return await _run_until_stopped(args, workdir, standin_url, stop)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _run_until_stopped(
    args: argparse.Namespace, workdir: Path, standin_url: str | None, stop: asyncio.Event
) -> int:
    made = Secrets.generate()
    env = service_env(dict(os.environ), made, deepgram_url=standin_url, workdir=workdir)
    url = f"http://127.0.0.1:{args.port}"
    log = workdir / "service.log"
    _say(f"starting callscribe at {url}" + (f" with the Deepgram stand-in at {standin_url}" if standin_url else ""))
    with log.open("wb") as log_file:
        service = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(args.port),
            cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        )  # fmt: skip
    try:
        steps = asyncio.create_task(_start_and_call(service, url, env, workdir, log))
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({steps, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if steps not in done:  # Ctrl+C before the call was transcribed
            steps.cancel()
            with contextlib.suppress(asyncio.CancelledError, TryFailure):
                await steps
            return 130
        steps.result()  # a TryFailure, raised
        sys.stdout.write(ready_lines(url=url, made=made, standin_url=standin_url, log=log))
        sys.stdout.flush()
        exited = asyncio.create_task(service.wait())
        await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not stopped.done():
            raise TryFailure(f"the service stopped by itself (exit {service.returncode}):\n{_tail(log)}")
        stopped.cancel()
        return 0
    finally:
        await _stop(service)
        _say("stopped: the service and the stand-in" if standin_url is not None else "stopped: the service")


async def _start_and_call(
    service: asyncio.subprocess.Process, url: str, env: dict[str, str], workdir: Path, log: Path
) -> None:
    await _wait_until_serving(service, url, log)
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "demo", "--url", url, cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        code = await demo.wait()
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
    if code != 0:
        raise TryFailure(f"the demo call failed (above); the service's log ends:\n{_tail(log)}")


async def _wait_until_serving(service: asyncio.subprocess.Process, url: str, log: Path) -> None:
    """Until /healthz answers 200; a service that exits or does not answer in time fails with its log's end."""
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if service.returncode is not None:
                raise TryFailure(f"the service exited as it started (exit {service.returncode}):\n{_tail(log)}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TryFailure(f"the service did not answer in {START_TIMEOUT_S:g} s:\n{_tail(log)}")
            await asyncio.sleep(POLL_S)  # another process: nothing to await but its port


async def _stop(service: asyncio.subprocess.Process) -> None:
    """The service stopped: Ctrl+C reached it too, else SIGINT now (it finishes at once), else SIGKILL."""
    for signum, wait_s in ((None, STOP_ON_ITS_OWN_S), (signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGKILL, None)):
        if service.returncode is not None:
            return
        if signum is not None:
            with contextlib.suppress(ProcessLookupError):
                service.send_signal(signum)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.wait(), wait_s)


def _check_port_free(port: int, whose: str) -> None:
    with socket.socket() as probe:
        # As the server binds: a port whose last connections wait out TIME_WAIT is free to listen on again.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise TryFailure(
                f"{whose} port {port} is busy ({exc.strerror or exc}): stop what uses it (`make run`?), or pick "
                "another with `make try PORT=5011`"
            ) from exc


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _say(text: str) -> None:
    sys.stdout.write(f"try: {text}\n")
    sys.stdout.flush()
