"""Command line: `python -m service standin`, a Deepgram stand-in on a local port, for trying callscribe with no
Deepgram account (`make try` starts one itself).

It serves Deepgram's live (v1 and Flux's v2), pre-recorded and text-intelligence APIs on one port, as the tests'
fake Deepgram does (`service/standin/`). Its words are placeholders chosen from the audio, not speech
recognition, and its start-up line says so, with the DEEPGRAM_URL to give the service.
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Any

DEFAULT_PORT = 5002


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "standin", help="a local Deepgram stand-in (placeholder words, no account): for trying callscribe"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument(
        "--words",
        choices=("readable", "hashed"),
        default="readable",
        help="readable: English words picked by the audio (default); hashed: w1a2b3c4d, one per window, as in tests",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl+C or SIGTERM; exit 0 then, 1 when the port cannot be bound."""
    import asyncio  # noqa: PLC0415

    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            sys.stderr.write(f"standin: port {args.port} is busy: stop what uses it, or pick another with --port\n")
        else:
            sys.stderr.write(f"standin: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}\n")
        return 1
    return 0


def startup_lines(url: str) -> str:
    """What the stand-in says as it starts: where it is, the DEEPGRAM_URL to set, and what its words are."""
    return (
        f"Deepgram stand-in serving Deepgram's live, pre-recorded and text-intelligence APIs at {url}\n"
        f"For callscribe: DEEPGRAM_URL={url} (any DEEPGRAM_API_KEY is taken)\n"
        "Its words are placeholders chosen from the audio (the same audio, the same words), "
        "not speech recognition.\n"
    )


async def _serve(args: argparse.Namespace) -> None:
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from service.standin.server import StandIn  # noqa: PLC0415
    from service.standin.words import hashed_word, readable_word  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="standin: %(message)s", stream=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    words = readable_word if args.words == "readable" else hashed_word
    async with StandIn(host=args.host, port=args.port, words=words) as standin:
        sys.stdout.write(startup_lines(standin.url))
        sys.stdout.flush()
        await stop.wait()
