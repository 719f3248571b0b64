"""Protocol layer (pure, no I/O): the live feed's events, their ids and their Server-Sent Events frames.

A call event (`calls/events.py`, `calls/transcript.py`) becomes a `LiveEvent`: an id, a kind, its call and, only
when someone reads it, its JSON. The JSON is made lazily and once (`LiveEvent.frame`), so a call that nobody
watches pays for an id and an append, not for serialization. Ids are `<milliseconds>-<sequence>`, the shape of a
Redis Stream entry id: in-process ids are made here (`IdClock`), with REDIS_URL they are Redis's own, so every
worker names an event alike and `Last-Event-ID` compares the same way everywhere. docs/live.md and the
`LiveEvent` schemas of openapi.json document the format.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from service.alerts.matching import Alert
from service.calls.events import CallEnded, CallStarted, CallStateChanged, TurnChanged
from service.calls.transcript import Transcript, transcript_data
from service.stt.events import TurnMoment

EventId = tuple[int, int]  # (milliseconds, sequence): ordered as Redis orders stream ids

CALL_STARTED: Final = "call.started"
TRANSCRIPT: Final = "transcript"
CALL_STATE: Final = "call.state"
CALL_ENDED: Final = "call.ended"
CALL_ALERT: Final = "call.alert"  # an ALERT_RULES rule fired (`service/alerts/`)
# A turn-based engine's (Flux's) turn boundaries, as the seam names them.
TURN_STARTED: Final = str(TurnMoment.STARTED)
TURN_EAGER_END: Final = str(TurnMoment.EAGER_END)
TURN_RESUMED: Final = str(TurnMoment.RESUMED)
KINDS: Final = (
    CALL_STARTED, TRANSCRIPT, CALL_STATE, TURN_STARTED, TURN_EAGER_END, TURN_RESUMED, CALL_ALERT, CALL_ENDED
)  # fmt: skip
# The feed's own news (no id: a client's Last-Event-ID stays on the last call event it saw).
FEED_BEHIND: Final = "feed.behind"  # events may be missing: replay window passed, or Redis unreachable
FEED_LIVE: Final = "feed.live"  # caught up again after feed.behind
FEED_DROPPED: Final = "feed.dropped"  # the last event of a subscriber that fell too far behind
FEED_CLOSING: Final = "feed.closing"  # the last event of every subscriber when the process stops: reconnect

# What a transcript event does without, of `transcript_data`: the words (an event per interim stays ~0.3 KB in
# the replay buffer; the stored transcript has them). Every other field goes out, a new one included.
FEED_LEAVES_OUT: Final = frozenset({"words"})

_ID: Final = re.compile(r"(\d{1,15})-(\d{1,9})")


class BadEventId(ValueError):
    """A Last-Event-ID that is not `<milliseconds>-<sequence>`."""


def parse_id(text: str) -> EventId:
    match = _ID.fullmatch(text.strip())
    if match is None:
        raise BadEventId("must be an event id the feed sent, such as 1733100000000-0")
    return int(match[1]), int(match[2])


def format_id(event_id: EventId) -> str:
    return f"{event_id[0]}-{event_id[1]}"


class IdClock:
    """In-process ids: wall-clock milliseconds, and a sequence within one millisecond; always increasing."""

    __slots__ = ("_last", "_now_ms")

    def __init__(self, now_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        self._last: EventId = (0, 0)

    def next(self) -> EventId:
        ms = self._now_ms()
        last_ms, last_seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return self._last


@dataclass(slots=True)
class LiveEvent:
    """One event of the feed. `source` is the call event (in-process); `data` its JSON, made once when needed."""

    id: EventId
    kind: str
    call_sid: str
    at: float  # monotonic seconds when this process got it: the replay window counts from here
    source: object = None
    data: bytes | None = None
    _frame: bytes | None = field(default=None, repr=False)

    def json(self) -> bytes:
        if self.data is None:
            self.data = orjson.dumps(payload(self.kind, self.source))
            self.source = None  # the buffer keeps ~0.3 KB of JSON from here on, not the call event (~2.5 KB)
        return self.data

    def fields(self) -> dict[str, Any]:
        """The event's JSON object, as a dict (made from the call event, or read from the JSON that came)."""
        if self.source is not None:
            return payload(self.kind, self.source)
        loaded: dict[str, Any] = orjson.loads(self.json())
        return loaded

    def frame(self) -> bytes:
        """The SSE frame (`id:`, `event:`, `data:`), made once however many subscribers read it."""
        if self._frame is None:
            self._frame = b"id: %s\nevent: %s\ndata: %s\n\n" % (
                format_id(self.id).encode(),
                self.kind.encode(),
                self.json(),
            )
        return self._frame


def payload(kind: str, source: object) -> dict[str, Any]:
    """The JSON object of one call event (the `LiveEvent` schemas in openapi.json)."""
    if isinstance(source, Transcript):
        return transcript_payload(source)
    if isinstance(source, CallStateChanged):
        return {
            "type": kind, "call_sid": source.call_sid, "stream_sid": source.stream_sid, "track": source.track,
            "state": str(source.state), "reason": source.reason, "at": timestamp(source.at),
        }  # fmt: skip
    if isinstance(source, TurnChanged):
        return {
            "type": kind, "call_sid": source.call_sid, "stream_sid": source.stream_sid, "track": source.track,
            "turn_index": source.turn_index, "text": source.text, "start": source.start, "end": source.end,
        }  # fmt: skip
    if isinstance(source, CallStarted):
        return {
            "type": kind, "call_sid": source.call_sid, "stream_sid": source.stream_sid,
            "from_number": source.from_number, "to_number": source.to_number, "direction": source.direction,
            "tracks": list(source.tracks), "started_at": timestamp(source.started_at),
        }  # fmt: skip
    if isinstance(source, CallEnded):
        return {
            "type": kind, "call_sid": source.call_sid, "stream_sid": source.stream_sid, "ended_by": source.ended_by,
            "ended_at": timestamp(source.ended_at), "duration_s": source.summary.get("duration_s"),
        }  # fmt: skip
    if isinstance(source, Alert):
        return alert_payload(source)
    raise TypeError(f"not a call event: {type(source).__name__}")


def alert_payload(alert: Alert) -> dict[str, Any]:
    """`call.alert`: every field of the `Alert` by its name (the webhook's `data` has the same), `raised_at` as
    an ISO time."""
    fields = {item.name: getattr(alert, item.name) for item in dataclasses.fields(alert)}
    return {"type": CALL_ALERT, **fields, "raised_at": timestamp(alert.raised_at)}


def transcript_payload(transcript: Transcript) -> dict[str, Any]:
    return {"type": TRANSCRIPT, **transcript_data(transcript, leave_out=FEED_LEAVES_OUT)}


def feed_frame(kind: str, reason: str) -> bytes:
    """A frame of the feed's own (`feed.behind`, `feed.live`, `feed.dropped`): no id, so replay is unaffected."""
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps({"type": kind, "reason": reason}))


def closing_frame(reason: str, retry_ms: int) -> bytes:
    """`feed.closing`: the process is stopping, the response ends after this, and the client should reconnect with
    Last-Event-ID after `retry_ms` (elsewhere, behind a load balancer, or here once the process is back).

    The SSE `retry:` field sets the same delay for EventSource's own reconnection, so a page reconnects without
    any code of its own; `retry_ms` in the JSON says it to clients that read the data only."""
    data = orjson.dumps({"type": FEED_CLOSING, "reason": reason, "retry_ms": retry_ms})
    return b"retry: %d\nevent: %s\ndata: %s\n\n" % (retry_ms, FEED_CLOSING.encode(), data)


def timestamp(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
