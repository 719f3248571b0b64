"""Command line: `python -m service serve`, Hypercorn with the app, as the Procfile and `make run` start it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from service.settings import load_settings

# Routes Hypercorn's own log lines through the root logger, so they share the service's format.
HYPERCORN_LOGGING = Path(__file__).resolve().parent / "hypercorn_logging.json"


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("serve", help="serve /voice and /media (Hypercorn)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")  # noqa: S104
    parser.add_argument("--port", type=int, default=None, help="port (default $PORT, else 5001)")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "1")),
        help="Hypercorn worker processes (default $WEB_CONCURRENCY, else 1); MAX_CALLS applies to each",
    )
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    # Imported here: the other commands need neither Hypercorn nor prometheus-client.
    from hypercorn.config import Config  # noqa: PLC0415
    from hypercorn.run import run  # noqa: PLC0415

    from service.metrics import prepare_multiprocess_dir  # noqa: PLC0415

    settings = load_settings()  # a bad setting stops here, with its message, before any worker starts
    # Before the workers start: they inherit the directory and add up each other's metrics through it.
    prepare_multiprocess_dir()
    config = Config()
    config.application_path = "service.web.asgi:create()"
    config.bind = [f"{args.host}:{args.port or settings.port}"]
    # Hypercorn's own default is one spawned worker process; WEB_CONCURRENCY is Heroku's name for the count.
    config.workers = args.workers
    # Heroku sends SIGKILL 30 s after SIGTERM; calls get SHUTDOWN_TIMEOUT_S of that to finish.
    config.graceful_timeout = min(25.0, settings.shutdown_timeout_s + 5)
    config.websocket_max_message_size = settings.max_message_bytes * 2
    config.logconfig = f"json:{HYPERCORN_LOGGING}"
    return run(config)
