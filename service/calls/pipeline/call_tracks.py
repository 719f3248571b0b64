"""Orchestration: a call's tracks and the engine streams they go to.

One `TrackStream` per track, or, with DEEPGRAM_CONNECTIONS=per_call and an engine that has multichannel, one for
both tracks (`ChannelInput` then places each track's frames on that stream's channels). The session
(`calls/stream/session.py`) gives each Twilio frame to its track's input here, and runs each stream's task.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from service import mulaw
from service.calls.counters import CallInfo
from service.calls.coverage import Part, TrackTally, stream_parts
from service.calls.events import TurnSink
from service.calls.pipeline.engines import LiveEngines
from service.calls.pipeline.interleave import CHANNELS
from service.calls.pipeline.spooling import Spool
from service.calls.pipeline.track import ChannelInput, StateReport, TrackStream
from service.calls.transcript import TranscriptSink
from service.errors import SttError
from service.settings import Settings


class CallTracks:
    """Where each track's frames go (`inputs`, by track) and the engine streams behind them (`streams`)."""

    def __init__(
        self,
        call: CallInfo,
        *,
        settings: Settings,
        engines: LiveEngines,
        spool: Spool,
        emit: TranscriptSink,
        turns: TurnSink,
        on_failure: Callable[[TrackStream, SttError], Awaitable[None]],
        report_state: StateReport,
        log: Any,
        rng: random.Random | None = None,
    ) -> None:
        self.inputs: dict[str, TrackStream | ChannelInput] = {}
        self.streams: list[TrackStream] = []
        # Together, the tracks go by channel index (inbound first, as the interleaver places them), whatever
        # order Twilio's `start` lists them in: results and spool entries go back to their track by that index.
        together = len(call.tracks) > 1 and shares_a_connection(settings, engines)
        for channels in [CHANNELS] if together else [(name,) for name in call.tracks]:
            stream = TrackStream(
                name="+".join(channels), call=call, channels=channels, settings=settings, engines=engines, spool=spool,
                emit=emit, turns=turns, on_failure=on_failure, log=log, report_state=report_state, rng=rng,
            )  # fmt: skip
            self.streams.append(stream)
            for name in channels:
                self.inputs[name] = ChannelInput(name, stream) if together else stream

    def heard_s(self) -> float:
        """How much audio the longest track has delivered, in seconds."""
        received = max((track.received_bytes for track in self.inputs.values()), default=0)
        return received / mulaw.BYTES_PER_SECOND

    def audio_s_by_track(self) -> dict[str, float]:
        return {name: round(track.received_bytes / mulaw.BYTES_PER_SECOND, 2) for name, track in self.inputs.items()}

    def coverage(self, paused: Mapping[str, int]) -> list[Part]:
        """Where each track's audio went (`calls/coverage.py`), from its stream's tally, what Twilio delivered, and
        what a pause replaced with silence (`paused`, bytes by track)."""
        tallies: dict[str, TrackTally] = {}
        for stream in self.streams:
            tallies.update(stream.counters.tallies)
        for name, track in self.inputs.items():
            tally = tallies.setdefault(name, TrackTally())
            tally.received = track.received_bytes
            tally.paused = paused.get(name, 0)
        return stream_parts(tallies)

    def end(self) -> None:
        """No more frames: each stream flushes, closes its engine stream and any spool segment."""
        for stream in self.streams:
            stream.end()

    def abandon(self) -> None:
        """Shutdown ran out of time: each stream spools what the engine has not made final."""
        for stream in self.streams:
            stream.abandon()


def shares_a_connection(settings: Settings, engines: LiveEngines) -> bool:
    """Both tracks of a call go on one connection: DEEPGRAM_CONNECTIONS=per_call, on an engine with multichannel
    (Flux has none: start-up says so, and each track gets its own). With a fallback, both engines need it."""
    return settings.deepgram_connections == "per_call" and engines.max_channels > 1
