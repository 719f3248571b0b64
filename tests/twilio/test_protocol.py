"""The Media Streams parser and the stream's state machine, without any I/O."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import InvalidState, TwilioProtocolError
from service.twilio.protocol import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    StreamState,
    Unknown,
    parse,
    transition,
)

PAYLOAD = bytes(range(160))
START: dict[str, Any] = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": "MZ00000000000000000000000000000001",
    "start": {
        "accountSid": "AC00000000000000000000000000000001",
        "streamSid": "MZ00000000000000000000000000000001",
        "callSid": "CA00000000000000000000000000000001",
        "tracks": ["inbound"],
        "customParameters": {"from": "+15005550006"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}
MEDIA: dict[str, Any] = {
    "event": "media",
    "sequenceNumber": "4",
    "streamSid": "MZ00000000000000000000000000000001",
    "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": base64.b64encode(PAYLOAD).decode()},
}


def _with(message: dict[str, Any], path: tuple[str, ...], value: Any) -> str:
    """The message as JSON with one field replaced (or removed, for value ...)."""
    copy = json.loads(json.dumps(message))
    target = copy
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(copy)


def test_parses_a_start_with_string_counters_and_numeric_format() -> None:
    """start: counters become ints, tracks and custom parameters are kept, the format is recognised."""
    event = parse(json.dumps(START))
    assert isinstance(event, Start)
    assert event.sequence_number == 1
    assert event.call_sid == "CA00000000000000000000000000000001"
    assert event.tracks == ("inbound",)
    assert event.custom_parameters == {"from": "+15005550006"}
    assert event.media_format.is_mulaw_8k_mono


def test_parses_media_decoding_the_payload_once() -> None:
    """media: the payload is decoded from base64 to the exact bytes; chunk and timestamp are ints."""
    event = parse(json.dumps(MEDIA))
    assert event == Media(
        sequence_number=4, stream_sid=MEDIA["streamSid"], track="inbound", chunk=2, timestamp_ms=5, payload=PAYLOAD
    )


def test_parses_connected_stop_dtmf_mark_and_unknown() -> None:
    """Every documented event has its type; an undocumented one is Unknown, not an error."""
    assert parse('{"event":"connected","protocol":"Call","version":"1.0.0"}') == Connected("Call", "1.0.0")
    stop = parse('{"event":"stop","sequenceNumber":"9","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}')
    assert stop == Stop(sequence_number=9, stream_sid="MZ1", call_sid="CA1")
    dtmf = parse('{"event":"dtmf","sequenceNumber":"5","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"7"}}')
    assert isinstance(dtmf, Dtmf)
    assert dtmf.digit == "7"
    assert isinstance(parse('{"event":"mark","sequenceNumber":"6","streamSid":"MZ1","mark":{"name":"m"}}'), Mark)
    assert parse('{"event":"transcription","whatever":1}') == Unknown("transcription")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("not json", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"sequenceNumber": "1"}', "'event'"),
        ('{"event": 5}', "'event'"),
        (_with(MEDIA, ("media", "payload"), "%%%not base64%%%"), "not valid base64"),
        (_with(MEDIA, ("media", "payload"), ...), "'payload'"),
        (_with(MEDIA, ("media", "chunk"), "two"), "'chunk'"),
        (_with(MEDIA, ("media", "chunk"), "-1"), "'chunk'"),
        (_with(MEDIA, ("media", "track"), "sideways"), "media.track"),
        (_with(MEDIA, ("sequenceNumber",), None), "'sequenceNumber'"),
        (_with(MEDIA, ("media",), "x"), "'media'"),
        (_with(START, ("start", "tracks"), []), "start.tracks"),
        (_with(START, ("start", "tracks"), ["both"]), "start.tracks"),
        (_with(START, ("start", "customParameters"), {"a": 1}), "customParameters"),
        (_with(START, ("start", "mediaFormat"), ...), "'mediaFormat'"),
        (_with(START, ("start", "mediaFormat", "sampleRate"), True), "'sampleRate'"),
        (_with(START, ("start", "callSid"), ""), "'callSid'"),
        (_with(START, ("start", "streamSid"), "MZother"), "differs"),
        ('{"event":"stop","sequenceNumber":"1","streamSid":"MZ1","stop":[]}', "'stop'"),
    ],
)
def test_rejects_bad_messages_with_a_specific_reason(text: str | bytes, complaint: str) -> None:
    """Each kind of bad message raises TwilioProtocolError saying what was wrong."""
    with pytest.raises(TwilioProtocolError, match=complaint):
        parse(text)


def test_accepts_an_unsupported_media_format_for_the_session_to_refuse() -> None:
    """The parser reads any format; refusing a-law or 16 kHz is the session's decision."""
    event = parse(_with(START, ("start", "mediaFormat", "encoding"), "audio/x-alaw"))
    assert isinstance(event, Start)
    assert not event.media_format.is_mulaw_8k_mono


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _mutations() -> st.SearchStrategy[str]:
    """Real messages with one field replaced by an arbitrary JSON value, plus arbitrary objects and text."""
    templates = [START, MEDIA, {"event": "stop", "sequenceNumber": "2", "streamSid": "MZ1", "stop": {}}]
    paths = [
        ("event",),
        ("sequenceNumber",),
        ("streamSid",),
        ("start", "tracks"),
        ("start", "mediaFormat"),
        ("start", "customParameters"),
        ("media", "payload"),
        ("media", "chunk"),
        ("media", "track"),
        ("media",),
    ]

    @st.composite
    def mutate(draw: st.DrawFn) -> str:
        template = draw(st.sampled_from(templates))
        path = draw(st.sampled_from([p for p in paths if p[0] in template]))
        return _with(template, path, draw(JSON_VALUES))

    return mutate() | st.text() | JSON_VALUES.map(json.dumps) | st.binary().map(lambda b: b.decode("latin-1"))


@given(_mutations())
def test_arbitrary_input_raises_only_the_documented_error(text: str) -> None:
    """Whatever arrives, parse() returns an event or raises TwilioProtocolError, never anything else."""
    try:
        event = parse(text)
    except TwilioProtocolError:
        return
    assert isinstance(event, Connected | Start | Media | Stop | Dtmf | Mark | Unknown)


@given(st.binary(max_size=400))
def test_any_payload_round_trips(payload: bytes) -> None:
    """Audio bytes come out of parse() exactly as they went into the base64 payload."""
    message = _with(MEDIA, ("media", "payload"), base64.b64encode(payload).decode())
    event = parse(message)
    assert isinstance(event, Media)
    assert event.payload == payload


CONNECTED = Connected("Call", "1.0.0")
START_EVENT = parse(json.dumps(START))
MEDIA_EVENT = parse(json.dumps(MEDIA))
STOP_EVENT = Stop(sequence_number=9, stream_sid="MZ1", call_sid="CA1")


def test_the_happy_path_walks_the_states_in_order() -> None:
    """connected, start, media, stop: AWAITING_CONNECTED, AWAITING_START, STREAMING, STOPPED."""
    state = StreamState.AWAITING_CONNECTED
    seen = []
    for event in (CONNECTED, START_EVENT, MEDIA_EVENT, MEDIA_EVENT, Unknown("x"), STOP_EVENT):
        state = transition(state, event)
        seen.append(state)
    assert seen == [
        StreamState.AWAITING_START,
        StreamState.STREAMING,
        StreamState.STREAMING,
        StreamState.STREAMING,
        StreamState.STREAMING,
        StreamState.STOPPED,
    ]


@pytest.mark.parametrize(
    ("state", "event", "complaint"),
    [
        (StreamState.AWAITING_START, MEDIA_EVENT, "media before start"),
        (StreamState.AWAITING_CONNECTED, MEDIA_EVENT, "media before start"),
        (StreamState.STREAMING, START_EVENT, "second start"),
        (StreamState.STREAMING, CONNECTED, "connected while streaming"),
        (StreamState.AWAITING_START, STOP_EVENT, "stop while awaiting_start"),
        (StreamState.STOPPED, MEDIA_EVENT, "media after stop"),
        (StreamState.STOPPED, START_EVENT, "start after stop"),
        (StreamState.STOPPED, Unknown("x"), "after stop"),
    ],
)
def test_out_of_order_events_raise_invalid_state(state: StreamState, event: Any, complaint: str) -> None:
    """Events the protocol forbids in a state raise InvalidState naming the problem."""
    with pytest.raises(InvalidState, match=complaint):
        transition(state, event)


def test_a_stream_may_open_with_start() -> None:
    """`connected` is optional: start straight away is accepted."""
    assert transition(StreamState.AWAITING_CONNECTED, START_EVENT) is StreamState.STREAMING


@pytest.mark.parametrize(
    ("path", "value", "field", "parsed"),
    [
        (("sequenceNumber",), 4, "sequence_number", 4),  # a plain integer is a counter too
        (("sequenceNumber",), "0", "sequence_number", 0),
        (("sequenceNumber",), "9" * 18, "sequence_number", int("9" * 18)),
        (("media", "chunk"), 2, "chunk", 2),
        (("media", "timestamp"), 0, "timestamp_ms", 0),
    ],
)
def test_counters_are_decimal_strings_or_non_negative_integers(
    path: tuple[str, ...], value: Any, field: str, parsed: int
) -> None:
    assert getattr(parse(_with(MEDIA, path, value)), field) == parsed


@pytest.mark.parametrize(
    "value",
    [True, False, -1, 1.0, "1.0", " 1", "+1", "٣", "9" * 19, None, [1]],  # "٣": a digit, but not an ASCII one
)
def test_anything_else_is_not_a_counter(value: Any) -> None:
    with pytest.raises(TwilioProtocolError, match="'sequenceNumber' must be a non-negative integer string"):
        parse(_with(MEDIA, ("sequenceNumber",), value))


@pytest.mark.parametrize(("value", "parsed"), [(8000, 8000), ("8000", 8000), ("16000", 16000), (0, 0)])
def test_a_media_format_number_may_be_an_integer_or_its_digits(value: Any, parsed: int) -> None:
    event = parse(_with(START, ("start", "mediaFormat", "sampleRate"), value))
    assert isinstance(event, Start)
    assert event.media_format.sample_rate == parsed


@pytest.mark.parametrize("value", ["8000.0", "", "1" * 10, "٣", 8000.0, None])
def test_a_media_format_number_that_is_not_one_is_refused(value: Any) -> None:
    with pytest.raises(TwilioProtocolError, match="'channels' must be a number"):
        parse(_with(START, ("start", "mediaFormat", "channels"), value))


def test_optional_strings_default_to_empty_but_must_be_strings_when_sent() -> None:
    """connected's protocol and version, stop's callSid, dtmf's track, mark's name: absent is "", a number is wrong."""
    assert parse('{"event":"connected"}') == Connected("", "")
    assert parse('{"event":"stop","sequenceNumber":"9","streamSid":"MZ1","stop":{}}') == Stop(
        sequence_number=9, stream_sid="MZ1", call_sid=""
    )
    with pytest.raises(TwilioProtocolError, match="'version' must be a string"):
        parse('{"event":"connected","protocol":"Call","version":1}')
    with pytest.raises(TwilioProtocolError, match="'name' must be a string"):
        parse('{"event":"mark","sequenceNumber":"6","streamSid":"MZ1","mark":{"name":null}}')
