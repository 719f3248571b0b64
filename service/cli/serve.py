"""Command line: `python -m service serve`, Hypercorn with the app, as the Procfile and `make run` start it.

One worker (WEB_CONCURRENCY=1, the default) is served in this very process: no supervisor, no spawned worker,
no multiprocessing resource tracker, so start-up imports everything once and a dyno's memory holds one
interpreter. SIGTERM finishes every call first (the runtime's own handler, `web/runtime.py`), then raises
SIGINT, which stops Hypercorn gracefully. More workers run under Hypercorn's supervisor, each a spawned
process that adds up metrics with the others through PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.settings import Settings, load_settings

if TYPE_CHECKING:
    from hypercorn.config import Config, Sockets

# Routes Hypercorn's own log lines through the root logger, so they share the service's format.
HYPERCORN_LOGGING = Path(__file__).resolve().parent / "hypercorn_logging.json"
OPEN_FILES_WITHOUT_HARD_LIMIT = 65536  # when the hard limit is unlimited, the soft one is raised this far
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client reads it when it is first imported


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("serve", help="serve /voice and /media (Hypercorn)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")  # noqa: S104
    parser.add_argument("--port", type=int, default=None, help="port (default $PORT, else 5001)")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "1")),
        help="Hypercorn worker processes (default $WEB_CONCURRENCY, else 1, served in this process); "
        "MAX_CALLS applies to each",
    )
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    # Imported here: the other commands need neither Hypercorn nor prometheus-client.
    from hypercorn.config import Config  # noqa: PLC0415

    from service.deepgram.engines import setting_problems  # noqa: PLC0415 - the SDK, for this command only

    settings = load_settings(setting_problems)  # a bad setting stops here, with its message, before any worker starts
    raise_open_files_limit()
    config = Config()
    port = args.port or settings.port
    config.bind = [f"{args.host}:{port}"]
    # Heroku sends SIGKILL 30 s after SIGTERM; calls get SHUTDOWN_TIMEOUT_S of that to finish.
    config.graceful_timeout = min(25.0, settings.shutdown_timeout_s + 5)
    config.websocket_max_message_size = settings.max_message_bytes * 2
    config.logconfig = f"json:{HYPERCORN_LOGGING}"
    config.workers = args.workers  # WEB_CONCURRENCY is Heroku's name for the count
    # Bound before the app starts: Hypercorn binds only after the app's start-up, which logs "callscribe is
    # serving" and its next steps, so a taken port ended in a traceback under a block that said all was well.
    try:
        sockets = config.create_sockets()
    except OSError as exc:
        sys.stderr.write(cannot_listen(args.host, port, exc) + "\n")
        return 1
    if os.environ.get(MULTIPROC_ENV) or args.workers > 1:
        # Before prometheus-client is imported anywhere: the workers add up each other's metrics through it.
        prepare_multiprocess_dir()
    if args.workers <= 1:
        return serve_here(config, sockets)
    if settings.database_url.startswith("sqlite"):
        warn_sqlite_workers(settings, args.workers)
    from hypercorn.run import run  # noqa: PLC0415

    # Hypercorn's supervisor binds again, for its workers to share (SO_REUSEPORT): these only proved it can.
    for bound in sockets.insecure_sockets:
        bound.close()
    config.application_path = "service.web.asgi:create()"
    return run(config)


def warn_sqlite_workers(settings: Settings, workers: int) -> None:
    """One line from the supervisor: several workers on one SQLite file take turns at its one write lock."""
    import structlog  # noqa: PLC0415

    from service import logs  # noqa: PLC0415

    logs.configure(settings.log_level, settings.log_format)
    structlog.get_logger("callscribe.app").warning(
        "settings.sqlite_workers", workers=workers,
        why="the workers share one SQLite file and take turns at its write lock: under load a stream's start waits "
        "for its claim (up to 2 s, measured at 125 calls on two cores), and every write waits its turn",
        action="set DATABASE_URL to PostgreSQL for more than one worker (docs/operating.md#workers)",
    )  # fmt: skip


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    """One line: why `host:port` cannot be listened on, and what to do."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot serve: another process is on port {port}. Stop it, or serve on another port: "
            f"make run PORT={port + 1} (or set PORT={port + 1})"
        )
    if exc.errno == errno.EACCES:
        return f"cannot serve on port {port}: this user may not listen on it; use a port of 1024 or above (set PORT)"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot serve on {host}:{port}: {host} is not an address of this machine (check --host)"
    return f"cannot serve on {host}:{port}: {exc.strerror or exc}"


def serve_here(config: Config, sockets: Sockets) -> int:
    """Hypercorn in this process on the `sockets` bound already, until SIGTERM or SIGINT (both finish the calls
    and end the live feeds first, once the app has started)."""
    import asyncio  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from hypercorn.asyncio.run import worker_serve  # noqa: PLC0415 - `hypercorn.asyncio.serve` takes no sockets
    from hypercorn.utils import wrap_app  # noqa: PLC0415

    from service.web.asgi import create  # noqa: PLC0415

    async def main() -> None:
        stop = asyncio.Event()
        # Once SIGTERM's drain is done (the runtime's own handler, from the app's start-up on), the runtime stops
        # Hypercorn through `stop.set`.
        app = wrap_app(create(stop_server=stop.set), config.wsgi_max_body_size, "asgi")
        interrupted = False

        def interrupt() -> None:
            """Ctrl+C stops as SIGTERM does: the calls finished and the live feeds ended (each page told to
            reconnect), then Hypercorn. Stopped at once, Hypercorn waited for the feeds' open responses, which
            never end by themselves, for its whole graceful timeout (25 s). A second Ctrl+C stops Hypercorn."""
            nonlocal interrupted
            if interrupted:
                stop.set()
                return
            interrupted = True
            signal.raise_signal(signal.SIGTERM)

        loop = asyncio.get_running_loop()
        # The app's start-up replaces the SIGTERM handler with its own (finish the calls, then `stop.set`). Before
        # it, there is nothing to finish: SIGTERM stops Hypercorn.
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, interrupt)
        await worker_serve(app, config, sockets=sockets, shutdown_trigger=stop.wait)

    asyncio.run(main())
    return 0


def raise_open_files_limit() -> int:
    """The soft limit on open files raised to the hard one (workers inherit it); the limit now in force.

    Every connection is a file: under a soft limit of 1024 (a common default), 1,100 connections held open by
    anyone stopped the process from accepting Twilio's. The hard limit is what the platform allows a process.
    """
    import resource  # noqa: PLC0415

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WITHOUT_HARD_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def prepare_multiprocess_dir() -> Path:
    """Before Hypercorn starts workers: a directory for their values, empty, so counting starts from zero.

    An operator's own PROMETHEUS_MULTIPROC_DIR is kept but emptied of metric files, as prometheus-client
    requires between runs; otherwise a fresh temporary directory is used.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="callscribe-metrics-"))
        os.environ[MULTIPROC_ENV] = str(directory)
    return directory
