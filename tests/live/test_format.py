"""The live feed's event format: ids, payloads and SSE frames (service/live/format.py)."""

from __future__ import annotations

import datetime

import orjson
import pytest

from service.alerts.matching import Alert
from service.calls.events import CallEnded, CallStarted, CallState, CallStateChanged, TurnChanged
from service.calls.transcript import Transcript
from service.live import format as live
from service.stt.events import TurnMoment

T = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def transcript(**changes: object) -> Transcript:
    values: dict[str, object] = {
        "call_sid": "CA1", "stream_sid": "MZ1", "track": "inbound", "is_final": True, "speech_final": False,
        "from_finalize": False, "text": "hello there", "start": 1.5, "end": 2.25, "confidence": 0.9, "words": (),
        "request_id": "r1", "speaker": "caller",
    }  # fmt: skip
    values.update(changes)
    return Transcript(**values)  # type: ignore[arg-type]


def test_ids_parse_and_format_both_ways() -> None:
    """An id is `<ms>-<seq>`, compared as numbers (so 10-0 is after 9-5), whitespace around it ignored."""
    assert live.parse_id(" 1733100000000-12 ") == (1733100000000, 12)
    assert live.format_id((5, 0)) == "5-0"
    assert live.parse_id("10-0") > live.parse_id("9-5")


@pytest.mark.parametrize("text", ["", "12", "a-1", "1-", "-1", "1-2-3", "1" * 16 + "-0"])
def test_a_malformed_id_is_refused(text: str) -> None:
    """Anything but digits-dash-digits (of sane length) is a BadEventId."""
    with pytest.raises(live.BadEventId):
        live.parse_id(text)


def test_the_id_clock_always_increases() -> None:
    """Within one millisecond the sequence counts up; a clock that steps back never makes an id go back."""
    now = iter([100, 100, 101, 99, 102])
    clock = live.IdClock(lambda: next(now))
    assert [clock.next() for _ in range(5)] == [(100, 0), (100, 1), (101, 0), (101, 1), (102, 0)]


def test_a_transcript_frame_is_made_once_with_every_field() -> None:
    """The frame has id, event and the JSON data line; made on first use and then reused."""
    event = live.LiveEvent((7, 1), live.TRANSCRIPT, "CA1", 0.0, transcript())
    frame = event.frame()
    assert event.frame() is frame
    head, data = frame.split(b"data: ")
    assert head == b"id: 7-1\nevent: transcript\n"
    assert data.endswith(b"\n\n")
    assert orjson.loads(data) == {
        "type": "transcript", "call_sid": "CA1", "stream_sid": "MZ1", "track": "inbound", "speaker": "caller",
        "text": "hello there", "start": 1.5, "end": 2.25, "is_final": True, "speech_final": False, "batch": False,
        "from_finalize": False, "confidence": 0.9, "request_id": "r1", "languages": [],
    }  # fmt: skip


def test_an_event_read_back_from_redis_keeps_its_data() -> None:
    """An event that arrived as JSON is framed from that JSON, not re-made."""
    event = live.LiveEvent((1, 0), live.CALL_ENDED, "CA1", 0.0, data=b'{"type":"call.ended"}')
    assert event.frame() == b'id: 1-0\nevent: call.ended\ndata: {"type":"call.ended"}\n\n'


def test_the_call_events_payloads() -> None:
    """call.started, call.state and call.ended carry their call's fields, times in UTC with a Z."""
    started = CallStarted(
        call_sid="CA1", stream_sid="MZ1", account_sid="AC1", from_number="+1", to_number="+2", direction="inbound",
        tracks=("inbound", "outbound"), custom_parameters={}, started_at=T,
    )  # fmt: skip
    assert live.payload(live.CALL_STARTED, started) == {
        "type": "call.started", "call_sid": "CA1", "stream_sid": "MZ1", "from_number": "+1", "to_number": "+2",
        "direction": "inbound", "tracks": ["inbound", "outbound"], "started_at": "2026-01-02T03:04:05Z",
    }  # fmt: skip
    state = CallStateChanged(
        call_sid="CA1", stream_sid="MZ1", track="outbound", state=CallState.RECONNECTING, reason="1011", at=T
    )
    assert live.payload(live.CALL_STATE, state) == {
        "type": "call.state", "call_sid": "CA1", "stream_sid": "MZ1", "track": "outbound", "state": "reconnecting",
        "reason": "1011", "at": "2026-01-02T03:04:05Z",
    }  # fmt: skip
    ended = CallEnded(
        call_sid="CA1", stream_sid="MZ1", ended_at=T, ended_by="stop", deepgram_request_ids=(), audio_s_by_track={},
        summary={"duration_s": 4.5},
    )  # fmt: skip
    assert live.payload(live.CALL_ENDED, ended) == {
        "type": "call.ended", "call_sid": "CA1", "stream_sid": "MZ1", "ended_by": "stop",
        "ended_at": "2026-01-02T03:04:05Z", "duration_s": 4.5,
    }  # fmt: skip


def test_a_turn_boundary_is_its_own_event() -> None:
    """Flux's turn boundaries go to the feed under their own names, with the turn so far and its place in the
    call."""
    turn = TurnChanged(
        call_sid="CA1", stream_sid="MZ1", track="inbound", moment="turn.eager_end", turn_index=3, text="so yes",
        start=1.25, end=2.5,
    )  # fmt: skip
    assert live.payload(turn.moment, turn) == {
        "type": "turn.eager_end", "call_sid": "CA1", "stream_sid": "MZ1", "track": "inbound", "turn_index": 3,
        "text": "so yes", "start": 1.25, "end": 2.5,
    }  # fmt: skip
    assert {live.TURN_STARTED, live.TURN_EAGER_END, live.TURN_RESUMED} == {str(m) for m in TurnMoment}
    assert {live.TURN_STARTED, live.TURN_EAGER_END, live.TURN_RESUMED} <= set(live.KINDS)


def test_something_else_is_no_call_event() -> None:
    """An object that is no call event is a TypeError, not a silent empty event."""
    with pytest.raises(TypeError, match="not a call event: dict"):
        live.payload(live.TRANSCRIPT, {})


def test_the_feeds_own_frames_carry_no_id() -> None:
    """feed.* frames have no id line, so a client's Last-Event-ID stays on the last call event."""
    assert (
        live.feed_frame(live.FEED_BEHIND, "redis")
        == b'event: feed.behind\ndata: {"type":"feed.behind","reason":"redis"}\n\n'
    )


def test_once_framed_an_event_keeps_its_json_not_the_call_event() -> None:
    """fields() is the same object before and after framing, which lets the call event go (memory)."""
    event = live.LiveEvent((7, 1), live.TRANSCRIPT, "CA1", 0.0, transcript())
    before = event.fields()
    event.frame()
    assert event.source is None
    assert event.fields() == before


def test_an_alert_is_its_own_event_with_every_field() -> None:
    """`call.alert` carries every field of the alert, its time in UTC with a Z, and is a kind of the feed."""
    alert = Alert(
        alert_id="a1", call_sid="CA1", rule="cancel", kind="said", speaker="caller", track="inbound",
        phrase="cancel my account", text="Cancel my account.", start=1.5, end=2.5, raised_at=T,
    )  # fmt: skip
    assert live.payload(live.CALL_ALERT, alert) == {
        "type": "call.alert", "alert_id": "a1", "call_sid": "CA1", "rule": "cancel", "kind": "said",
        "speaker": "caller", "track": "inbound", "phrase": "cancel my account", "text": "Cancel my account.",
        "start": 1.5, "end": 2.5, "raised_at": "2026-01-02T03:04:05Z",
    }  # fmt: skip
    assert live.CALL_ALERT in live.KINDS
