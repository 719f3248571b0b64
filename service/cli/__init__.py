"""callscribe: live transcripts of Twilio calls through Deepgram.

The command line, `python -m service COMMAND`: one module per command group. Each registers its parser here and
imports what it needs only when it runs, so `db upgrade` (the release phase) never loads the SDKs or the app.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from service.cli import calls, db, demo, doctor, serve, settings, simulate, spool, standin, try_it, twilio_number


class CommandParser(argparse.ArgumentParser):
    """A parser whose command groups (`calls`, `spool`, `db`, `twilio`, and this one) print their commands' help
    when run alone, instead of argparse's "the following arguments are required: calls_command"."""

    def add_subparsers(self, **kwargs: object) -> argparse._SubParsersAction[CommandParser]:  # type: ignore[override]
        kwargs["required"] = False  # a group alone runs the handler below
        kwargs.setdefault("title", "commands")
        actions: argparse._SubParsersAction[CommandParser] = super().add_subparsers(**kwargs)  # type: ignore[call-overload]
        self.set_defaults(handler=self._commands_help)
        return actions

    def _commands_help(self, _args: argparse.Namespace) -> int:
        # A usage error, as argparse's own are: stderr, exit 2; the help says which commands there are.
        sys.stderr.write(self.format_help())
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m service", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    for command in (try_it, serve, standin, simulate, demo, spool, calls, db, settings, doctor, twilio_number):
        command.add_commands(commands)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
