"""Fanout: every event to every observer in order, one observer's bug kept from the others, and deciders (the
alerts) last but first for a stream's end, so that what they decide then is stored before the end."""

from __future__ import annotations

import datetime

from service.calls.coverage import Outcome
from service.calls.events import CallEnded, CallStarted, CallStateChanged, TurnChanged
from service.calls.observers import Fanout
from service.calls.transcript import Transcript

NOW = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)


class Named:
    def __init__(self, name: str, seen: list[tuple[str, str]], *, fails: bool = False) -> None:
        self.name, self.seen, self.fails = name, seen, fails

    def _note(self, kind: str) -> None:
        self.seen.append((kind, self.name))
        if self.fails:
            raise RuntimeError("an observer's bug")

    def call_started(self, event: CallStarted) -> None:
        self._note("started")

    def transcript(self, transcript: Transcript) -> None:
        self._note("transcript")

    def call_state(self, event: CallStateChanged) -> None:
        self._note("state")

    def turn(self, event: TurnChanged) -> None:
        self._note("turn")

    def spool_outcome(self, outcome: Outcome) -> None:
        self._note("outcome")

    def call_ended(self, event: CallEnded) -> None:
        self._note("ended")


def ended() -> CallEnded:
    return CallEnded(
        call_sid="CA1", stream_sid="MZ1", ended_at=NOW, ended_by="stop", deepgram_request_ids=(), audio_s_by_track={}
    )


def test_deciders_come_last_but_first_at_a_streams_end() -> None:
    seen: list[tuple[str, str]] = []
    store, feed, alerts = (Named(name, seen) for name in ("store", "feed", "alerts"))
    fanout = Fanout([store, feed], deciders=[alerts])
    fanout.spool_outcome(Outcome(call_sid="CA1", stream_sid="MZ1", track="inbound", entry_id="e1"))
    fanout.call_ended(ended())
    assert seen == [
        ("outcome", "store"), ("outcome", "feed"), ("outcome", "alerts"),
        ("ended", "alerts"), ("ended", "store"), ("ended", "feed"),
    ]  # fmt: skip


def test_one_observers_bug_reaches_neither_the_call_nor_the_others() -> None:
    seen: list[tuple[str, str]] = []
    fanout = Fanout([Named("broken", seen, fails=True), Named("store", seen)], deciders=[Named("alerts", seen)])
    fanout.call_ended(ended())
    assert seen == [("ended", "alerts"), ("ended", "broken"), ("ended", "store")]
