"""What `python -m service doctor` checks: each check a plain function of the settings, returning a `Check`.

Each asks one thing of the world (Deepgram, the database, Twilio) with a short timeout, or looks at the
settings alone, and says OK, WARN or FAIL with one line of why and one line of what to do. None of them puts a
secret or the database's URL into its answer: errors are reported by their type and the services' own codes, and
every URL they name goes through `masked_url` (a password in DEEPGRAM_URL or PUBLIC_URL, a token in a query).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import urllib.parse
from dataclasses import dataclass
from typing import Final

from service.deepgram.keys import ask_about_key
from service.settings import Settings, masked_url, rest_base
from service.storage import migrate
from service.twilio.credentials import rest_credentials
from service.twilio.numbers import NumberLookupError, NumberVoice, find_number
from service.twilio.twiml import FORKS_PER_CALL, forks

VOICE_PATH: Final = "/voice"  # the route that answers Twilio's voice webhook (service/web/voice.py)
VOICE_METHOD: Final = "POST"
TIMEOUT_S: Final = 5.0


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"  # not checked: what it needs was not given


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    reason: str
    fix: str = ""


def webhook_url(settings: Settings) -> str | None:
    """The exact URL to set as the number's voice webhook (HTTP POST); None without PUBLIC_URL."""
    return f"{settings.public_url}{VOICE_PATH}" if settings.public_url else None


def check_deepgram(settings: Settings, *, timeout_s: float = TIMEOUT_S) -> Check:
    """Deepgram reachable, and the key accepted: one authenticated request that costs nothing."""
    if settings.deepgram_api_key is None:
        return Check(
            "deepgram",
            Status.FAIL,
            "DEEPGRAM_API_KEY is unset: no call is transcribed (audio waits in the spool)",
            "create a key at https://console.deepgram.com and set DEEPGRAM_API_KEY",
        )
    key = settings.deepgram_api_key.get_secret_value()
    answer = ask_about_key(settings.deepgram_rest_url, key, timeout_s=timeout_s)
    base = masked_url(settings.deepgram_rest_url)  # what the answer names: DEEPGRAM_URL may hold a password
    if answer.accepted:
        return Check("deepgram", Status.OK, f"{base} accepted the key")
    if answer.refused:
        return Check(
            "deepgram",
            Status.FAIL,
            f"{base} refused the key (HTTP {answer.status})",
            "copy a valid key from https://console.deepgram.com into DEEPGRAM_API_KEY",
        )
    if answer.status == 0:
        return Check(
            "deepgram",
            Status.FAIL,
            f"Deepgram is unreachable at {base} ({answer.failure}): offline, or DEEPGRAM_URL is wrong",
            "check this machine's network (or proxy) and DEEPGRAM_URL",
        )
    return Check(
        "deepgram",
        Status.WARN,
        f"{base} answered HTTP {answer.status} to the key check",
        "see https://status.deepgram.com; check DEEPGRAM_URL",
    )


def check_deepgram_fallback(settings: Settings, *, timeout_s: float = TIMEOUT_S) -> Check:
    """The second Deepgram (DEEPGRAM_FALLBACK_URL) reachable and taking its key, as the primary is checked: a
    fallback that refuses is found out here, not in the middle of an outage."""
    url, key = settings.deepgram_fallback_url, settings.deepgram_fallback_key
    if url is None:
        return Check(
            "deepgram_fallback", Status.SKIP, "no DEEPGRAM_FALLBACK_URL: when Deepgram is down, calls reconnect, "
            "replay and then spool", "set DEEPGRAM_FALLBACK_URL (e.g. wss://api.eu.deepgram.com) to move them instead",
        )  # fmt: skip
    if key is None:
        return Check("deepgram_fallback", Status.SKIP, "no key for the fallback (DEEPGRAM_API_KEY is unset too)")
    base = masked_url(rest_base(url))
    answer = ask_about_key(rest_base(url), key.get_secret_value(), timeout_s=timeout_s)
    if answer.accepted:
        return Check("deepgram_fallback", Status.OK, f"{base} accepted the fallback's key")
    # A WARN, not a FAIL: calls are transcribed without it; they just cannot move there when the primary fails.
    if answer.refused:
        why = f"{base} refused the fallback's key (HTTP {answer.status})"
        fix = "set DEEPGRAM_FALLBACK_API_KEY to a key of that Deepgram's project"
    elif answer.status == 0:
        why = f"the fallback Deepgram is unreachable at {base} ({answer.failure})"
        fix = "check DEEPGRAM_FALLBACK_URL"
    else:
        why = f"{base} answered HTTP {answer.status} to the fallback's key check"
        fix = "check DEEPGRAM_FALLBACK_URL"
    return Check("deepgram_fallback", Status.WARN, f"{why}: calls cannot move there when the primary fails", fix)


def check_database(settings: Settings, *, timeout_s: float = TIMEOUT_S) -> Check:
    """The database reachable, and at the newest migration."""
    problem = migrate.sqlite_open_problem(settings.database_url)
    if problem is not None:
        return Check(
            "database",
            Status.FAIL,
            f"cannot reach the database ({problem})",
            "point DATABASE_URL at a file in an existing directory (or create it), then run "
            "`python -m service db upgrade`",
        )
    try:
        revision = asyncio.run(asyncio.wait_for(migrate.current_revision(settings.database_url), timeout_s))
    except Exception as exc:  # noqa: BLE001 - any failure to reach it is the answer; its type, never the URL
        return Check(
            "database",
            Status.FAIL,
            f"cannot reach the database ({type(exc).__name__})",
            "check DATABASE_URL and that the database server is up",
        )
    newest = migrate.head()
    if revision == newest:
        return Check("database", Status.OK, f"reachable, schema at {newest} (newest)")
    return Check(
        "database",
        Status.FAIL,
        f"schema at {revision or 'nothing (empty database)'}, newest is {newest}",
        "run `python -m service db upgrade`",
    )


def check_signatures(settings: Settings) -> Check:
    """Whether /voice can check Twilio's signature: without the auth token, every request is refused."""
    if settings.twilio_auth_token is not None:
        return Check("signatures", Status.OK, "TWILIO_AUTH_TOKEN is set: /voice and /media check Twilio's signature")
    if settings.callscribe_insecure_dev:
        return Check(
            "signatures",
            Status.WARN,
            "CALLSCRIBE_INSECURE_DEV without TWILIO_AUTH_TOKEN: signatures are not checked",
            "set TWILIO_AUTH_TOKEN (Twilio console, Account info) before taking real calls",
        )
    return Check(
        "signatures",
        Status.FAIL,
        "TWILIO_AUTH_TOKEN is unset: /voice refuses every call with 403",
        "set TWILIO_AUTH_TOKEN to the auth token of the account that owns the number",
    )


def check_public_url(settings: Settings) -> Check:
    """PUBLIC_URL set to an https base Twilio can reach (the settings already refuse a path or a query)."""
    if settings.public_url is None:
        return Check(
            "public_url",
            Status.WARN,
            "PUBLIC_URL is unset: the webhook URL is taken from each request, trusting one proxy hop",
            "set PUBLIC_URL to the https:// base URL Twilio reaches this service at",
        )
    parts = urllib.parse.urlsplit(settings.public_url)
    shown = masked_url(settings.public_url)
    if _is_local(parts.hostname or ""):
        return Check(
            "public_url",
            Status.FAIL,
            f"PUBLIC_URL {shown} is not reachable from Twilio's side",
            "expose the service (a tunnel such as ngrok, or a deployment) and set PUBLIC_URL to its https:// URL",
        )
    if parts.scheme != "https":
        return Check(
            "public_url",
            Status.WARN,
            f"PUBLIC_URL {shown} is not https: the webhook travels, and is signed, in clear text",
            "serve it behind TLS and set PUBLIC_URL to its https:// URL",
        )
    return Check("public_url", Status.OK, f"webhook URL {masked_url(webhook_url(settings) or '')} ({VOICE_METHOD})")


def check_handover_room(settings: Settings) -> Check:
    """With hand-over on, how many of Twilio's forks per call are left for others while a call is handed over."""
    if settings.handover == "off" or rest_credentials(settings) is None:
        return Check(
            "handover_room", Status.SKIP, "hand-over is off: a call keeps one stream, drained at SIGTERM",
            "set TWILIO_ACCOUNT_SID with REST credentials (and leave HANDOVER unset or on) to hand calls over",
        )  # fmt: skip
    track = settings.stream_track
    own = forks(track)
    spare = FORKS_PER_CALL - 2 * own
    first = (
        f"a call answered by /voice has one {track} stream ({own} of Twilio's {FORKS_PER_CALL} forks per call), "
        f"and a hand-over opens a second one like it before closing the first ({2 * own} at once)"
    )
    if spare == 0:
        return Check(
            "handover_room",
            Status.OK,
            f"{first}\nso the call has no room for any other fork (another <Stream>, a <Siprec>): with one, Twilio "
            "refuses the second stream and the call is drained instead of handed over\nkeep other forks off these "
            "calls, or stream one track (STREAM_TRACK=inbound_track) to leave 2 for them",
        )
    return Check(
        "handover_room",
        Status.OK,
        f"{first}\nso other forks of the call (another <Stream>, a <Siprec>, which takes 2) may use {spare} at most: "
        "past that, Twilio refuses the second stream and the call is drained instead of handed over",
    )


def check_deepgram_retention(settings: Settings) -> Check:
    """What Deepgram keeps of the calls' audio and transcripts, and where (docs/compliance.md)."""
    region = (
        f"requests go to {masked_url(settings.deepgram_url)}: to keep them in one region, point DEEPGRAM_URL at "
        "Deepgram's regional endpoint for it"
    )
    options = dict(settings.deepgram_extra_options)
    opted_out = options.get("mip_opt_out", "true" if settings.deepgram_mip_opt_out else "false") == "true"
    if opted_out:
        return Check(
            "deepgram_retention", Status.OK,
            f"mip_opt_out=true: Deepgram keeps audio and transcripts only while it processes each request\n{region}",
        )  # fmt: skip
    return Check(
        "deepgram_retention", Status.WARN,
        "Deepgram keeps the calls' audio and transcripts for its Model Improvement Program (mip_opt_out is off), "
        f"and may process them outside the region for it\n{region}",
        "set DEEPGRAM_MIP_OPT_OUT=true (the default), unless your Deepgram agreement wants the program",
    )  # fmt: skip


def check_number(settings: Settings, number: str | None, *, timeout_s: float = TIMEOUT_S) -> Check:
    """The number's voice configuration, from Twilio's REST API: does a call to it reach PUBLIC_URL/voice?"""
    if number is None:
        return Check(
            "twilio_number", Status.SKIP, "no number given", "pass --number +1... to check its voice configuration"
        )
    credentials = rest_credentials(settings)
    if credentials is None:
        return Check(
            "twilio_number",
            Status.FAIL,
            f"no credentials to ask Twilio about {number}",
            "set TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET)",
        )
    try:
        found = find_number(credentials, number, api_url=settings.twilio_api_url, timeout_s=timeout_s)
    except NumberLookupError as exc:
        if exc.status in {401, 403}:
            return Check(
                "twilio_number",
                Status.FAIL,
                f"{exc} with the {credentials.kind}",
                "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or the API key pair) in the Twilio console",
            )
        return Check("twilio_number", Status.FAIL, str(exc), "check this machine's network and TWILIO_API_URL")
    if found is None:
        return Check(
            "twilio_number",
            Status.FAIL,
            f"account {credentials.account_sid} has no number {number}",
            "check the number (E.164, such as +14155550100) and that TWILIO_ACCOUNT_SID is the account that owns it",
        )
    return _voice_configuration(found, webhook_url(settings))


def _voice_configuration(found: NumberVoice, expected: str | None) -> Check:
    # Compared as they are, shown masked: a voice URL may carry basic-auth credentials or a token in its query.
    target = masked_url(expected) if expected else f"https://<your host>{VOICE_PATH}"
    now = masked_url(found.voice_url) or "unset"
    elsewhere = _routed_elsewhere(found, target)
    if elsewhere is not None:
        return elsewhere
    fix = f"set the number's 'A call comes in' webhook to {target}, HTTP {VOICE_METHOD}"
    if expected is None:
        if urllib.parse.urlsplit(found.voice_url).path != VOICE_PATH:
            return Check("twilio_number", Status.WARN, f"voice URL is {now}", fix)
        return Check(
            "twilio_number",
            Status.OK,
            f"voice URL is {now} ({found.voice_method}); set PUBLIC_URL to compare it exactly",
        )
    if found.voice_url != expected:
        return Check("twilio_number", Status.WARN, f"voice URL is {now}, not {target}", fix)
    if found.voice_method != VOICE_METHOD:
        return Check("twilio_number", Status.WARN, f"voice URL is {target} with HTTP {found.voice_method}", fix)
    return Check("twilio_number", Status.OK, f"{found.phone_number} calls {target} ({VOICE_METHOD})")


def _routed_elsewhere(found: NumberVoice, target: str) -> Check | None:
    """A TwiML App or a SIP trunk takes the number's calls: Twilio then ignores its own voice URL."""
    if found.voice_application_sid:
        return Check(
            "twilio_number",
            Status.WARN,
            f"{found.phone_number} sends calls to TwiML App {found.voice_application_sid}: its voice URL "
            f"({masked_url(found.voice_url) or 'none'}) is ignored",
            f"set the App's Voice URL to {target} ({VOICE_METHOD}), or configure the number with a webhook instead",
        )
    if found.trunk_sid:
        return Check(
            "twilio_number",
            Status.WARN,
            f"{found.phone_number} belongs to SIP trunk {found.trunk_sid}: its voice URL is ignored",
            f"take the number off the trunk and set its voice webhook to {target} ({VOICE_METHOD})",
        )
    return None


def _is_local(host: str) -> bool:
    if host == "localhost" or host.endswith((".localhost", ".local")):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified
