"""Twilio's messages on one stream, read and checked before the session acts on them (pure)."""

from __future__ import annotations

import json

from service.calls.stream.messages import Reject, TwilioMessages, close_reason
from service.simulator.messages import CallSpec, build_messages, new_stream_sid
from service.twilio import close_codes
from service.twilio.protocol import Media, Start, StreamState, Unknown
from tests.helpers.audio import call_audio


def stream(seconds: float = 0.1) -> list[str]:
    return build_messages(CallSpec(inbound=call_audio(1, seconds), speed=0), new_stream_sid(), ("inbound",), {})


def test_a_stream_read_in_order_is_counted_and_gapless() -> None:
    messages = TwilioMessages(max_bytes=8192)
    events = [messages.read(text) for text in stream()]
    assert isinstance(events[1], Start)
    assert all(isinstance(event, Media) for event in events[2:-1])
    assert messages.state is StreamState.STOPPED
    assert (messages.count, messages.missing) == (len(events), 0)


def test_messages_twilio_numbered_but_never_delivered_are_counted() -> None:
    """A jump in sequenceNumber after start is messages lost on the way; a repeat or an older number is not."""
    messages = TwilioMessages(max_bytes=8192)
    texts = stream(0.2)  # connected, start, 10 media, stop
    for text in [*texts[:4], texts[7], texts[6], *texts[8:]]:  # numbers 1-3, 7, 6 (late), 8 on
        assert not isinstance(messages.read(text), Reject)
    assert messages.missing == 3  # 4, 5 and 6 were missing when 7 came; 6 came late, and counts still as missed


def test_a_message_over_the_bound_is_refused_before_it_is_parsed() -> None:
    messages = TwilioMessages(max_bytes=100)
    assert messages.read("{" + " " * 200) == Reject(
        close_codes.MESSAGE_TOO_BIG, "message of 201 bytes is over MAX_MESSAGE_BYTES (100)"
    )
    assert messages.state is StreamState.AWAITING_CONNECTED  # not parsed, so nothing moved


def test_bad_json_and_a_message_out_of_order_say_what_was_wrong() -> None:
    bad = TwilioMessages(max_bytes=8192).read("not json")
    assert isinstance(bad, Reject)
    assert bad.code == close_codes.INVALID_PAYLOAD
    assert bad.reason.startswith("bad message:")
    early = TwilioMessages(max_bytes=8192).read(stream()[2])  # media before connected and start
    assert isinstance(early, Reject)
    assert early.code == close_codes.POLICY_VIOLATION


def test_an_unknown_event_type_is_news_once_per_stream() -> None:
    messages = TwilioMessages(max_bytes=8192)
    first, second = (messages.read(json.dumps({"event": "surprise"})) for _ in range(2))
    assert isinstance(first, Unknown)
    assert isinstance(second, Unknown)
    assert messages.first_of_its_kind(first)
    assert not messages.first_of_its_kind(second)


def test_a_close_reason_fits_a_close_frame_without_splitting_a_character() -> None:
    assert close_reason("é" * 100) == "é" * 61  # 122 bytes: the 62nd would need 124
    assert close_reason("short") == "short"
