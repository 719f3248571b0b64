"""Wiring layer: what a person who just started callscribe still has to set, and the line that sets it.

`service.next_steps` is logged once at start-up when a setting is unset: a WARNING while a local call cannot be
transcribed (TWILIO_AUTH_TOKEN or DEEPGRAM_API_KEY missing), an INFO that says a local call is ready when only
the optional ones are (API_TOKEN, PUBLIC_URL), and nothing when all are set. It names settings and placeholders
only: never a value, so never a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import Settings

# (setting, the .env line to add, what its absence means). Placeholders only: the real values are the user's.
_TWILIO = (
    "TWILIO_AUTH_TOKEN",
    "TWILIO_AUTH_TOKEN=<your Twilio Auth Token>",
    "without it every call is refused 403; for local simulation any value works, `make demo` signs with it too",
)
_DEEPGRAM = (
    "DEEPGRAM_API_KEY",
    "DEEPGRAM_API_KEY=<your Deepgram API key>",
    "without it calls are not transcribed live: their audio waits in the spool",
)
_API = (
    "API_TOKEN",
    "API_TOKEN=<a long random string>",
    "without it /api answers 503, and `make demo` reads transcripts from the database itself",
)
_PUBLIC = (
    "PUBLIC_URL",
    "PUBLIC_URL=https://<the host Twilio reaches you at>",
    "not needed locally; for real Twilio calls through a tunnel or proxy, the URL Twilio signs",
)


@dataclass(frozen=True, slots=True)
class NextSteps:
    """The unset settings' names, and the block of text that says what to do, one line per item; `ready` when
    none of them is needed for a local call (only API_TOKEN or PUBLIC_URL is unset)."""

    missing: list[str]
    lines: list[str]
    ready: bool


def next_steps(settings: Settings, *, twilio_usable: bool, deepgram_configured: bool) -> NextSteps | None:
    """What to add to `.env` and run next; None when every setting it knows is set."""
    absent = [
        item
        for item, missing in (
            (_TWILIO, not twilio_usable),
            (_DEEPGRAM, not deepgram_configured),
            (_API, settings.api_token is None),
            (_PUBLIC, settings.public_url is None),
        )
        if missing
    ]
    if not absent:
        return None
    ready = twilio_usable and deepgram_configured  # all a local call needs to be transcribed
    if ready:
        lines = [
            "callscribe is serving, and nothing a local call needs is missing. "
            "Optional, when you want them (add to .env, then restart: make run):"
        ]
    else:
        lines = ["callscribe is serving, but some settings are missing. Add to .env (then restart: make run):"]
    for _name, env_line, meaning in absent:
        lines += [f"  {env_line}", f"      ({meaning})"]
    lines.append(
        f"{'Now' if ready else 'Then'}: make demo (one simulated call, its transcript printed), or make simulate."
    )
    return NextSteps(missing=[name for name, _line, _meaning in absent], lines=lines, ready=ready)
