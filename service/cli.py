"""callscribe: live transcripts of Twilio calls through Deepgram."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.settings import Settings, describe_error

# Routes Hypercorn's own log lines through the root logger, so they share the service's format.
HYPERCORN_LOGGING = Path(__file__).resolve().parent / "hypercorn_logging.json"


def load_settings() -> Settings:
    """Settings from the environment and .env; a bad value exits with a message naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        sys.stderr.write(describe_error(exc) + "\n")
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> int:
    """Hypercorn with the app, as the Procfile and `make run` start it."""
    from hypercorn.config import Config  # noqa: PLC0415 - imported where used: `simulate` does not need it
    from hypercorn.run import run  # noqa: PLC0415

    settings = load_settings()  # a bad setting stops here, with its message, before any worker starts
    from service.metrics import prepare_multiprocess_dir  # noqa: PLC0415

    # Before the workers start: they inherit the directory and add up each other's metrics through it.
    prepare_multiprocess_dir()
    config = Config()
    config.application_path = "service.asgi:create()"
    config.bind = [f"{args.host}:{args.port or settings.port}"]
    # Hypercorn's own default is one spawned worker process; WEB_CONCURRENCY is Heroku's name for the count.
    config.workers = args.workers
    # Heroku sends SIGKILL 30 s after SIGTERM; calls get SHUTDOWN_TIMEOUT_S of that to finish.
    config.graceful_timeout = min(25.0, settings.shutdown_timeout_s + 5)
    config.websocket_max_message_size = settings.max_message_bytes * 2
    config.logconfig = f"json:{HYPERCORN_LOGGING}"
    return run(config)


def simulate(args: argparse.Namespace) -> int:
    from service import simulator  # noqa: PLC0415

    return simulator.run(args)


def add_commands(commands: Any) -> None:
    serve_parser = commands.add_parser("serve", help="serve /voice and /media (Hypercorn)")
    serve_parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")  # noqa: S104
    serve_parser.add_argument("--port", type=int, default=None, help="port (default $PORT, else 5001)")
    serve_parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "1")),
        help="Hypercorn worker processes (default $WEB_CONCURRENCY, else 1); MAX_CALLS applies to each",
    )
    serve_parser.set_defaults(handler=serve)

    simulate_parser = commands.add_parser("simulate", help="call a running callscribe the way Twilio does")
    from service import simulator  # noqa: PLC0415

    simulator.add_arguments(simulate_parser)
    simulate_parser.set_defaults(handler=simulate)

    from service import spool_cli  # noqa: PLC0415 - `spool list` needs neither the SDK nor the app

    spool_cli.add_commands(commands)

    from service import calls_cli  # noqa: PLC0415 - `calls` reads the database; it needs neither the SDK nor the app

    calls_cli.add_commands(commands)

    from service import db_cli  # noqa: PLC0415 - `db upgrade` (the release phase) needs neither the SDK nor the app

    db_cli.add_commands(commands)
