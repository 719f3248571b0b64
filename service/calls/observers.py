"""Where a call's events go: the log line of each transcript, and the fan-out to every observer.

Observers run on the audio path, so each must queue and return; `Fanout` keeps one observer's bug from
reaching the call or the other observers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import structlog

from service.calls.coverage import Outcome
from service.calls.events import CallEnded, CallObserver, CallStarted, CallStateChanged, TurnChanged
from service.calls.transcript import Transcript, transcript_data

log = structlog.get_logger("callscribe.calls")
# What the transcript's log line does without, of `transcript_data`: the words (a line per result stays short;
# the database keeps them). Every other field is logged as it is, a new one included.
LOG_LEAVES_OUT = frozenset({"words"})


class LogObserver:
    """Transcripts as log lines; the session logs call.started and call.ended itself."""

    def call_started(self, event: CallStarted) -> None:
        pass

    def transcript(self, transcript: Transcript) -> None:
        log_transcript(transcript)

    def call_state(self, event: CallStateChanged) -> None:
        pass  # the track logs its own deepgram.connected, deepgram.reconnecting and deepgram.failed lines

    def turn(self, event: TurnChanged) -> None:
        pass  # live news for integrators; the turn's words are logged with its final transcript

    def call_ended(self, event: CallEnded) -> None:
        pass

    def spool_outcome(self, outcome: Outcome) -> None:
        pass  # the batch worker logs batch.delivered (and spool.expired is logged where it happens)


class Fanout:
    """Every call event to every observer, in order; one observer's bug never reaches the call or the others.

    `deciders` come last, after what they act on is stored and published (an alert after the final that raised
    it), but first for a stream's end: what they decide then (an alert for a disclosure never made) is queued
    before the end itself, so the call's `call.completed` carries it.
    """

    def __init__(self, observers: Sequence[CallObserver], *, deciders: Sequence[CallObserver] = ()) -> None:
        self._observers = (*observers, *deciders)
        self._ending = (*deciders, *observers)

    def call_started(self, event: CallStarted) -> None:
        for observer in self._observers:
            self._guarded(observer.call_started, event)

    def transcript(self, transcript: Transcript) -> None:
        for observer in self._observers:
            self._guarded(observer.transcript, transcript)

    def call_state(self, event: CallStateChanged) -> None:
        for observer in self._observers:
            self._guarded(observer.call_state, event)

    def turn(self, event: TurnChanged) -> None:
        for observer in self._observers:
            self._guarded(observer.turn, event)

    def call_ended(self, event: CallEnded) -> None:
        for observer in self._ending:
            self._guarded(observer.call_ended, event)

    def spool_outcome(self, outcome: Outcome) -> None:
        for observer in self._observers:
            self._guarded(observer.spool_outcome, outcome)

    @staticmethod
    def _guarded(method: Callable[[Any], None], event: object) -> None:
        try:
            method(event)
        except Exception:
            log.exception("observer.failed", observer=type(getattr(method, "__self__", method)).__name__)


def log_transcript(transcript: Transcript) -> None:
    """The transcript sink of this release: one log line per interim or final result, of `transcript_data`."""
    fields = transcript_data(transcript, leave_out=LOG_LEAVES_OUT)
    fields["confidence"] = round(transcript.confidence, 3)
    log.info("transcript", **fields)
