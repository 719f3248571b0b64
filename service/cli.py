"""callscribe: live transcripts of Twilio calls through Deepgram."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError

from service import logs
from service.settings import Settings, describe_error


def load_settings() -> Settings:
    """Settings from the environment and .env; a bad value exits with a message naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        sys.stderr.write(describe_error(exc) + "\n")
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - imported where used: `simulate` does not need the server's imports

    from hypercorn.asyncio import serve as hypercorn_serve  # noqa: PLC0415
    from hypercorn.config import Config  # noqa: PLC0415

    from service.app import asgi_app  # noqa: PLC0415

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    config = Config()
    config.bind = [f"{args.host}:{args.port or settings.port}"]
    config.websocket_max_message_size = settings.max_message_bytes * 2
    config.graceful_timeout = settings.deepgram_close_timeout_s + 5
    asyncio.run(hypercorn_serve(asgi_app(settings), config))
    return 0


def simulate(args: argparse.Namespace) -> int:
    from service import simulator  # noqa: PLC0415

    return simulator.run(args)


def add_commands(commands: Any) -> None:
    serve_parser = commands.add_parser("serve", help="serve /voice and /media (Hypercorn)")
    serve_parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")  # noqa: S104
    serve_parser.add_argument("--port", type=int, default=None, help="port (default $PORT, else 5001)")
    serve_parser.set_defaults(handler=serve)

    simulate_parser = commands.add_parser("simulate", help="call a running callscribe the way Twilio does")
    from service import simulator  # noqa: PLC0415

    simulator.add_arguments(simulate_parser)
    simulate_parser.set_defaults(handler=simulate)
