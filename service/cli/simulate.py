"""Command line: `python -m service simulate AUDIO.wav`, one call placed the way Twilio places it."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from service.simulator.audio import AudioFormatError, wav_to_mulaw
from service.simulator.messages import CallResult, CallSpec, SimulatorError, new_stream_sid
from service.simulator.report import failure_reason, summarize


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("simulate", help="call a running callscribe the way Twilio does")
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m service simulate`."""
    parser.add_argument("audio", type=Path, help="the caller's audio: a PCM WAV file (any rate, mono or stereo)")
    parser.add_argument("--url", default="http://localhost:5001", help="the service (default http://localhost:5001)")
    parser.add_argument("--outbound", type=Path, help="the other party's audio (a WAV), for both_tracks/outbound_track")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="1 = real time (default), 4 = 4x faster, 0 = no pacing"
    )
    parser.add_argument(
        "--auth-token",
        default=None,
        help="Twilio auth token to sign with (default $TWILIO_AUTH_TOKEN; none: unsigned)",
    )
    parser.add_argument("--from", dest="from_number", default="+15005550006", help="caller number (From)")
    parser.add_argument("--to", dest="to_number", default="+15005550001", help="called number (To)")
    parser.add_argument(
        "--voice-url",
        default=None,
        help="the webhook URL as configured in Twilio, which is signed (default URL/voice)",
    )
    parser.add_argument("--no-stop", action="store_true", help="hang up without a stop message, as when Twilio drops")
    attacks = parser.add_argument_group(
        "attacks", "play what someone holding one captured upgrade signature could try; the service must refuse it"
    )
    attacks.add_argument(
        "--replay-upgrade",
        action="store_true",
        help="skip /voice: open /media with the (call-independent) upgrade signature and a start of our own making",
    )
    attacks.add_argument("--call-sid", help="claim this CallSid (for example a live call's)")
    attacks.add_argument("--stream-sid", help="claim this StreamSid (with --replay-upgrade)")
    attacks.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a <Parameter> of the start message; NAME= (no value) removes it; repeatable",
    )
    attacks.add_argument("--no-start", action="store_true", help="send `connected` only and hold the socket open")
    attacks.add_argument(
        "--hold-s", type=float, default=0.0, help="keep the socket open this long for the server to close it"
    )


def configured_token() -> str | None:
    """TWILIO_AUTH_TOKEN as the service reads it (environment, then .env), so `make simulate` signs like Twilio."""
    token = os.environ.get("TWILIO_AUTH_TOKEN")
    if token:
        return token
    env_file = Path(".env")
    if env_file.is_file():
        value = dotenv_values(env_file).get("TWILIO_AUTH_TOKEN")
        return value or None
    return None


def run(args: argparse.Namespace) -> int:
    """Place one simulated call and print a summary. Exit 0: completed; 1: the call failed; 2: bad input."""
    try:
        spec = _spec_from_args(args)
    except (OSError, AudioFormatError, ValueError) as exc:
        sys.stderr.write(f"simulate: {exc}\n")
        return 2
    token = args.auth_token or configured_token()
    if token is None:
        sys.stderr.write("simulate: no --auth-token and no TWILIO_AUTH_TOKEN: sending no X-Twilio-Signature\n")
    started = time.monotonic()
    try:
        result = asyncio.run(_place_call(args, spec, token))
    except SimulatorError as exc:
        sys.stderr.write(f"simulate: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("simulate: interrupted\n")
        return 130  # the shell's code for SIGINT
    sys.stdout.write(summarize(result, time.monotonic() - started, spec.speed) + "\n")
    if spec.outbound is not None and result.stream_url is not None and "outbound" not in result.sent:
        sys.stderr.write(f"simulate: --outbound not sent: the TwiML asked for {result.track_setting}\n")
    failure = failure_reason(result)
    if failure is not None:
        sys.stderr.write(f"simulate: call failed: {failure}\n")
        return 1
    return 0


async def _place_call(args: argparse.Namespace, spec: CallSpec, token: str | None) -> CallResult:
    # Imported here: httpx and websockets are for placing a call, not for `python -m service`'s other commands.
    from service.simulator.client import replay_stream, simulate_call  # noqa: PLC0415

    if not args.replay_upgrade:
        return await simulate_call(args.url, spec, auth_token=token, voice_url=args.voice_url)
    if token is None:
        raise SimulatorError("--replay-upgrade needs the auth token that signed the captured upgrade")
    stream_sid = args.stream_sid or new_stream_sid()
    return await replay_stream(args.url, spec, auth_token=token, stream_sid=stream_sid, custom_parameters={})


def _spec_from_args(args: argparse.Namespace) -> CallSpec:
    inbound = wav_to_mulaw(Path(args.audio).read_bytes())
    outbound = wav_to_mulaw(Path(args.outbound).read_bytes()) if args.outbound else None
    extra = {"call_sid": args.call_sid} if args.call_sid else {}
    return CallSpec(
        inbound=inbound,
        outbound=outbound,
        from_number=args.from_number,
        to_number=args.to_number,
        speed=args.speed,
        send_stop=not args.no_stop,
        send_start=not args.no_start,
        hold_open_s=args.hold_s,
        parameter_overrides=dict(_parameter(text) for text in args.parameter),
        **extra,
    )


def _parameter(text: str) -> tuple[str, str | None]:
    """`NAME=VALUE` sets a parameter, `NAME=` removes it."""
    name, equals, value = text.partition("=")
    if not name or not equals:
        raise ValueError(f"--parameter {text!r}: expected NAME=VALUE (or NAME= to remove it)")
    return name, value or None
