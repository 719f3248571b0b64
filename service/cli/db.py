"""Command line (wiring): `python -m service db upgrade | current | purge`, on the database DATABASE_URL names.

`upgrade` is what the Procfile's `release:` line runs before serving (a SQLite file also migrates itself at
start-up). `current` exits 1 when the database is not at the newest revision, so scripts can check first.
`purge` is one pass of the hourly retention purge the server runs. None of them prints the URL: it may carry a password.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from service.settings import load_settings
from service.storage import migrate


def add_commands(commands: Any) -> None:
    """Register `db upgrade`, `db current` and `db purge` on the `python -m service` sub-command parser."""
    db_parser = commands.add_parser("db", help="the transcript database (DATABASE_URL)")
    actions = db_parser.add_subparsers(dest="db_command", required=True)
    upgrade_parser = actions.add_parser("upgrade", help="apply the schema migrations (safe to run at every start)")
    upgrade_parser.set_defaults(handler=upgrade)
    current_parser = actions.add_parser("current", help="the schema revision; exits 1 if it is not the newest")
    current_parser.set_defaults(handler=current)
    purge_parser = actions.add_parser("purge", help="delete calls older than RETENTION_DAYS, with their transcripts")
    purge_parser.add_argument("--days", type=int, default=None, help="keep this many days instead of RETENTION_DAYS")
    purge_parser.set_defaults(handler=purge)


def upgrade(_args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        _openable(settings.database_url)
        asyncio.run(migrate.upgrade(settings.database_url))
    except Unreachable as exc:
        return _cannot(exc)
    except OSError as exc:  # refused, unreachable, timed out; a migration's own failure keeps its traceback
        return _cannot(Unreachable(type(exc).__name__))
    sys.stdout.write(f"database schema at revision {migrate.head()} (newest)\n")
    return 0


def current(_args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        _openable(settings.database_url)
        revision, newest = migrate.current(settings.database_url), migrate.head()
    except Unreachable as exc:
        return _cannot(exc)
    except Exception as exc:  # noqa: BLE001 - any failure to reach it is the answer: its type, never the URL
        return _cannot(Unreachable(type(exc).__name__))
    if revision == newest:
        sys.stdout.write(f"{revision} (newest)\n")
        return 0
    sys.stdout.write(f"{revision or 'empty'} (newest is {newest}: run `python -m service db upgrade`)\n")
    return 1


class Unreachable(Exception):
    """The database could not be opened or reached: the message says why, never the URL."""


def _openable(url: str) -> None:
    problem = migrate.sqlite_open_problem(url)
    if problem is not None:
        raise Unreachable(problem)


def _cannot(exc: Unreachable) -> int:
    sys.stderr.write(f"cannot reach the database ({exc}): check DATABASE_URL\n")
    return 1


def purge(args: argparse.Namespace) -> int:
    from service.storage import retention  # noqa: PLC0415 - `db upgrade` runs at every release and needs none of it

    settings = load_settings()
    days = args.days if args.days is not None else settings.retention_days
    if days is None or days < 1:
        sys.stderr.write("nothing to purge by: set RETENTION_DAYS or pass --days N (N >= 1)\n")
        return 2
    deleted = asyncio.run(retention.purge(settings.model_copy(update={"retention_days": days})))
    sys.stdout.write(f"purged {deleted} call(s) started more than {days} day(s) ago\n")
    return 0
