"""callscribe: live transcripts of Twilio calls through Deepgram.

The command line, `python -m service COMMAND`: one module per command group. Each registers its parser here and
imports what it needs only when it runs, so `db upgrade` (the release phase) never loads the SDKs or the app.
"""

from __future__ import annotations

import argparse

from service.cli import calls, db, demo, doctor, serve, settings, simulate, spool, twilio_number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (serve, simulate, demo, spool, calls, db, settings, doctor, twilio_number):
        command.add_commands(commands)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result
