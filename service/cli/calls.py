"""Command line (wiring): `python -m service calls list | show`, the API's data for an operator at a shell.

Both read DATABASE_URL through `queries.py` and render through `captions.py`, the same functions behind
/api, so the shell and the API always agree. `show` prints only the transcript, in the format asked for, so
it can be redirected into a caption file: `python -m service calls show CA… --format srt > call.srt`. What
it says about the call itself goes to stderr: for a call no stream of which ever started, why and what to check.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from service import captions
from service.cli.tables import table
from service.settings import load_settings
from service.storage import queries
from service.storage.queries import CallRecord
from service.storage.schema import create_engine
from service.storage.statuses import CallStatus


def add_commands(commands: Any) -> None:
    """Register `calls list` and `calls show` on the `python -m service` sub-command parser."""
    calls_parser = commands.add_parser("calls", help="calls and transcripts stored in DATABASE_URL")
    actions = calls_parser.add_subparsers(dest="calls_command", required=True)
    list_parser = actions.add_parser("list", help="calls, newest first")
    list_parser.add_argument("--number", help="only calls from or to this number (E.164, such as +14155550100)")
    list_parser.add_argument("--active", action="store_true", help="only calls still streaming")
    list_parser.add_argument("--limit", type=_positive, default=queries.DEFAULT_LIMIT, help="at most this many calls")
    list_parser.set_defaults(handler=list_calls)
    show_parser = actions.add_parser("show", help="one call's transcript")
    show_parser.add_argument("call_sid", metavar="CALL_SID")
    show_parser.add_argument("--format", choices=captions.FORMATS, default="text", help="default: text")
    show_parser.set_defaults(handler=show_call)


def list_calls(args: argparse.Namespace) -> int:
    database_url = load_settings().database_url
    try:
        calls = asyncio.run(_read_calls(database_url, args.number, args.active, args.limit))
    except SQLAlchemyError as exc:
        return _unreadable(exc)
    sys.stdout.write(calls_table(calls) + "\n")
    return 0


def show_call(args: argparse.Namespace) -> int:
    database_url = load_settings().database_url
    try:
        found = asyncio.run(_read_transcript(database_url, args.call_sid, args.format))
    except SQLAlchemyError as exc:
        return _unreadable(exc)
    if found is None:
        sys.stderr.write(f"no call {args.call_sid}\n")
        return 1
    call, transcript = found
    if call.status == CallStatus.NOT_STREAMED:
        sys.stderr.write(not_streamed_note(call))
    sys.stdout.write(transcript)
    return 0


def not_streamed_note(call: CallRecord) -> str:
    """Why a call has no transcript at all, and what to check: its `not_streamed` outcome."""
    reason, fix = call.summary.get("reason", ""), call.summary.get("fix", "")
    return f"call {call.call_sid} was not streamed ({call.ended_by}): {reason}\nto check: {fix}\n"


def _unreadable(exc: SQLAlchemyError) -> int:
    # The driver's own words (no such table, connection refused), never the URL: it may carry a password.
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    sys.stderr.write(
        f"cannot read the database: {reason}\n(is DATABASE_URL right, and `python -m service db upgrade` run?)\n"
    )
    return 1


async def _read_calls(database_url: str, number: str | None, active: bool, limit: int) -> list[CallRecord]:
    # Pages of the API's size until `limit`, so --limit may ask for more than one API page holds.
    engine = create_engine(database_url)
    calls: list[CallRecord] = []
    cursor: str | None = None
    try:
        while len(calls) < limit:
            page = await queries.list_calls(
                engine, limit=min(limit - len(calls), queries.MAX_LIMIT), cursor=cursor, number=number,
                active=True if active else None,
            )  # fmt: skip
            calls += page.calls
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    finally:
        await engine.dispose()
    return calls


async def _read_transcript(database_url: str, call_sid: str, fmt: captions.Format) -> tuple[CallRecord, str] | None:
    engine = create_engine(database_url)
    try:
        call = await queries.get_call(engine, call_sid)
        if call is None:
            return None
        return call, captions.render(await queries.get_utterances(engine, call_sid), fmt)
    finally:
        await engine.dispose()


def calls_table(calls: Sequence[CallRecord]) -> str:
    """The calls as an aligned table, newest first; "no calls" when there are none."""
    if not calls:
        return "no calls"
    header = ("CALL", "STARTED (UTC)", "DURATION", "FROM", "TO", "STATUS", "ENDED BY")
    rows = [
        (
            call.call_sid, call.started_at.strftime("%Y-%m-%d %H:%M:%S"), _duration(call), call.from_number or "-",
            call.to_number or "-", call.status, call.ended_by or "-",
        )
        for call in calls
    ]  # fmt: skip
    return table(header, rows)


def _duration(call: CallRecord) -> str:
    if call.ended_at is None:
        return "-"
    seconds = round((call.ended_at - call.started_at) / datetime.timedelta(seconds=1))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _positive(value: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more, not {value!r}")
    return int(value)
