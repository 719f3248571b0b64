"""Command line: `python -m service twilio configure | restore --number +1...`, the number's voice webhook set to
`PUBLIC_URL/voice` (HTTP POST), and put back as it was.

`configure` first prints what it will change (the number, its voice URL and method now, and what they become);
`--dry-run` stops there. Otherwise it saves the number's webhook in the database (`storage/number_backups.py`:
a `heroku run` dyno's files are gone afterwards) before changing it, and never overwrites a number's backup (a
second `configure` would otherwise save callscribe's own URL as the original). `restore` sets it back from the
database and deletes the backup. A number whose calls go to a TwiML App or a SIP trunk is left alone: its voice
URL is not what answers its calls, so changing it would fix nothing.

The database is made ready as `serve` makes it: a SQLite file is migrated, PostgreSQL must already be (the release
phase's `db upgrade`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from service.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from service.storage.number_backups import SavedWebhook
    from service.twilio.credentials import RestCredentials
    from service.twilio.numbers import NumberVoice

T = TypeVar("T")
NOT_MIGRATED = "database not migrated: run `python -m service db upgrade`"


class DatabaseUnready(Exception):
    """The database cannot hold the backup: unreachable, or not migrated (the message says which, and the fix)."""


def add_commands(commands: Any) -> None:
    """Register `twilio configure` and `twilio restore` on the `python -m service` sub-command parser."""
    from service.cli.doctor import phone_number  # noqa: PLC0415 - one definition of an E.164 argument

    parser = commands.add_parser("twilio", help="point the Twilio number's voice webhook here, or put it back")
    actions = parser.add_subparsers(dest="twilio_command", required=True)
    configure_parser = actions.add_parser("configure", help="set the number's voice webhook to PUBLIC_URL/voice")
    configure_parser.add_argument("--number", type=phone_number, required=True, help="the Twilio number (E.164)")
    configure_parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    restore_parser = actions.add_parser("restore", help="put back the voice webhook `configure` saved")
    restore_parser.add_argument(
        "--number", type=phone_number, default=None, help="the number to put back (needed when several are saved)"
    )
    configure_parser.set_defaults(handler=configure)
    restore_parser.set_defaults(handler=restore)


def configure(args: argparse.Namespace) -> int:
    from service.cli.checks import webhook_url  # noqa: PLC0415 - loads twilio only when run
    from service.twilio.credentials import rest_credentials  # noqa: PLC0415
    from service.twilio.numbers import NumberLookupError, find_number  # noqa: PLC0415

    settings = load_settings()
    target, credentials = webhook_url(settings), rest_credentials(settings)
    if target is None or credentials is None:
        return _usage("set PUBLIC_URL, and TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN (or the API key pair)")
    try:
        if not args.dry_run:
            _in_database(settings, lambda _engine: _nothing())  # ready before anything is asked of Twilio
        number = find_number(credentials, args.number, api_url=settings.twilio_api_url)
        if number is None:
            return _refuse(f"account {credentials.account_sid} has no number {args.number}")
        return _point_at(target, number, credentials, settings=settings, dry_run=args.dry_run)
    except (NumberLookupError, DatabaseUnready) as exc:
        return _refuse(str(exc))


def _point_at(
    target: str, number: NumberVoice, credentials: RestCredentials, *, settings: Settings, dry_run: bool
) -> int:
    from service.cli.checks import VOICE_METHOD  # noqa: PLC0415 - loads twilio only when run
    from service.storage import number_backups  # noqa: PLC0415
    from service.twilio.numbers import set_voice_url  # noqa: PLC0415

    if number.voice_application_sid or number.trunk_sid:
        app = number.voice_application_sid
        taker = f"TwiML App {app}" if app else f"SIP trunk {number.trunk_sid}"
        return _refuse(f"{number.phone_number}'s calls go to {taker}, not to its voice URL: nothing changed")
    if (number.voice_url, number.voice_method) == (target, VOICE_METHOD):
        sys.stdout.write(f"{number.phone_number} already calls {target} ({VOICE_METHOD}): nothing changed\n")
        return 0
    sys.stdout.write(_plan(number, target, VOICE_METHOD))
    if dry_run:
        sys.stdout.write("--dry-run: nothing changed\n")
        return 0
    current = _saved(credentials.account_sid, number)
    kept = _in_database(settings, lambda engine: number_backups.keep(engine, current))
    set_voice_url(credentials, number, target, VOICE_METHOD, api_url=settings.twilio_api_url)
    sys.stdout.write(f"{number.phone_number} now calls {target} ({VOICE_METHOD})\n")
    if (kept.voice_url, kept.voice_method) != (current.voice_url, current.voice_method):
        sys.stdout.write(f"kept the backup saved earlier: {_webhook(kept.voice_url, kept.voice_method)}\n")
    sys.stdout.write(f"`python -m service twilio restore --number {number.phone_number}` puts back the saved one\n")
    return 0


def _plan(number: NumberVoice, target: str, method: str) -> str:
    return (
        f"number        {number.phone_number} ({number.sid})\n"
        f"voice URL now {_webhook(number.voice_url, number.voice_method)}\n"
        f"will become   {_webhook(target, method)}\n"
    )


def restore(args: argparse.Namespace) -> int:
    from service.storage import number_backups  # noqa: PLC0415
    from service.twilio.credentials import rest_credentials  # noqa: PLC0415
    from service.twilio.numbers import NumberLookupError  # noqa: PLC0415 - loads twilio when run

    settings = load_settings()
    credentials = rest_credentials(settings)
    if credentials is None:
        return _usage("set TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN (or the API key pair)")
    account = credentials.account_sid
    try:
        backups = _in_database(settings, lambda engine: number_backups.saved_for(engine, account, args.number))
        if not backups:
            return _refuse(f"nothing to restore: no saved webhook of {args.number or 'any number'} for {account}")
        if len(backups) > 1:
            numbers = ", ".join(backup.phone_number for backup in backups)
            return _usage(f"saved webhooks of {numbers}: pass --number to say which to put back")
        return _put_back(backups[0], credentials, settings=settings)
    except (NumberLookupError, DatabaseUnready) as exc:
        return _refuse(str(exc))


def _put_back(saved: SavedWebhook, credentials: RestCredentials, *, settings: Settings) -> int:
    from service.storage import number_backups  # noqa: PLC0415 - loaded only when run
    from service.twilio.numbers import NumberVoice, set_voice_url  # noqa: PLC0415

    number = NumberVoice(
        sid=saved.number_sid,
        phone_number=saved.phone_number,
        voice_url=saved.voice_url,
        voice_method=saved.voice_method,
        voice_application_sid="",
        trunk_sid="",
    )
    set_voice_url(credentials, number, saved.voice_url, saved.voice_method, api_url=settings.twilio_api_url)
    _in_database(settings, lambda engine: number_backups.forget(engine, saved.number_sid))
    sys.stdout.write(f"{saved.phone_number} calls {_webhook(saved.voice_url, saved.voice_method)} again\n")
    return 0


def _saved(account_sid: str, number: NumberVoice) -> SavedWebhook:
    from service.storage.number_backups import SavedWebhook  # noqa: PLC0415 - loaded only when run

    return SavedWebhook(
        account_sid=account_sid,
        number_sid=number.sid,
        phone_number=number.phone_number,
        voice_url=number.voice_url,
        voice_method=number.voice_method,
    )


def _in_database(settings: Settings, action: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """`action` on the database once it is ready for it (a SQLite file migrated, PostgreSQL checked at head)."""
    return asyncio.run(_on_ready_database(settings.database_url, action))


async def _on_ready_database(url: str, action: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    from service.storage.schema import create_engine  # noqa: PLC0415 - loaded only when run

    if not await _migrated(url):
        raise DatabaseUnready(NOT_MIGRATED)
    engine = create_engine(url)
    try:
        return await action(engine)
    finally:
        await engine.dispose()


async def _migrated(url: str) -> bool:
    """A SQLite file brought to head (True); PostgreSQL asked whether it is there. Unreachable: DatabaseUnready."""
    from service.storage import migrate  # noqa: PLC0415 - loaded only when run

    problem = migrate.sqlite_open_problem(url)
    if problem is not None:
        raise DatabaseUnready(f"cannot reach the database ({problem}): check DATABASE_URL")
    try:
        if migrate.sqlite_file(url) is not None:
            await migrate.upgrade_sqlite(url)
            return True
        return await migrate.is_at_head(url)
    except Exception as exc:  # noqa: BLE001 - any failure to reach it is the answer: its type, never the URL
        raise DatabaseUnready(f"cannot reach the database ({type(exc).__name__}): check DATABASE_URL") from None


async def _nothing() -> None:
    return None


def _webhook(url: str, method: str) -> str:
    return f"{url or '(none)'} ({method})"


def _usage(message: str) -> int:
    sys.stderr.write(f"{message}\n")
    return 2


def _refuse(message: str) -> int:
    sys.stderr.write(f"{message}\n")
    return 1
