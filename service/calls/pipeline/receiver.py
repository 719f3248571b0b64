"""Orchestration: the receiving half of a track's engine side, what the engine's events do to the track.

What the engine settles (`SttSettled`: each adapter says when) is acknowledged in the ledger, so a replay
after a failure resends exactly the rest; a final for audio already final before a reconnect is counted, not
emitted again; a result's transcripts, placed on the call's timeline (`timeline.py`), go to the sinks.

With both tracks on one connection (multichannel), each result's channel picks the track's timeline, and the
ledger (interleaved audio) is final only as far as every channel is settled.
"""

from __future__ import annotations

import asyncio
from typing import Any

from service.calls.counters import TrackCounters
from service.calls.events import TurnSink
from service.calls.pipeline.engine_state import Connection
from service.calls.pipeline.ledger import AudioLedger
from service.calls.pipeline.timeline import TrackTimeline, repeats_a_final
from service.calls.transcript import TranscriptSink
from service.metrics import RESULT_LATENCY
from service.stt.events import SttMetadata, SttResult, SttServerError, SttSettled, SttTurn


class TrackReceiver:
    """Reads one track's Deepgram connections, one connection at a time."""

    def __init__(
        self,
        *,
        ledger: AudioLedger,
        counters: TrackCounters,
        timelines: list[TrackTimeline],
        emit: TranscriptSink,
        turns: TurnSink,
        log: Any,
    ) -> None:
        self._ledger = ledger
        self._turns = turns
        self._counters = counters
        self._timelines = timelines  # by channel index
        self._emit = emit
        self._log = log
        self._last_final_end_s = [0.0] * len(timelines)  # per channel, on the call's timeline
        self._settled_to_s = [0.0] * len(timelines)  # per channel: how far the engine settled it on this connection

    async def run(self, connection: Connection) -> None:
        """Deepgram's messages on `connection` until it closes (an abnormal close raises SttError)."""
        loop = asyncio.get_running_loop()
        async for event in connection.live.events():
            heard_at = connection.last_heard_at = loop.time()
            if isinstance(event, SttResult):
                if self._on_result(connection, event):
                    RESULT_LATENCY.observe(loop.time() - heard_at)
            elif isinstance(event, SttSettled):
                self._settle(event)
            elif isinstance(event, SttTurn):
                self._on_turn(event)
            elif isinstance(event, SttMetadata):
                self._remember_request(event.request_id)
            elif isinstance(event, SttServerError):
                track = "+".join(timeline.track for timeline in self._timelines)
                self._log.warning("deepgram.error_message", track=track, description=event.description)

    def _on_result(self, connection: Connection, result: SttResult) -> bool:
        """Count the result and emit its transcripts; True when any went to the sinks."""
        if result.request_id:
            self._remember_request(result.request_id)
        channel = result.channel
        if not 0 <= channel < len(self._timelines):
            self._log.warning("deepgram.unknown_channel", channel=channel, why="a result for a channel not sent")
            return False
        offset_s = self._ledger.call_time(0.0)  # where this connection's audio starts on the call's timeline
        if result.is_final:
            connection.produced_results = True
            if not self._take_final(result, channel, offset_s):
                return False
        else:
            self._counters.interims += 1
        if not result.text:
            return False  # Deepgram's results for silence: nothing to show or keep
        for transcript in self._timelines[channel].transcripts(result, offset_s):
            self._emit(transcript)
        return True

    def _on_turn(self, event: SttTurn) -> None:
        """A turn boundary goes to the live feed, on the call's timeline (a turn's end comes as its final)."""
        channel = event.channel
        if not 0 <= channel < len(self._timelines):
            return
        turn = self._timelines[channel].turn(event, self._ledger.call_time(0.0))
        if turn.end > self._last_final_end_s[channel]:  # else a replay's, for a turn already final
            self._turns(turn)

    def _settle(self, settled: SttSettled) -> None:
        """Audio the engine settled is acknowledged, as far as every channel is settled."""
        reach = self._settled_to_s
        channel = settled.channel
        if channel is None:
            for index, until_s in enumerate(reach):
                reach[index] = max(until_s, settled.until_s)
        elif 0 <= channel < len(reach):
            reach[channel] = max(reach[channel], settled.until_s)
        self._ledger.acknowledge(min(reach))

    def _take_final(self, result: SttResult, channel: int, offset_s: float) -> bool:
        """A final, counted; False when its audio was final already (before a reconnect)."""
        self._counters.finals += 1
        end_s = result.end + offset_s
        if repeats_a_final(end_s, result.duration, self._last_final_end_s[channel]):
            self._counters.finals_repeated += 1
            return False
        self._last_final_end_s[channel] = max(self._last_final_end_s[channel], end_s)
        return True

    def connection_opened(self) -> None:
        """A new connection's results are timed from its own start."""
        self._settled_to_s = [0.0] * len(self._timelines)

    def _remember_request(self, request_id: str) -> None:
        if request_id and request_id not in self._counters.request_ids:  # Flux may give none: nothing to keep
            self._counters.request_ids.append(request_id)
