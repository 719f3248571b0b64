"""A Twilio call simulator: the voice webhook, then a Media Stream, as Twilio sends them.

Layers, top to bottom:
- pure: the webhook form, signatures, reading the TwiML, the URL to connect to, and every stream message
  prepared up front (`build_messages`): sending costs no JSON or base64 work, so benchmarks time the server;
- I/O: `simulate_call` POSTs /voice, opens the WebSocket, paces the prepared messages on an absolute clock;
- CLI: `add_arguments`/`run`, behind `python -m service simulate AUDIO.wav`.

Wire facts (message formats, string counters, signing the `wss://` URL with no params) follow
/work/shared/reference/twilio-media-streams.md §3-4 and https://www.twilio.com/docs/voice/media-streams/websocket-messages.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from dotenv import dotenv_values
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from service.audio import (
    FRAME_BYTES,
    MULAW_SAMPLE_RATE,
    AudioFormatError,
    frames,
    mulaw_silence,
    wav_to_mulaw,
)

DEFAULT_ACCOUNT_SID = "AC" + "5ca1ab1e" * 4
FRAME_S = FRAME_BYTES / MULAW_SAMPLE_RATE  # 0.02: each media message carries 20 ms
WEBHOOK_TIMEOUT_S = 15.0  # how long Twilio waits for a voice webhook before failing the call
OPEN_TIMEOUT_S = 10.0
CLOSE_WAIT_S = 5.0  # after `stop` (or our own close), how long the server gets to close the socket
MAX_INCOMING_BYTES = 64 * 1024  # a <Start> stream is one-way: the server has nothing big to send us

TRACKS_BY_SETTING = {
    "inbound_track": ("inbound",),
    "outbound_track": ("outbound",),
    "both_tracks": ("inbound", "outbound"),
}
DEFAULT_TRACK_SETTING = "inbound_track"  # Twilio's default when <Stream> has no track attribute


class SimulatorError(Exception):
    """The call could not be simulated: the service was unreachable or answered what Twilio would reject."""


class TwimlError(SimulatorError):
    """The /voice answer is not TwiML Twilio could follow (not XML, a bad <Stream>)."""


def new_call_sid() -> str:
    """A fresh CallSid: "CA" and 32 hex digits."""
    return "CA" + secrets.token_hex(16)


def new_stream_sid() -> str:
    """A fresh StreamSid: "MZ" and 32 hex digits."""
    return "MZ" + secrets.token_hex(16)


@dataclass(frozen=True)
class CallSpec:
    """One simulated call: the audio of each side and the webhook's caller details."""

    inbound: bytes  # μ-law 8 kHz audio of the caller
    outbound: bytes | None = None  # μ-law audio of the other party; sent when the TwiML asks for that track
    call_sid: str = field(default_factory=new_call_sid)
    account_sid: str = DEFAULT_ACCOUNT_SID
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    direction: str = "inbound"
    speed: float = 1.0  # 1.0 = real time (20 ms per frame); 0 = as fast as possible
    send_stop: bool = True  # False: close the socket without a stop message (as when Twilio drops)
    extra_form: Mapping[str, str] = field(default_factory=dict)  # more webhook fields

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {self.speed}")


@dataclass
class CallResult:
    """What happened on the call, as the simulator saw it."""

    voice_status: int
    twiml: str
    stream_url: str | None  # the wss:// URL from <Stream url>, None if the TwiML started no stream
    stream_params: dict[str, str]  # the <Parameter>s of that <Stream>
    track_setting: str | None  # the <Stream track=...> attribute as written
    stream_sid: str | None  # made up by the simulator
    sent: dict[str, bytearray]  # per track: exactly the audio bytes sent in media messages, in order
    frames_sent: dict[str, int]
    close_code: int | None  # as websockets reports it once the socket closed (1006: no close frame)
    close_reason: str | None
    upgrade_status: int | None  # HTTP status if the upgrade was rejected
    spec_call_sid: str  # the CallSid of the spec, for finding the call in the service's logs
    closed_by: str | None = None  # "server" or "simulator"; None when no WebSocket opened
    all_sent: bool = False  # every prepared message (through stop, if any) went out before the socket closed


@dataclass(frozen=True)
class StreamRequest:
    """What the TwiML asks for: <Response><Start><Stream url track><Parameter/>..."""

    url: str
    track_setting: str | None
    params: dict[str, str]

    @property
    def tracks(self) -> tuple[str, ...]:
        return TRACKS_BY_SETTING[self.track_setting or DEFAULT_TRACK_SETTING]


@dataclass(frozen=True)
class Outgoing:
    """One prepared stream message, and when and for which track it goes out."""

    text: str
    slot: int | None = None  # send at stream start + slot * 20 ms / speed; None: at once
    track: str | None = None  # media messages only
    payload: bytes = b""  # the raw μ-law frame of a media message


# --- pure: signatures, webhook, TwiML, URLs -----------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature for `url` and POST `params`, exactly as Twilio computes it."""
    signature: str = RequestValidator(auth_token).compute_signature(url, dict(params))
    return signature


def webhook_form(spec: CallSpec) -> dict[str, str]:
    """The voice webhook's form fields for an incoming call that is ringing, plus `spec.extra_form`."""
    form = {
        "AccountSid": spec.account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": spec.call_sid,
        "CallStatus": "ringing",
        "Called": spec.to_number,
        "CalledCountry": "US",
        "Caller": spec.from_number,
        "CallerCountry": "US",
        "Direction": spec.direction,
        "From": spec.from_number,
        "FromCountry": "US",
        "To": spec.to_number,
        "ToCountry": "US",
    }
    return form | dict(spec.extra_form)


def parse_twiml(twiml: str) -> StreamRequest | None:
    """The <Start><Stream> of a TwiML answer, or None if it starts none; TwimlError if Twilio would balk."""
    try:
        # The TwiML comes from the server under test, which we run; defusedxml is not a dependency.
        root = ET.fromstring(twiml)  # noqa: S314
    except ET.ParseError as exc:
        raise TwimlError(f"/voice answered something that is not XML: {exc}") from exc
    if root.tag != "Response":
        raise TwimlError(f"TwiML root is <{root.tag}>, not <Response>")
    stream = root.find("Start/Stream")
    if stream is None:
        return None
    return _stream_request(stream)


def _stream_request(stream: ET.Element) -> StreamRequest:
    url = stream.get("url", "")
    if urlsplit(url).scheme != "wss":
        raise TwimlError(f"<Stream url={url!r}>: Twilio only streams to wss:// URLs")
    track = stream.get("track")
    if track is not None and track not in TRACKS_BY_SETTING:
        raise TwimlError(f"<Stream track={track!r}>: not one of {', '.join(TRACKS_BY_SETTING)}")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return StreamRequest(url=url, track_setting=track, params=params)


def connect_url(base_url: str, stream_url: str) -> str:
    """Where to connect: the stream URL's path on base_url's host, as Twilio does through a TLS proxy."""
    base, stream = urlsplit(base_url), urlsplit(stream_url)
    scheme = "wss" if base.scheme == "https" else "ws"
    query = f"?{stream.query}" if stream.query else ""
    return f"{scheme}://{base.netloc}{stream.path or '/'}{query}"


def post_url(base_url: str, voice_url: str) -> str:
    """Where the webhook is POSTed: voice_url's path and query on base_url's host."""
    voice = urlsplit(voice_url)
    query = f"?{voice.query}" if voice.query else ""
    return f"{base_url.rstrip('/')}{voice.path or '/'}{query}"


def with_headers(base: Mapping[str, str], extra: Mapping[str, str] | None) -> dict[str, str]:
    """`base` overridden by `extra`, header names compared case-insensitively."""
    merged = dict(base)
    for name, value in (extra or {}).items():
        for existing in [key for key in merged if key.lower() == name.lower()]:
            del merged[existing]
        merged[name] = value
    return merged


# --- pure: the stream's messages ----------------------------------------------------------------------------


def build_messages(
    spec: CallSpec, stream_sid: str, tracks: Sequence[str], custom_parameters: Mapping[str, str]
) -> list[str]:
    """Every message of the stream as JSON text: connected, start, media... (tracks interleaved), stop."""
    return [message.text for message in plan_messages(spec, stream_sid, tracks, custom_parameters)]


def plan_messages(
    spec: CallSpec, stream_sid: str, tracks: Sequence[str], custom_parameters: Mapping[str, str]
) -> list[Outgoing]:
    """`build_messages` with each message's send slot, track and raw payload, for pacing and recording."""
    framed = {track: frames(track_audio(spec, track)) for track in tracks}
    slots = max((len(track_frames) for track_frames in framed.values()), default=0)
    planned = [Outgoing(_json({"event": "connected", "protocol": "Call", "version": "1.0.0"}))]
    sequence = 1  # sequenceNumber counts every message after `connected`
    planned.append(Outgoing(_json(_start(spec, stream_sid, tracks, custom_parameters, sequence))))
    for slot in range(slots):
        for track in tracks:
            if slot < len(framed[track]):  # the shorter track just ends: Twilio sends nothing more for it
                sequence += 1
                payload = framed[track][slot]
                media = _media(stream_sid, track, sequence, chunk=slot + 1, timestamp_ms=slot * 20, payload=payload)
                planned.append(Outgoing(_json(media), slot=slot, track=track, payload=payload))
    if spec.send_stop:
        planned.append(Outgoing(_json(_stop(spec, stream_sid, sequence + 1)), slot=slots))
    return planned


def track_audio(spec: CallSpec, track: str) -> bytes:
    """The μ-law audio for `track`; with no outbound audio given, silence as long as the caller's audio.

    Twilio streams the outbound track for the whole call, silent while nothing plays.
    """
    if track == "inbound":
        return spec.inbound
    if track == "outbound":
        return spec.outbound if spec.outbound is not None else mulaw_silence(len(spec.inbound) / MULAW_SAMPLE_RATE)
    raise ValueError(f"unknown track {track!r}: Twilio's tracks are 'inbound' and 'outbound'")


def _json(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _start(
    spec: CallSpec,
    stream_sid: str,
    tracks: Sequence[str],
    custom_parameters: Mapping[str, str],
    sequence: int,
) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": str(sequence),
        "start": {
            "accountSid": spec.account_sid,
            "streamSid": stream_sid,
            "callSid": spec.call_sid,
            "tracks": list(tracks),
            "customParameters": dict(custom_parameters),
            # The only numbers in Twilio's messages; every other numeric-looking value is a string.
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": MULAW_SAMPLE_RATE, "channels": 1},
        },
        "streamSid": stream_sid,
    }


def _media(
    stream_sid: str, track: str, sequence: int, *, chunk: int, timestamp_ms: int, payload: bytes
) -> dict[str, Any]:
    return {
        "event": "media",
        "sequenceNumber": str(sequence),
        "media": {
            "track": track,
            "chunk": str(chunk),
            "timestamp": str(timestamp_ms),
            "payload": base64.b64encode(payload).decode("ascii"),
        },
        "streamSid": stream_sid,
    }


def _stop(spec: CallSpec, stream_sid: str, sequence: int) -> dict[str, Any]:
    return {
        "event": "stop",
        "sequenceNumber": str(sequence),
        "streamSid": stream_sid,
        "stop": {"accountSid": spec.account_sid, "callSid": spec.call_sid},
    }


# --- I/O: the call ------------------------------------------------------------------------------------------


@dataclass
class _Progress:
    """What has gone out so far; mutated by the sender, so a cancelled sender still leaves an exact record."""

    sent: dict[str, bytearray]
    frames_sent: dict[str, int]
    all_sent: bool = False


async def simulate_call(
    base_url: str,
    spec: CallSpec,
    *,
    auth_token: str | None,
    voice_path: str = "/voice",
    voice_url: str | None = None,
    sign: bool = True,
    signature_override: str | None = None,
    ws_headers: Mapping[str, str] | None = None,
    http_headers: Mapping[str, str] | None = None,
) -> CallResult:
    """Place `spec` against the service at `base_url` as Twilio would, and report what happened.

    voice_url: the webhook URL as configured in Twilio (what gets signed), e.g. the public https:// one;
    the POST goes to its path on base_url. Default: base_url + voice_path.
    Signatures are sent when `sign` and `auth_token` are both set; `signature_override` replaces the
    computed value on both requests; a signature header in `http_headers`/`ws_headers` replaces it on that
    request only.
    Raises SimulatorError when the service is unreachable or answers TwiML Twilio could not follow.
    """
    signed_voice_url = voice_url or f"{base_url.rstrip('/')}{voice_path}"
    form = webhook_form(spec)
    signature = _signature(auth_token, signed_voice_url, form, sign=sign, override=signature_override)
    headers = with_headers({"X-Twilio-Signature": signature} if signature else {}, http_headers)
    status, twiml = await _post_webhook(post_url(base_url, signed_voice_url), form, headers)
    request = parse_twiml(twiml) if 200 <= status < 300 else None  # Twilio follows TwiML only from a 2xx
    result = _result(spec, status, twiml, request)
    if request is None:
        return result
    signature = _signature(auth_token, request.url, {}, sign=sign, override=signature_override)
    upgrade_headers = with_headers({"x-twilio-signature": signature} if signature else {}, ws_headers)
    assert result.stream_sid is not None
    planned = plan_messages(spec, result.stream_sid, request.tracks, request.params)
    await _stream(connect_url(base_url, request.url), upgrade_headers, spec, planned, result)
    return result


def _signature(
    auth_token: str | None, url: str, params: Mapping[str, str], *, sign: bool, override: str | None
) -> str | None:
    if not sign or auth_token is None:
        return None
    return override if override is not None else twilio_signature(auth_token, url, params)


def _result(spec: CallSpec, status: int, twiml: str, request: StreamRequest | None) -> CallResult:
    tracks = request.tracks if request else ()
    return CallResult(
        voice_status=status,
        twiml=twiml,
        stream_url=request.url if request else None,
        stream_params=dict(request.params) if request else {},
        track_setting=request.track_setting if request else None,
        stream_sid=new_stream_sid() if request else None,
        sent={track: bytearray() for track in tracks},
        frames_sent=dict.fromkeys(tracks, 0),
        close_code=None,
        close_reason=None,
        upgrade_status=None,
        spec_call_sid=spec.call_sid,
    )


async def _post_webhook(url: str, form: Mapping[str, str], headers: Mapping[str, str]) -> tuple[int, str]:
    try:
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S) as client:
            response = await client.post(url, data=dict(form), headers=dict(headers))
    except httpx.HTTPError as exc:
        raise SimulatorError(f"POST {url} failed: {exc!r}") from exc
    return response.status_code, response.text


async def _stream(
    url: str, headers: Mapping[str, str], spec: CallSpec, planned: list[Outgoing], result: CallResult
) -> None:
    """Open the stream, send the plan, wait for the close; fills in `result`'s stream fields."""
    try:
        socket = await connect(
            url,
            additional_headers=dict(headers),
            compression=None,  # Twilio does not negotiate permessage-deflate
            max_size=MAX_INCOMING_BYTES,
            open_timeout=OPEN_TIMEOUT_S,
            close_timeout=CLOSE_WAIT_S,
            ping_interval=None,  # keep the wire to the messages Twilio documents
        )
    except InvalidStatus as exc:
        result.upgrade_status = exc.response.status_code
        return
    except (InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
        raise SimulatorError(f"WebSocket {url} failed to open: {exc!r}") from exc
    progress = _Progress(result.sent, result.frames_sent)
    try:
        result.closed_by = await _run_stream(socket, planned, spec.speed, progress, stop_planned=spec.send_stop)
    finally:
        await socket.close()
    result.all_sent = progress.all_sent
    result.close_code, result.close_reason = socket.close_code, socket.close_reason


async def _run_stream(
    socket: ClientConnection,
    planned: list[Outgoing],
    speed: float,
    progress: _Progress,
    *,
    stop_planned: bool,
) -> str:
    """Send while watching for the server's close; returns who closed the socket first."""
    sender = asyncio.ensure_future(_send_all(socket, planned, speed, progress))
    closed = asyncio.ensure_future(_until_closed(socket))
    try:
        await asyncio.wait({sender, closed}, return_when=asyncio.FIRST_COMPLETED)
        if sender.done():
            sender.result()  # re-raise anything unexpected from the sender
        if closed.done() or not progress.all_sent:
            return "server"  # it closed before we were through (the sender stops at ConnectionClosed)
        if stop_planned:
            await asyncio.wait({closed}, timeout=CLOSE_WAIT_S)  # after `stop`, the server should close
            if closed.done():
                return "server"
        await socket.close()  # no stop (as when Twilio drops), or the server kept the socket open
        return "simulator"
    finally:
        for task in (sender, closed):
            task.cancel()
        # wait() never raises the tasks' CancelledError, so our own cancellation still propagates.
        await asyncio.wait({sender, closed})


async def _send_all(socket: ClientConnection, planned: list[Outgoing], speed: float, progress: _Progress) -> None:
    """Send each prepared message at its slot on an absolute clock, so sleep overshoot never accumulates."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for message in planned:
            if message.slot is not None and speed > 0:
                await asyncio.sleep(max(0.0, started + message.slot * FRAME_S / speed - loop.time()))
            await socket.send(message.text)
            if message.track is not None:
                progress.sent[message.track] += message.payload
                progress.frames_sent[message.track] += 1
    except ConnectionClosed:
        return  # the server closed first; _until_closed reports it
    progress.all_sent = True


async def _until_closed(socket: ClientConnection) -> None:
    """Read (and drop) anything the server sends, until the socket has fully closed."""
    try:
        while True:
            await socket.recv()
    except ConnectionClosed:
        await socket.wait_closed()


# --- CLI ----------------------------------------------------------------------------------------------------


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


def _configured_token() -> str | None:
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
    token = args.auth_token or _configured_token()
    if token is None:
        sys.stderr.write("simulate: no --auth-token and no TWILIO_AUTH_TOKEN: sending no X-Twilio-Signature\n")
    started = time.monotonic()
    try:
        result = asyncio.run(simulate_call(args.url, spec, auth_token=token, voice_url=args.voice_url))
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


def _spec_from_args(args: argparse.Namespace) -> CallSpec:
    inbound = wav_to_mulaw(Path(args.audio).read_bytes())
    outbound = wav_to_mulaw(Path(args.outbound).read_bytes()) if args.outbound else None
    return CallSpec(
        inbound=inbound,
        outbound=outbound,
        from_number=args.from_number,
        to_number=args.to_number,
        speed=args.speed,
        send_stop=not args.no_stop,
    )


def failure_reason(result: CallResult) -> str | None:
    """Why the call did not complete as a streamed call, or None when it did."""
    if not 200 <= result.voice_status < 300:
        return f"POST /voice answered HTTP {result.voice_status}"
    if result.stream_url is None:
        return "the TwiML started no <Stream> (the service may be at MAX_CALLS or shutting down)"
    if result.upgrade_status is not None:
        return f"the WebSocket upgrade was refused with HTTP {result.upgrade_status}"
    if not result.all_sent:
        return f"the server closed the stream early: {result.close_code} {result.close_reason or ''}".rstrip()
    if result.close_code not in (1000, 1001):
        return f"the stream closed abnormally: {result.close_code} {result.close_reason or ''}".rstrip()
    return None


def summarize(result: CallResult, elapsed_s: float, speed: float) -> str:
    """A short human summary of the call."""
    lines = [f"call      {result.spec_call_sid}  (POST /voice: HTTP {result.voice_status})"]
    if result.stream_url is not None:
        params = ", ".join(sorted(result.stream_params)) or "none"  # names only: values may be tokens
        track = result.track_setting or f"{DEFAULT_TRACK_SETTING} (default)"
        lines.append(f"stream    {result.stream_sid}  {result.stream_url}  track={track}  parameters: {params}")
    for track, count in result.frames_sent.items():
        lines.append(f"sent      {track}: {count} frame{'' if count == 1 else 's'} ({count * FRAME_S:.2f} s of audio)")
    lines.append(f"duration  {elapsed_s:.2f} s wall clock at speed {speed:g}")
    lines.append(f"closed    {_describe_close(result)}")
    return "\n".join(lines)


def _describe_close(result: CallResult) -> str:
    if result.upgrade_status is not None:
        return f"never opened: upgrade refused with HTTP {result.upgrade_status}"
    if result.closed_by is None:
        return "no stream was opened"
    reason = f" {result.close_reason!r}" if result.close_reason else ""
    how = "after everything was sent" if result.all_sent else "before everything was sent"
    return f"by the {result.closed_by}, code {result.close_code}{reason}, {how}"
