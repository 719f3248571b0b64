"""Protocol layer (no I/O): Twilio Media Streams messages parsed into typed events, and the stream's states.

Message formats: https://www.twilio.com/docs/voice/media-streams/websocket-messages. Every numeric-looking
value arrives as a string except `mediaFormat.sampleRate` and `.channels`. `parse` raises only
`TwilioProtocolError`; `transition` raises only `InvalidState`.
"""

from __future__ import annotations

import binascii
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from service import mulaw
from service.errors import InvalidState, TwilioProtocolError

MULAW_ENCODING = "audio/x-mulaw"
TRACKS = ("inbound", "outbound")
MAX_SID_LENGTH = 64  # Twilio's SIDs are 34 characters; the database's columns hold 64


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str
    sample_rate: int
    channels: int

    @property
    def is_mulaw_8k_mono(self) -> bool:
        return self.encoding == MULAW_ENCODING and self.sample_rate == mulaw.SAMPLE_RATE and self.channels == 1


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom_parameters: Mapping[str, str]
    media_format: MediaFormat


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a call per field, 50 times a second per track
class Media:
    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    stream_sid: str
    call_sid: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    """Only sent on bidirectional (<Connect>) streams; understood and logged."""

    sequence_number: int
    stream_sid: str
    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    """Only sent on bidirectional (<Connect>) streams; understood and logged."""

    sequence_number: int
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """An event this version does not know; Twilio adds events without notice, so it is not an error."""

    event: str


TwilioEvent = Connected | Start | Media | Stop | Dtmf | Mark | Unknown


def parse(text: str | bytes) -> TwilioEvent:
    """Parse one WebSocket message from Twilio. Raises TwilioProtocolError, and nothing else."""
    try:
        message = orjson.loads(text)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise TwilioProtocolError(f"malformed JSON: {_short(exc)}") from exc
    if not isinstance(message, dict):
        raise TwilioProtocolError(f"expected a JSON object, got {type(message).__name__}")
    event = message.get("event")
    if event == "media":  # the hot path: 50 a second per track
        return _media(message)
    if not isinstance(event, str):
        raise TwilioProtocolError("missing or non-string 'event'")
    parser = _PARSERS.get(event)
    if parser is None:
        return Unknown(event=event[:64])
    return parser(message)


def _connected(message: Mapping[str, Any]) -> Connected:
    return Connected(
        protocol=_optional_str(message, "protocol"),
        version=_optional_str(message, "version"),
    )


def _start(message: Mapping[str, Any]) -> Start:
    start = _object(message, "start")
    stream_sid = _sid(message, "streamSid")
    if start.get("streamSid", stream_sid) != stream_sid:
        raise TwilioProtocolError("start.streamSid differs from streamSid")
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not tracks or any(t not in TRACKS for t in tracks):
        raise TwilioProtocolError(f"start.tracks must list 'inbound' and/or 'outbound', got {_clip(tracks)}")
    params = start.get("customParameters", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise TwilioProtocolError("start.customParameters must map names to strings")
    media_format = _object(start, "mediaFormat")
    return Start(
        sequence_number=_counter(message, "sequenceNumber"),
        stream_sid=stream_sid,
        account_sid=_sid(start, "accountSid"),
        call_sid=_sid(start, "callSid"),
        tracks=tuple(dict.fromkeys(tracks)),
        custom_parameters=dict(params),
        media_format=MediaFormat(
            encoding=_str(media_format, "encoding"),
            sample_rate=_number(media_format, "sampleRate"),
            channels=_number(media_format, "channels"),
        ),
    )


def _media(message: Mapping[str, Any]) -> Media:
    media = _object(message, "media")
    track = media.get("track", "inbound")
    if track != "inbound" and track != "outbound":  # noqa: PLR1714 - two compares beat a tuple's scan per frame
        raise TwilioProtocolError(f"media.track must be 'inbound' or 'outbound', got {_clip(track)}")
    encoded = media.get("payload")
    if not isinstance(encoded, str):
        raise TwilioProtocolError("missing or non-string 'payload'")
    try:
        # What base64.b64decode(validate=True) does, without its Python wrapper, 50 times a second per track.
        payload = binascii.a2b_base64(encoded, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise TwilioProtocolError("media.payload is not valid base64") from exc
    return Media(
        sequence_number=_counter(message, "sequenceNumber"),
        stream_sid=_str(message, "streamSid"),
        track=track,
        chunk=_counter(media, "chunk"),
        timestamp_ms=_counter(media, "timestamp"),
        payload=payload,
    )


def _stop(message: Mapping[str, Any]) -> Stop:
    stop = message.get("stop", {})
    if not isinstance(stop, dict):
        raise TwilioProtocolError("'stop' must be an object")
    return Stop(
        sequence_number=_counter(message, "sequenceNumber"),
        stream_sid=_str(message, "streamSid"),
        call_sid=_optional_str(stop, "callSid"),
    )


def _dtmf(message: Mapping[str, Any]) -> Dtmf:
    dtmf = _object(message, "dtmf")
    return Dtmf(
        sequence_number=_counter(message, "sequenceNumber"),
        stream_sid=_str(message, "streamSid"),
        track=_optional_str(dtmf, "track"),
        digit=_str(dtmf, "digit"),
    )


def _mark(message: Mapping[str, Any]) -> Mark:
    mark = _object(message, "mark")
    return Mark(
        sequence_number=_counter(message, "sequenceNumber"),
        stream_sid=_str(message, "streamSid"),
        name=_optional_str(mark, "name"),
    )


_PARSERS: dict[str, Callable[[Mapping[str, Any]], TwilioEvent]] = {
    "connected": _connected,
    "start": _start,
    "media": _media,
    "stop": _stop,
    "dtmf": _dtmf,
    "mark": _mark,
}


def _object(message: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"missing or non-object '{key}'")
    return value


def is_sid(value: str) -> bool:
    """A SID as callscribe takes one: two letters and 32 hex digits in practice; anything but 1 to MAX_SID_LENGTH
    ASCII letters and digits is refused, because every SID is stored, keyed on and logged."""
    return 0 < len(value) <= MAX_SID_LENGTH and value.isascii() and value.isalnum()


def _sid(message: Mapping[str, Any], key: str) -> str:
    value = _str(message, key)
    if not is_sid(value):
        raise TwilioProtocolError(f"'{key}' is not a Twilio SID (letters and digits, at most {MAX_SID_LENGTH})")
    return value


def _str(message: Mapping[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str) or not value:
        raise TwilioProtocolError(f"missing or non-string '{key}'")
    return value


def _optional_str(message: Mapping[str, Any], key: str) -> str:
    value = message.get(key, "")
    if not isinstance(value, str):
        raise TwilioProtocolError(f"'{key}' must be a string")
    return value


def _counter(message: Mapping[str, Any], key: str) -> int:
    """Twilio sends counters as decimal strings ("sequenceNumber": "2"); accept plain integers too."""
    value = message.get(key)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise TwilioProtocolError(f"'{key}' must be a non-negative integer string, got {_clip(value)}")


def _number(message: Mapping[str, Any], key: str) -> int:
    value = message.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    raise TwilioProtocolError(f"'{key}' must be a number, got {_clip(value)}")


def _clip(value: object) -> str:
    return repr(value)[:40]


def _short(exc: Exception) -> str:
    return str(exc)[:80]


class StreamState(enum.Enum):
    AWAITING_CONNECTED = "awaiting_connected"
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


_ANY_TIME = (Dtmf, Mark, Unknown)  # events that never change the state


def transition(state: StreamState, event: TwilioEvent) -> StreamState:
    """The stream's state after `event`; raises InvalidState for an event the protocol forbids here.

    `connected` is optional (a stream that opens with `start` is accepted) because nothing depends on it.
    Dtmf, Mark and Unknown never change the state.
    """
    if isinstance(event, Media):  # first: 50 a second per track
        if state is not StreamState.STREAMING:
            raise InvalidState(
                f"media before start ({state.value})" if state is not StreamState.STOPPED else "media after stop"
            )
        return state
    if isinstance(event, _ANY_TIME):
        if state is StreamState.STOPPED:
            raise InvalidState(f"{_name(event)} after stop")
        return state
    if isinstance(event, Connected):
        if state is not StreamState.AWAITING_CONNECTED:
            raise InvalidState(f"connected while {state.value}")
        return StreamState.AWAITING_START
    if isinstance(event, Start):
        if state is StreamState.STREAMING:
            raise InvalidState("a second start on the same stream")
        if state is StreamState.STOPPED:
            raise InvalidState("start after stop")
        return StreamState.STREAMING
    if state is not StreamState.STREAMING:
        raise InvalidState(f"stop while {state.value}")
    return StreamState.STOPPED


def _name(event: TwilioEvent) -> str:
    return event.event if isinstance(event, Unknown) else type(event).__name__.lower()
