"""Protocol layer (no I/O): what a call tells the rest of the service as it happens.

A `CallSession` reports `CallStarted`, every `Transcript` (`receiver.py`), each track's `CallStateChanged` and
`CallEnded` (with where its audio went, `coverage.py`) to a `CallObserver`, and the batch worker each spool
entry's `Outcome`; the app fans them out to the log, the database writer (whose outbox feeds the
webhooks) and the live feed (`service/live/`). Observers are called on the audio path, so they must not block:
they queue and return.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.calls.counters import CallInfo
from service.calls.coverage import Outcome, Part
from service.calls.transcript import Transcript


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_sid: str
    stream_sid: str
    account_sid: str
    from_number: str
    to_number: str
    direction: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    started_at: datetime.datetime

    @classmethod
    def of(cls, call: CallInfo, started_at: datetime.datetime) -> CallStarted:
        """A call let in, with the caller's details from its parameters (which its stream token covered)."""
        params = call.custom_parameters
        return cls(
            call_sid=call.call_sid, stream_sid=call.stream_sid, account_sid=call.account_sid,
            from_number=params.get("from", ""), to_number=params.get("to", ""), direction=params.get("direction", ""),
            tracks=call.tracks, custom_parameters=dict(params), started_at=started_at,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_sid: str
    stream_sid: str
    ended_at: datetime.datetime
    ended_by: str
    deepgram_request_ids: tuple[str, ...]
    audio_s_by_track: dict[str, float]  # audio received from Twilio, per track
    summary: dict[str, Any] = field(default_factory=dict)  # the call.ended line's counts
    coverage: tuple[Part, ...] = ()  # where each track's audio went (`coverage.py`)


class CallState(enum.StrEnum):
    """What a track of a call is doing, as the live feed tells it (`call.state` events)."""

    STREAMING = "streaming"  # connected to Deepgram live: transcripts are coming
    RECONNECTING = "reconnecting"  # the connection failed and is being retried; the audio waits and is replayed
    SPOOLED = "spooled"  # live gave up on the track: the rest is transcribed in batch from the spool
    HANDED_OVER = "handed_over"  # this process is stopping and a new stream of the call took over elsewhere
    PAUSED = "paused"  # the call's transcription is paused (`POST /api/calls/{sid}/pause`): silence goes instead


@dataclass(frozen=True, slots=True)
class CallStateChanged:
    call_sid: str
    stream_sid: str
    track: str
    state: CallState
    reason: str  # why, in words ("" when there is nothing to add: connected)
    at: datetime.datetime


@dataclass(frozen=True, slots=True)
class TurnChanged:
    """A turn-based engine's turn boundary on a track (Flux): `moment` is the feed event's name (`TurnMoment`).

    The turn's end is its final transcript; these are the moments before it that integrators act on: someone
    started speaking, probably finished (an eager end, whose final may follow at once), or went on after all.
    """

    call_sid: str
    stream_sid: str
    track: str
    moment: str  # turn.started, turn.eager_end, turn.resumed
    turn_index: int
    text: str  # the turn's transcript so far
    start: float  # seconds on the call's timeline
    end: float


TurnSink = Callable[[TurnChanged], None]


class CallObserver(Protocol):
    def call_started(self, event: CallStarted) -> None: ...
    def transcript(self, transcript: Transcript) -> None: ...
    def call_state(self, event: CallStateChanged) -> None: ...
    def turn(self, event: TurnChanged) -> None: ...
    def call_ended(self, event: CallEnded) -> None: ...
    def spool_outcome(self, outcome: Outcome) -> None: ...  # batch transcribed a spool entry, or gave up on it
