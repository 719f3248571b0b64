"""Command line: `python -m service twilio configure | restore --number +1...`, the number's voice webhook set to
`PUBLIC_URL/voice` (HTTP POST), and put back as it was.

`configure` saves the number's voice URL and method to a backup file before changing them, and never overwrites
a backup of the same number (a second `configure` would otherwise save callscribe's own URL as the original);
`restore` sets them back from the file and removes it. A number whose calls go to a TwiML App or a SIP trunk is
left alone: its voice URL is not what answers its calls, so changing it would fix nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.settings import load_settings

if TYPE_CHECKING:
    from service.twilio.numbers import NumberVoice, RestCredentials

DEFAULT_BACKUP = Path("callscribe-twilio-number.json")


def add_commands(commands: Any) -> None:
    """Register `twilio configure` and `twilio restore` on the `python -m service` sub-command parser."""
    from service.cli.doctor import phone_number  # noqa: PLC0415 - one definition of an E.164 argument

    parser = commands.add_parser("twilio", help="point the Twilio number's voice webhook here, or put it back")
    actions = parser.add_subparsers(dest="twilio_command", required=True)
    configure_parser = actions.add_parser("configure", help="set the number's voice webhook to PUBLIC_URL/voice")
    configure_parser.add_argument("--number", type=phone_number, required=True, help="the Twilio number (E.164)")
    restore_parser = actions.add_parser("restore", help="put back the voice webhook `configure` saved")
    for action in (configure_parser, restore_parser):
        action.add_argument("--backup", type=Path, default=DEFAULT_BACKUP, help=f"default: {DEFAULT_BACKUP}")
    configure_parser.set_defaults(handler=configure)
    restore_parser.set_defaults(handler=restore)


def configure(args: argparse.Namespace) -> int:
    from service.cli.checks import rest_credentials, webhook_url  # noqa: PLC0415 - loads twilio only when run
    from service.twilio.numbers import NumberLookupError, find_number  # noqa: PLC0415

    settings = load_settings()
    target, credentials = webhook_url(settings), rest_credentials(settings)
    if target is None or credentials is None:
        return _usage("set PUBLIC_URL, and TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN (or the API key pair)")
    try:
        number = find_number(credentials, args.number, api_url=settings.twilio_api_url)
        if number is None:
            return _refuse(f"account {credentials.account_sid} has no number {args.number}")
        return _point_at(target, number, credentials, api_url=settings.twilio_api_url, backup=args.backup)
    except NumberLookupError as exc:
        return _refuse(str(exc))


def _point_at(target: str, number: NumberVoice, credentials: RestCredentials, *, api_url: str, backup: Path) -> int:
    from service.cli.checks import VOICE_METHOD  # noqa: PLC0415 - loads twilio only when run
    from service.twilio.numbers import set_voice_url  # noqa: PLC0415

    if number.voice_application_sid or number.trunk_sid:
        app = number.voice_application_sid
        taker = f"TwiML App {app}" if app else f"SIP trunk {number.trunk_sid}"
        return _refuse(f"{number.phone_number}'s calls go to {taker}, not to its voice URL: nothing changed")
    if (number.voice_url, number.voice_method) == (target, VOICE_METHOD):
        sys.stdout.write(f"{number.phone_number} already calls {target} ({VOICE_METHOD}): nothing changed\n")
        return 0
    saved = _read_backup(backup)
    if saved is not None and saved["sid"] != number.sid:
        return _refuse(f"{backup} holds another number's webhook: restore it first, or pass --backup")
    if saved is None:
        _write_backup(backup, credentials.account_sid, number)
    set_voice_url(credentials, number, target, VOICE_METHOD, api_url=api_url)
    sys.stdout.write(
        f"{number.phone_number} now calls {target} ({VOICE_METHOD}); it called {number.voice_url or 'nothing'} "
        f"({number.voice_method}), saved in {backup}: `python -m service twilio restore` puts it back\n"
    )
    return 0


def restore(args: argparse.Namespace) -> int:
    from service.cli.checks import rest_credentials  # noqa: PLC0415 - loads twilio only when run
    from service.twilio.numbers import NumberLookupError, NumberVoice, set_voice_url  # noqa: PLC0415

    settings = load_settings()
    saved = _read_backup(args.backup)
    if saved is None:
        return _refuse(f"nothing to restore: {args.backup} does not exist")
    credentials = rest_credentials(settings)
    if credentials is None or credentials.account_sid != saved["account_sid"]:
        return _usage(f"set TWILIO_ACCOUNT_SID to {saved['account_sid']}, with its auth token or an API key pair")
    number = NumberVoice(
        sid=saved["sid"],
        phone_number=saved["phone_number"],
        voice_url=saved["voice_url"],
        voice_method=saved["voice_method"],
        voice_application_sid="",
        trunk_sid="",
    )
    try:
        set_voice_url(credentials, number, number.voice_url, number.voice_method, api_url=settings.twilio_api_url)
    except NumberLookupError as exc:
        return _refuse(str(exc))
    args.backup.unlink()
    sys.stdout.write(f"{number.phone_number} calls {number.voice_url or 'nothing'} ({number.voice_method}) again\n")
    return 0


def _read_backup(path: Path) -> dict[str, str] | None:
    try:
        saved: dict[str, str] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return saved


def _write_backup(path: Path, account_sid: str, number: NumberVoice) -> None:
    # Written whole, then renamed: a crash leaves the old state or the new file, never half a backup.
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(
        json.dumps(
            {
                "account_sid": account_sid,
                "sid": number.sid,
                "phone_number": number.phone_number,
                "voice_url": number.voice_url,
                "voice_method": number.voice_method,
            },
            indent=2,
        )
        + "\n"
    )
    partial.replace(path)


def _usage(message: str) -> int:
    sys.stderr.write(f"{message}\n")
    return 2


def _refuse(message: str) -> int:
    sys.stderr.write(f"{message}\n")
    return 1
