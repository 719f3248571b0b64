"""Simulator, pure part (no I/O): what Twilio sends on a call, prepared up front.

The webhook form, signatures, reading the TwiML, the URL to connect to, and every stream message
(`build_messages`), so that sending costs no JSON or base64 work and benchmarks time the server. The I/O that
places a call is `client.py`; the command is `python -m service simulate` (`service/cli/simulate.py`).

Wire facts (message formats, string counters, signing the `wss://` URL with no params):
https://www.twilio.com/docs/voice/media-streams/websocket-messages and
https://www.twilio.com/docs/usage/webhooks/webhooks-security.
"""

from __future__ import annotations

import base64
import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from twilio.request_validator import RequestValidator

from service import mulaw
from service.simulator.audio import frames, mulaw_silence

DEFAULT_ACCOUNT_SID = "AC" + "5ca1ab1e" * 4

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
    # What an attacker would change, to play the attacks the service must refuse (see `replay_stream`):
    send_start: bool = True  # False: `connected` only, then hold the socket open (a socket that never starts)
    hold_open_s: float = 0.0  # after the last message, wait this long for the server to close the socket
    parameter_overrides: Mapping[str, str | None] = field(default_factory=dict)  # None removes a <Parameter>

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {self.speed}")


@dataclass
class CallResult:
    """What happened on the call, as the simulator saw it."""

    voice_status: int  # 0 when no webhook was posted (`replay_stream`)
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
    replayed: bool = False  # the stream was opened without /voice, with a captured upgrade signature
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


# --- signatures, webhook, TwiML, URLs -----------------------------------------------------------------


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


# --- the stream's messages ----------------------------------------------------------------------------


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
    planned = [Outgoing(connected_text())]
    if not spec.send_start:
        return planned
    sequence = 1  # sequenceNumber counts every message after `connected`
    planned.append(Outgoing(_json(_start(spec, stream_sid, tracks, custom_parameters, sequence))))
    for slot in range(slots):
        for track in tracks:
            if slot < len(framed[track]):  # the shorter track just ends: Twilio sends nothing more for it
                sequence += 1
                payload = framed[track][slot]
                media = _media(
                    stream_sid, track, sequence, chunk=slot + 1, timestamp_ms=slot * mulaw.FRAME_MS, payload=payload
                )
                planned.append(Outgoing(_json(media), slot=slot, track=track, payload=payload))
    if spec.send_stop:
        planned.append(Outgoing(_json(_stop(spec, stream_sid, sequence + 1)), slot=slots))
    return planned


def connected_text() -> str:
    """The `connected` message every stream opens with."""
    return _json({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_text(
    spec: CallSpec, stream_sid: str, tracks: Sequence[str], custom_parameters: Mapping[str, str], sequence: int
) -> str:
    """A stream's `start` message, for a player that opens streams of one call as they are asked for."""
    return _json(_start(spec, stream_sid, tracks, custom_parameters, sequence))


def media_text(stream_sid: str, track: str, sequence: int, *, chunk: int, timestamp_ms: int, payload: bytes) -> str:
    """One `media` message: `chunk` and `timestamp_ms` count from the stream's own start."""
    return _json(_media(stream_sid, track, sequence, chunk=chunk, timestamp_ms=timestamp_ms, payload=payload))


def stop_text(spec: CallSpec, stream_sid: str, sequence: int) -> str:
    """A stream's `stop` message."""
    return _json(_stop(spec, stream_sid, sequence))


def stream_parameters(spec: CallSpec, params: Mapping[str, str]) -> dict[str, str]:
    """The <Parameter>s the stream's `start` carries: the TwiML's, with `spec.parameter_overrides` applied."""
    merged = dict(params)
    for name, value in spec.parameter_overrides.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def track_audio(spec: CallSpec, track: str) -> bytes:
    """The μ-law audio for `track`; with no outbound audio given, silence as long as the caller's audio.

    Twilio streams the outbound track for the whole call, silent while nothing plays.
    """
    if track == "inbound":
        return spec.inbound
    if track == "outbound":
        return spec.outbound if spec.outbound is not None else mulaw_silence(len(spec.inbound) / mulaw.SAMPLE_RATE)
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
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": mulaw.SAMPLE_RATE, "channels": 1},
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
