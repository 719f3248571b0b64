"""The calls' own counters into the Prometheus metrics: once a second, and when a call finishes.

A frame only adds to plain integers on its call (`TrackCounters`, `CallSession.messages_in`); `CallMeter`
reports what changed since its last look, so the metrics cost nothing per frame and a scrape is at most
`SAMPLE_INTERVAL_S` behind.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

from service import mulaw
from service.calls.pipeline.track import TrackStream
from service.calls.stream.ending import Ending
from service.calls.stream.session import CallSession
from service.metrics import (
    AUDIO_BUFFERED,
    AUDIO_LOST,
    AUDIO_RECEIVED,
    AUDIO_SPOOLED,
    CALLS,
    CALLS_ACTIVE,
    DEEPGRAM_RESULTS,
    DEEPGRAM_SENT_BYTES,
    DEEPGRAM_SENT_MESSAGES,
    TWILIO_MESSAGES,
)

SAMPLE_INTERVAL_S = 1.0


# What a track's own counters (`TrackCounters`) feed: field, metric, its labels, and the unit divisor (bytes
# of audio are reported as seconds).
_FROM_TRACK_COUNTERS: tuple[tuple[str, Counter, dict[str, str], int], ...] = (
    ("bytes_sent", DEEPGRAM_SENT_BYTES, {}, 1),
    ("messages_sent", DEEPGRAM_SENT_MESSAGES, {}, 1),
    ("bytes_spooled", AUDIO_SPOOLED, {}, mulaw.BYTES_PER_SECOND),
    ("bytes_lost", AUDIO_LOST, {}, mulaw.BYTES_PER_SECOND),
    ("interims", DEEPGRAM_RESULTS, {"kind": "interim"}, 1),
    ("finals", DEEPGRAM_RESULTS, {"kind": "final"}, 1),
)


class CallMeter:
    """Adds the calls' own counters to the metrics: `sample` once a second, `finished` at the end of a call."""

    def __init__(self) -> None:
        # What was already reported, by id() of the track's counters, while its call is active.
        self._tracks: dict[int, dict[str, int]] = {}
        self._messages: dict[int, int] = {}  # by id() of the session
        self._received: dict[int, int] = {}  # audio bytes received, by id() of the track's input

    def started(self) -> None:
        CALLS_ACTIVE.inc()

    def sample(self, sessions: Iterable[CallSession]) -> None:
        buffered = 0
        for session in sessions:
            self._report(session)
            buffered += sum(stream.waiting_bytes for stream in session.streams)
        AUDIO_BUFFERED.set(buffered / mulaw.BYTES_PER_SECOND)

    def finished(self, session: CallSession) -> None:
        self._report(session)
        self._messages.pop(id(session), None)
        for stream in session.streams:
            self._tracks.pop(id(stream.counters), None)
        for track in session.tracks.values():
            self._received.pop(id(track), None)
        CALLS.labels(ended_by=ended_by_label(session.ended_by)).inc()
        CALLS_ACTIVE.dec()

    def _report(self, session: CallSession) -> None:
        key = id(session)
        messages = session.messages_in - self._messages.get(key, 0)
        if messages:
            TWILIO_MESSAGES.inc(messages)
            self._messages[key] = session.messages_in
        for name, track in session.tracks.items():
            received = track.received_bytes
            _add(
                AUDIO_RECEIVED.labels(track=name),
                (received - self._received.get(id(track), 0)) / mulaw.BYTES_PER_SECOND,
            )
            self._received[id(track)] = received
        for stream in session.streams:
            self._report_stream(stream)

    def _report_stream(self, stream: TrackStream) -> None:
        counters = stream.counters
        now = {field: getattr(counters, field) for field, *_ in _FROM_TRACK_COUNTERS}
        before = self._tracks.get(id(counters), {})
        for field, metric, labels, divisor in _FROM_TRACK_COUNTERS:
            _add(metric.labels(**labels) if labels else metric, (now[field] - before.get(field, 0)) / divisor)
        self._tracks[id(counters)] = now


def _add(counter: Counter, amount: float) -> None:
    if amount > 0:
        counter.inc(amount)


def ended_by_label(ended_by: Ending | None) -> str:
    """How the stream ended, without a rejection's reason: a label takes a fixed set of values, never free text."""
    return ended_by.how.value if ended_by is not None else "closed_before_start"
