"""Command line: `python -m service demo`, one simulated call to a running callscribe and its transcript printed.

The first thing to run after `make run`: it places `hello.wav` the way Twilio would (signed with this
checkout's TWILIO_AUTH_TOKEN), waits for the call to be stored, and prints its transcript from the API (with
API_TOKEN) or straight from the database. When it cannot, it says which setting to fix. Exit 0 only when a
transcript was shown. When DEEPGRAM_URL is the Deepgram stand-in (`python -m service standin`, `make try`),
the transcript is labelled as its placeholder words, never as speech recognition. httpx, websockets and the
database are imported when it runs, not when the CLI loads.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service import mulaw
from service.cli.simulate import configured_token
from service.settings import Settings, load_settings, masked_url, rest_base
from service.simulator.audio import wav_to_mulaw
from service.simulator.messages import CallSpec, SimulatorError
from service.simulator.report import failure_reason

SAMPLE = Path(__file__).resolve().parent.parent / "simulator" / "samples" / "hello.wav"
POLL_S = 0.2

TWILIO_ADVICE = (
    "set TWILIO_AUTH_TOKEN to the same value for the service and for `make demo` (one line in .env, e.g. "
    "TWILIO_AUTH_TOKEN=<your Twilio Auth Token>; for local simulation any value works), then restart `make run`"
)
DEEPGRAM_ADVICE = (
    "the service has no DEEPGRAM_API_KEY, so calls go to the spool instead of live transcription: add "
    "DEEPGRAM_API_KEY=<your Deepgram API key> to .env and restart `make run`"
)


class DemoFailure(Exception):
    """What went wrong, said as what to do about it."""


@dataclass(frozen=True, slots=True)
class StoredCall:
    ended: bool
    spooled_s: float
    text: str


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("demo", help="one simulated call to the running service, and its transcript")
    parser.add_argument("--url", default="http://localhost:5001", help="the service (default http://localhost:5001)")
    parser.add_argument("--speed", type=float, default=1.0, help="1 = real time (default), 0 = no pacing")
    parser.add_argument("--wait-s", type=float, default=30.0, help="how long to wait for the transcript (default 30)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0: the transcript was printed; 1: it could not be, and stderr says what to fix."""
    settings = load_settings()
    try:
        text, standin = asyncio.run(_demo(args, settings))
    except DemoFailure as exc:
        sys.stderr.write(f"demo: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("demo: interrupted\n")
        return 130
    label = "transcript" if standin is None else f"transcript ({standin})"
    sys.stdout.write(f"{label}:\n{text.rstrip()}\n")
    return 0


async def _demo(args: argparse.Namespace, settings: Settings) -> tuple[str, str | None]:
    """The call's transcript, and what to say of it when the Deepgram stand-in made it (else None)."""
    # Imported here: `python -m service`'s other commands (`db upgrade` above all) load no HTTP client.
    import httpx  # noqa: PLC0415

    from service.simulator.client import simulate_call  # noqa: PLC0415

    url = args.url.rstrip("/")
    async with httpx.AsyncClient(timeout=10.0) as client:
        await _check_ready(client, url)
        token = configured_token()
        if token is None:
            raise DemoFailure(f"no TWILIO_AUTH_TOKEN here to sign the call with: {TWILIO_ADVICE}")
        spec = CallSpec(inbound=wav_to_mulaw(SAMPLE.read_bytes()), speed=args.speed)
        sys.stdout.write(
            f"calling {url} with {SAMPLE.name} ({len(spec.inbound) / mulaw.BYTES_PER_SECOND:.1f} s) "
            f"as call {spec.call_sid}\n"
        )
        sys.stdout.flush()  # before any advice on stderr, so the two read in order
        try:
            result = await simulate_call(url, spec, auth_token=token)
        except SimulatorError as exc:
            raise DemoFailure(f"the call could not be placed ({exc}): is callscribe running? `make run`") from exc
        if result.voice_status == 403 or result.upgrade_status == 403:
            raise DemoFailure(f"the service refused the call's signature (HTTP 403): {TWILIO_ADVICE}")
        failure = failure_reason(result)
        if failure is not None:
            raise DemoFailure(f"the call failed: {failure}")
        stored = await _wait_for_call(client, url, settings, spec.call_sid, args.wait_s)
        standin = await standin_note(settings)
    if stored.text.strip():
        return stored.text, standin
    if stored.spooled_s > 0:
        raise DemoFailure(f"the call's audio went to the spool, not to live transcription: {DEEPGRAM_ADVICE}")
    raise DemoFailure("the call ended with an empty transcript (was the audio silent? see the service's log)")


async def standin_note(settings: Settings) -> str | None:
    """When the service's DEEPGRAM_URL answers as the Deepgram stand-in, what a transcript made by it is: placeholder
    words, not speech recognition (`deepgram/keys.py`). None for any other Deepgram."""
    from service.deepgram.keys import DEEPGRAM_CLOUD  # noqa: PLC0415
    from service.deepgram.keys import standin_note as ask  # noqa: PLC0415

    base = rest_base(settings.deepgram_url)
    if base == DEEPGRAM_CLOUD:
        return None  # Deepgram itself: no need to ask
    note = await ask(base)
    return None if note is None else f"{note}, by the Deepgram stand-in at {masked_url(base)}"


async def _check_ready(client: Any, url: str) -> None:
    """/readyz before the call: a service that is not running or not configured is said so plainly."""
    import httpx  # noqa: PLC0415

    try:
        answer = await client.get(f"{url}/readyz")
    except httpx.TransportError as exc:
        raise DemoFailure(
            f"callscribe is not running at {url}: start it with `make run` (in another terminal)"
        ) from exc
    checks = (
        answer.json().get("checks", {}) if answer.headers.get("content-type", "").startswith("application/json") else {}
    )
    if checks.get("twilio_auth_token") == "not set":
        raise DemoFailure(f"the service has no TWILIO_AUTH_TOKEN, so it refuses every call: {TWILIO_ADVICE}")
    if checks.get("deepgram_api_key") == "not set":
        raise DemoFailure(DEEPGRAM_ADVICE)
    database = checks.get("database", "ok")
    if database != "ok":
        raise DemoFailure(f"the service's database is not usable: {database}")


async def _wait_for_call(client: Any, url: str, settings: Settings, call_sid: str, wait_s: float) -> StoredCall:
    """The call once the service has stored its end, from the API with API_TOKEN, else from the database."""
    deadline = time.monotonic() + wait_s
    while True:
        if settings.api_token is not None:
            stored = await _from_api(client, url, settings.api_token.get_secret_value(), call_sid)
        else:
            stored = await _from_database(settings.database_url, call_sid)
        if stored is not None and stored.ended:
            return stored
        if time.monotonic() > deadline:
            raise DemoFailure(
                f"call {call_sid} was not stored as ended within {wait_s:g} s: see the service's log "
                "(store.unavailable means the database could not be written)"
            )
        await asyncio.sleep(POLL_S)  # the service writes the call's end a moment after the stream closes


async def _from_api(client: Any, url: str, api_token: str, call_sid: str) -> StoredCall | None:
    headers = {"Authorization": f"Bearer {api_token}"}
    call = await client.get(f"{url}/api/calls/{call_sid}", headers=headers)
    if call.status_code == 404:
        return None
    if call.status_code in {401, 403}:
        raise DemoFailure("the API refused API_TOKEN: set API_TOKEN the same for the service and `make demo`")
    if call.status_code != 200:
        raise DemoFailure(f"GET /api/calls/{call_sid} answered HTTP {call.status_code}")
    record = call.json()
    if record["status"] == "active":
        return StoredCall(ended=False, spooled_s=0.0, text="")
    text = await client.get(f"{url}/api/calls/{call_sid}/transcript", params={"format": "text"}, headers=headers)
    return StoredCall(ended=True, spooled_s=_spooled_s(record["summary"]), text=text.text)


async def _from_database(database_url: str, call_sid: str) -> StoredCall | None:
    from service import captions  # noqa: PLC0415
    from service.storage import queries  # noqa: PLC0415
    from service.storage.schema import create_engine  # noqa: PLC0415
    from service.storage.statuses import CallStatus  # noqa: PLC0415

    engine = create_engine(database_url)
    try:
        call = await queries.get_call(engine, call_sid)
        if call is None or call.status == CallStatus.ACTIVE:
            return None if call is None else StoredCall(ended=False, spooled_s=0.0, text="")
        text = captions.render(await queries.get_utterances(engine, call_sid), "text")
    except Exception as exc:  # an unmigrated or unreachable database: its type, never the URL
        raise DemoFailure(
            f"could not read the database ({type(exc).__name__}); set API_TOKEN (the same for both) to read "
            "through the API instead"
        ) from exc
    finally:
        await engine.dispose()
    return StoredCall(ended=True, spooled_s=_spooled_s(call.summary), text=text)


def _spooled_s(summary: dict[str, Any]) -> float:
    value = summary.get("audio_s_spooled", 0.0)
    return float(value) if isinstance(value, int | float) else 0.0
