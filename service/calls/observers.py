"""Where a call's events go: the log line of each transcript, and the fan-out to every observer.

Observers run on the audio path, so each must queue and return; `Fanout` keeps one observer's bug from
reaching the call or the other observers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import structlog

from service.calls.events import CallEnded, CallObserver, CallStarted, CallStateChanged, TurnChanged
from service.calls.transcript import Transcript

log = structlog.get_logger("callscribe.calls")


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


class Fanout:
    """Every call event to every observer; one observer's bug never reaches the call or the others."""

    def __init__(self, observers: Sequence[CallObserver]) -> None:
        self._observers = tuple(observers)

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
        for observer in self._observers:
            self._guarded(observer.call_ended, event)

    @staticmethod
    def _guarded(method: Callable[[Any], None], event: object) -> None:
        try:
            method(event)
        except Exception:
            log.exception("observer.failed", observer=type(getattr(method, "__self__", method)).__name__)


def log_transcript(transcript: Transcript) -> None:
    """The transcript sink of this release: one log line per interim or final result."""
    log.info(
        "transcript",
        call_sid=transcript.call_sid,
        stream_sid=transcript.stream_sid,
        track=transcript.track,
        is_final=transcript.is_final,
        speech_final=transcript.speech_final,
        text=transcript.text,
        start=transcript.start,
        end=transcript.end,
        confidence=round(transcript.confidence, 3),
        speaker=transcript.speaker,
        batch=transcript.batch,
    )
