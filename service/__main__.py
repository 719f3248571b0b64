"""Command line: `python -m service serve | simulate ...`."""

from __future__ import annotations

import argparse
import sys

from service import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=cli.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cli.add_commands(commands)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
