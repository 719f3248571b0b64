"""Command line: `python -m service doctor [--number +1...] [--json]`, what stands between this set-up and a call.

It prints every setting and what it resolved to (secrets only as `set` or `unset`, a URL through `masked_url`:
its user and password, query values and fragment as `***`),
then the checks of `checks.py`, each OK, WARN or FAIL with why and the fix, and the exact webhook URL to set on
the number. It exits 0 when nothing FAILs. A bad setting is itself the first FAIL: the rest cannot be checked.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, ValidationError

from service.settings import Settings, describe_error, masked_url
from service.settings_docs import setting_docs

if TYPE_CHECKING:
    from service.cli.checks import Check

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def add_commands(commands: Any) -> None:
    """Register `doctor` on the `python -m service` sub-command parser."""
    parser = commands.add_parser("doctor", help="check the settings, Deepgram, the database and the Twilio number")
    parser.add_argument(
        "--number", type=phone_number, default=None, help="the Twilio number (E.164) whose voice webhook to check"
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(handler=doctor)


def doctor(args: argparse.Namespace) -> int:
    report = examine(args.number)
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else render(report))
    return 0 if report["ok"] else 1


def examine(number: str | None) -> dict[str, Any]:
    """The report: the settings as resolved, every check, the webhook to set, and whether nothing failed."""
    from service.cli import checks  # noqa: PLC0415 - loads httpx, twilio and the database only when run

    try:
        settings = Settings()
    except ValidationError as exc:
        bad = checks.Check("settings", checks.Status.FAIL, describe_error(exc), "fix the settings named above")
        return _report({}, [bad], webhook=None)
    results = [
        checks.check_deepgram(settings),
        checks.check_deepgram_fallback(settings),
        checks.check_database(settings),
        checks.check_signatures(settings),
        checks.check_public_url(settings),
        checks.check_number(settings, number),
        checks.check_handover_room(settings),
        checks.check_deepgram_retention(settings),
    ]
    webhook = checks.webhook_url(settings)
    return _report(resolved_settings(settings), results, webhook=None if webhook is None else masked_url(webhook))


def resolved_settings(settings: Settings) -> dict[str, dict[str, str]]:
    """Each setting's value as text (secrets `set`/`unset`) and whether it is the default or was set."""
    resolved = {}
    for doc in setting_docs():
        name = doc.variable.lower()
        source = "set" if name in settings.model_fields_set else "default"
        resolved[doc.variable] = {"value": _shown(getattr(settings, name)), "source": source}
    return resolved


def render(report: dict[str, Any]) -> str:
    """The report as text a person reads top to bottom."""
    lines = ["Settings"]
    width = max((len(variable) for variable in report["settings"]), default=0)
    for variable, resolved in report["settings"].items():
        note = "" if resolved["source"] == "set" else "  (default)"
        lines.append(f"  {variable.ljust(width)}  {resolved['value']}{note}")
    lines += ["", "Checks"]
    for check in report["checks"]:
        first, *more = check["reason"].splitlines()
        lines.append(f"  {check['status']:<4}  {check['name']:<14}{first}")
        lines += [f"{'':22}{line}" for line in more]
        if check["fix"] and check["status"] != "OK":
            lines.append(f"{'':22}fix: {check['fix']}")
    webhook = report["webhook"]
    lines.append("")
    if webhook["url"]:
        lines.append(
            f"Twilio: set the number's 'A call comes in' to Webhook {webhook['url']}, HTTP {webhook['method']}"
        )
    else:
        lines.append("Twilio: set the number's 'A call comes in' to Webhook https://<PUBLIC_URL host>/voice, HTTP POST")
    counts = {status: sum(check["status"] == status for check in report["checks"]) for status in ("FAIL", "WARN")}
    verdict = "ready" if report["ok"] else "not ready"
    lines.append(f"Result: {verdict} ({counts['FAIL']} FAIL, {counts['WARN']} WARN)")
    return "\n".join(lines) + "\n"


def _report(settings: dict[str, dict[str, str]], results: list[Check], *, webhook: str | None) -> dict[str, Any]:
    return {
        "settings": settings,
        "checks": [
            {"name": check.name, "status": str(check.status), "reason": check.reason, "fix": check.fix}
            for check in results
        ],
        "webhook": {"url": webhook, "method": "POST"},
        "ok": all(check.status != "FAIL" for check in results),
    }


def _shown(value: object) -> str:
    if isinstance(value, SecretStr):
        return "set"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = ",".join(str(item) for item in value) if isinstance(value, tuple) else str(value)
    return masked_url(text) if text else "(empty)"


def phone_number(value: str) -> str:
    """An argparse type: an E.164 number, as Twilio's API and console spell it."""
    if not _E164.match(value):
        raise argparse.ArgumentTypeError("must be an E.164 number such as +14155550100")
    return value
