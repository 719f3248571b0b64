"""Adapter: the `CallObserver` that runs ALERT_RULES on every call, and hands each alert to its sinks.

`AlertWatch` keeps a `CallMatcher` (`matching.py`) per call of this process, from its first stream's start to
its end. Each final transcript goes through the call's matcher on the audio path, and each alert it raises goes
at once to every `AlertSink`: the store (its row and its `call.alert` webhook, queued) and the live feed (its
`call.alert` event, queued), with one log line. Nothing here waits: an alert leaves within the final's own
turn of the event loop.

A stream handed over ends only itself: its call goes on in another process, which has its own matcher (so an
`absent_within_s` rule decided there knows only the words that process heard). Batch transcripts (audio from
the spool, transcribed after live gave up) are not matched: alerts are live, and the call is usually over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from service.alert_rules import AlertRule
from service.alerts.matching import Alert, CallMatcher
from service.calls.coverage import Outcome
from service.calls.events import CallEnded, CallStarted, CallStateChanged, TurnChanged
from service.calls.transcript import Transcript
from service.times import Clock, utc_now

log = structlog.get_logger("callscribe.alerts")
HANDED_OVER = "handed_over"  # EndedBy.HANDED_OVER: the call goes on elsewhere, and so does its matching


class AlertSink(Protocol):
    def alert(self, alert: Alert) -> None: ...


class AlertWatch:
    """ALERT_RULES against every call's finals; each alert to every sink, one sink's bug kept from the others."""

    def __init__(
        self,
        rules: Sequence[AlertRule],
        sinks: Sequence[AlertSink],
        *,
        speakers: Callable[[str], str],
        clock: Clock = utc_now,
    ) -> None:
        self._rules = tuple(rules)
        self._sinks = tuple(sinks)
        self._speakers = speakers  # a track's speaker label (`speaker_for`)
        self._clock = clock
        self._calls: dict[str, CallMatcher] = {}

    def call_started(self, event: CallStarted) -> None:
        if self._rules and event.call_sid not in self._calls:
            self._calls[event.call_sid] = CallMatcher(
                event.call_sid, self._rules, tracks=event.tracks,
                speakers={track: self._speakers(track) for track in ("inbound", "outbound")},
            )  # fmt: skip

    def transcript(self, transcript: Transcript) -> None:
        matcher = self._calls.get(transcript.call_sid)
        if matcher is not None and transcript.is_final and not transcript.batch:
            self._raise(matcher.final(transcript, self._clock()))

    def call_state(self, event: CallStateChanged) -> None:
        pass

    def turn(self, event: TurnChanged) -> None:
        pass

    def spool_outcome(self, outcome: Outcome) -> None:
        pass  # batch's words raise no alerts (docs/alerts.md)

    def call_ended(self, event: CallEnded) -> None:
        matcher = self._calls.pop(event.call_sid, None)
        if matcher is not None and event.ended_by != HANDED_OVER:
            self._raise(matcher.ended(self._clock()))

    def _raise(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            for sink in self._sinks:
                try:
                    sink.alert(alert)
                except Exception:
                    log.exception("alerts.sink_failed", sink=type(sink).__name__, alert_id=alert.alert_id)
            # Once the sinks have it (queued for the store, published to the feed): the bench times this line
            # against the final's `transcript` line (benchmarks/analysis.py `alert_latencies`).
            log.info(
                "call.alert", call_sid=alert.call_sid, track=alert.track, rule=alert.rule, kind=alert.kind,
                speaker=alert.speaker, start=alert.start, end=alert.end, alert_id=alert.alert_id,
            )  # fmt: skip
