"""Orchestration: one track of a call on Deepgram live, reconnecting until every byte is final or spooled.

`push` runs on the Twilio side and never waits: audio goes into the track's ledger (bounded by
AUDIO_BUFFER_S) or, once live transcription cannot cover it, straight into a spool segment (`spooling.py`).
`run` owns the Deepgram side, whose state is one `EngineState`: connect; send (`sender.py`: a backlog at
once, a replay after a failure paced to 1.25x real time, KeepAlive when idle, CloseStream at the end) while
reading the results concurrently (`receiver.py`); on a retryable failure reconnect with full-jitter backoff
and replay what was not yet final; on a fatal one, or an outage longer than DEEPGRAM_OUTAGE_S, spool the rest.

With DEEPGRAM_FALLBACK_URL each connection asks the track's `TrackChoice` (`failover.py`) for its engine: a
failure of the primary that a fallback can fix moves the track there at once, with no backoff wait, and the
replay carries what was not final, so every word comes once; the outage bound counts across both engines.

With DEEPGRAM_CONNECTIONS=per_call, one `TrackStream` carries both tracks of a call (`channels` names them,
channel 0 inbound): `ChannelInput.push` places each track's frames on the stream's clock (`interleave.py`),
the ledger holds the interleaved audio (so replay, KeepAlive and CloseStream work on it unchanged), results
go back to their track by `channel_index` (`receiver.py`), and the spool gets one mono entry per track.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from service import mulaw
from service.calls.counters import CallInfo, TrackCounters
from service.calls.coverage import TrackTally
from service.calls.events import CallState, TurnSink
from service.calls.pipeline.engine_state import Connection, EngineSide, EngineState
from service.calls.pipeline.engines import LiveEngines
from service.calls.pipeline.failover import Move
from service.calls.pipeline.interleave import CHANNELS, Interleaver
from service.calls.pipeline.ledger import AudioLedger
from service.calls.pipeline.receiver import TrackReceiver
from service.calls.pipeline.sender import TrackSender
from service.calls.pipeline.spooling import ChannelSpooler, GuardedSegment, SplitSegment, Spool, TrackSpooler
from service.calls.pipeline.timeline import TrackTimeline
from service.calls.transcript import TranscriptSink, speaker_for
from service.errors import SttError, SttFailure, SttRejected, SttUnavailable
from service.metrics import DEEPGRAM_CONNECTS, DEEPGRAM_FAILOVERS, DEEPGRAM_FAILURES, DEEPGRAM_RECONNECTS
from service.retry import Outage, backoff
from service.settings import Settings
from service.stt.engine import LiveStream

StateReport = Callable[[str, CallState, str], None]  # (track, state, reason): the live feed's call.state


def _unreported(_track: str, _state: CallState, _reason: str) -> None:
    pass


class TrackStream:
    """One Deepgram stream of a call (one track, or both interleaved): its audio's ledger, its Deepgram side,
    and its spooler."""

    def __init__(
        self,
        *,
        name: str,
        call: CallInfo,
        channels: tuple[str, ...] = (),
        settings: Settings,
        engines: LiveEngines,
        spool: Spool,
        emit: TranscriptSink,
        turns: TurnSink,
        on_failure: Callable[[TrackStream, SttError], Awaitable[None]],
        log: Any,
        report_state: StateReport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.channels = channels or (name,)  # the tracks it carries, by channel index
        self._report_state: StateReport = report_state or _unreported
        self.counters = TrackCounters(tallies={track: TrackTally() for track in self.channels})
        self._settings = settings
        # The process's engines (one, or the primary and a fallback), and this track's choice among them.
        self._engines = engines
        self._choice = self._engines.track_choice()
        self._failure = ""  # what the last failed connection said, for the failover line
        # The open connection's engine, where its audio starts, and where its replay ends (on the ledger).
        self._open_span: tuple[str, int, int] | None = None
        self._call_offset_s = call.offset_s  # the engines' record is on the call's timeline, like the spool's
        self._on_failure = on_failure
        self._log = log
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._ledger = AudioLedger(channels=len(self.channels))
        self.bytes_per_second = self._ledger.bytes_per_second  # of every channel: 16 000 for two
        self._side = EngineSide()
        self._sender = TrackSender(ledger=self._ledger, side=self._side, counters=self.counters, settings=settings)
        self._wakeup = self._sender.wakeup
        # The read loop's send (see `TrackSender.send_now`), bound here so that call goes straight to the sender.
        self.send_now: Callable[[], Awaitable[None]] = self._sender.send_now
        # Batching, the read loop never sends (`send_now` would return at once): it need not be awaited at all.
        self.reader_sends = not self._sender.batching
        # Diarization separates voices sharing one track; with both tracks, each track is already one side.
        self._diarize = settings.deepgram_diarize and len(call.tracks) == 1
        timelines = [
            TrackTimeline(
                call_sid=call.call_sid,
                stream_sid=call.stream_sid,
                track=track,
                speaker=speaker_for(settings, track),
                diarize=self._diarize,
            )
            for track in self.channels
        ]
        self._receiver = TrackReceiver(
            ledger=self._ledger, counters=self.counters, timelines=timelines, emit=emit, turns=turns, log=log
        )
        spoolers = [
            TrackSpooler(spool, call=call, track=track, counters=self.counters, log=log) for track in self.channels
        ]
        self._spooler: TrackSpooler | ChannelSpooler = spoolers[0] if len(spoolers) == 1 else ChannelSpooler(spoolers)
        self._interleaver = Interleaver(max_lag_ms=settings.deepgram_channel_lag_ms)
        self._last_chunks = dict.fromkeys(self.channels, 0)
        self._max_bytes = max(mulaw.FRAME_BYTES, int(settings.audio_buffer_s * self.bytes_per_second))
        self._twilio_done = asyncio.Event()

    # --- Twilio side (synchronous, never blocks) --------------------------------------------------------

    def push(self, chunk: int, payload: bytes, _timestamp_ms: int = 0) -> None:
        """Take a frame from Twilio (never waits); the caller then awaits `send_now`."""
        self._count_frame(self.channels[0], chunk)
        self._take(payload)

    def push_channel(self, track: str, chunk: int, payload: bytes, timestamp_ms: int) -> None:
        """A frame of one of the tracks this stream interleaves; what both tracks now cover goes on."""
        self._count_frame(track, chunk)
        interleaver = self._interleaver
        interleaver.add(track, timestamp_ms, payload)
        mixed = interleaver.take()
        if mixed:
            self._take(mixed)

    def _count_frame(self, track: str, chunk: int) -> None:
        """A frame of `track` came: counted, and the chunks Twilio skipped before it (its `chunk` numbers)."""
        counters = self.counters
        counters.frames_in += 1
        last = self._last_chunks[track]
        if last and chunk > last + 1:
            counters.tallies[track].chunks_missing += chunk - last - 1
        self._last_chunks[track] = chunk

    def _take(self, payload: bytes) -> None:
        """Audio for Deepgram (one track's, or both interleaved): into the ledger, or to the spool."""
        ledger = self._ledger
        segment = self._spooler.segment
        waiting = ledger.waiting_bytes + len(payload)
        if segment is None and waiting > self._max_bytes:
            segment = self._overflow()
        if segment is not None:
            segment.write(payload)
            ledger.skip(len(payload))
            return
        self._sender.queue(payload)
        counters = self.counters
        counters.peak_waiting_bytes = max(counters.peak_waiting_bytes, waiting)

    def end(self) -> None:
        """Twilio's stream ended: flush what is held, CloseStream, and close any spool segment."""
        if not self._twilio_done.is_set():
            self._flush_channels()
        self._twilio_done.set()
        self._end_live_input()

    def _flush_channels(self) -> None:
        """Both tracks on one stream: what the interleaver holds goes on, the shorter track padded to the longer
        (at the end of the stream, and for frames Twilio sent as it closed, which have no frame of the other
        track to wait for); the samples it cut are counted and said."""
        if len(self.channels) == 1:
            return
        interleaver = self._interleaver
        rest = interleaver.flush()
        if rest:
            self._take(rest)
        self._count_late(interleaver.take_late())

    def _count_late(self, late: list[int]) -> None:
        """Samples Twilio sent after their place had been padded over were cut: counted as lost, and said."""
        for track, samples in zip(CHANNELS, late, strict=True):
            if samples:
                self.counters.bytes_lost += samples
                self.counters.tallies[track].channel_lag += samples
                self._log.warning(
                    "audio.lost", track=track, lost_s=round(samples / mulaw.BYTES_PER_SECOND, 2),
                    why=f"it came more than DEEPGRAM_CHANNEL_LAG_MS ({self._settings.deepgram_channel_lag_ms} ms) "
                    "behind the other track, after its place had been filled with silence",
                )  # fmt: skip

    def _overflow(self) -> GuardedSegment | SplitSegment:
        """Deepgram is too far behind: live keeps what it holds, the rest of the track goes to the spool."""
        segment = self._spooler.start(
            self._ledger.received / self.bytes_per_second,
            f"more than AUDIO_BUFFER_S ({self._settings.audio_buffer_s:g} s) of audio waiting for Deepgram",
        )
        self._end_live_input()
        return segment

    def _end_live_input(self) -> None:
        self._side.move(EngineState.DRAINING)
        self._wakeup.set()

    @property
    def state(self) -> EngineState:
        return self._side.state

    @property
    def waiting_bytes(self) -> int:
        return self._ledger.waiting_bytes

    @property
    def received_bytes(self) -> int:
        """Audio Twilio delivered on this track, spooled or not."""
        return self._ledger.received

    # --- Deepgram side ----------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if not self._engines.configured:
                await self._give_up(SttRejected("DEEPGRAM_API_KEY is not set", failure=SttFailure.NO_KEY))
            else:
                await self._transcribe_live()
            await self._twilio_done.wait()  # a spool segment takes audio until the stream ends
        except Exception as exc:  # noqa: BLE001 - the per-track top level: a bug ends this track only, and says so
            self._log.exception("call.internal_error", track=self.name)
            await self._give_up(SttUnavailable(f"internal error: {type(exc).__name__}", failure=SttFailure.INTERNAL))
        finally:
            self._flush_channels()  # into the open spool segment, if any: frames Twilio sent as it closed
            self._spooler.close()

    async def _transcribe_live(self) -> None:
        outage = Outage(limit_s=self._settings.deepgram_outage_s)
        loop = asyncio.get_running_loop()
        while True:
            connection: Connection | None = None
            name, move = self._choice.next()
            if move is not None:
                self._moved(move)
            opened_at = loop.time()
            try:
                async with self._engines.engine(name).connect(
                    channels=len(self.channels), diarize=self._diarize
                ) as live:
                    opened_at = loop.time()
                    connection = self._connected(live, name)
                    acknowledged = self._ledger.acknowledged
                    self._open_span = (name, acknowledged, acknowledged + connection.replay_bytes)
                    await self._stream(connection)
            except SttError as exc:
                self._close_span()
                now = loop.time()
                self._failure = exc.reason
                if isinstance(exc, SttUnavailable):
                    self._side.move(EngineState.CONNECTING)
                    results = connection is not None and connection.produced_results
                    outage.connection_ended(opened_at=opened_at, now=now, produced_results=results)
                else:
                    outage.failed(now)
                failing_for_s = outage.failing_for_s(now)
                moving = self._choice.failed(name, exc, opened=connection is not None, failing_for_s=failing_for_s)
                if not moving and isinstance(exc, SttRejected):
                    await self._give_up(exc)
                    return
                if not await self._wait_to_retry(exc, outage, moving=moving):
                    return
            else:
                self._close_span()
                self._side.move(EngineState.CLOSED)
                self._spool_stragglers()
                return
            finally:
                self._close_span()  # cancelled (the shutdown's drain ran out): what was settled, all the same

    def _moved(self, move: Move) -> None:
        """This connection goes to another engine than the last: said once, counted, and what it replays."""
        DEEPGRAM_FAILOVERS.labels(to=move.to_engine, why=str(move.why)).inc()
        self._log.warning(
            "deepgram.failover", track=self.name, from_engine=move.from_engine, to_engine=move.to_engine,
            why=str(move.why), replaying_s=round(self._ledger.waiting_bytes / self.bytes_per_second, 2),
            error=self._failure,
        )  # fmt: skip

    def _close_span(self) -> None:
        """The open connection ended: the stretch its finals settled goes into the track's record of which engine
        transcribed what (joined to the last stretch when the same engine carried on). Called before anything
        releases the ledger to the spool, which would count spooled audio as settled."""
        if self._open_span is None:
            return
        engine, settled_from, replay_until = self._open_span
        self._open_span = None
        self._count_replayed(min(self._ledger.acknowledged, replay_until) - settled_from)
        bytes_per_second, offset_s = self.bytes_per_second, self._call_offset_s
        start_s = round(settled_from / bytes_per_second + offset_s, 2)
        end_s = round(self._ledger.acknowledged / bytes_per_second + offset_s, 2)
        if end_s <= start_s:
            return
        spans = self.counters.engines
        if spans and spans[-1][0] == engine and spans[-1][2] == start_s:
            spans[-1] = (engine, spans[-1][1], end_s)
        else:
            spans.append((engine, start_s, end_s))

    def _count_replayed(self, size: int) -> None:
        """A connection's replay that its finals settled (bytes of the stream): each track's share, replayed."""
        if size > 0:
            for tally in self.counters.tallies.values():
                tally.replayed += size // len(self.channels)

    def _connected(self, live: LiveStream, engine: str) -> Connection:
        DEEPGRAM_CONNECTS.inc()
        ledger = self._ledger
        ledger.restart()
        # After a failed connection (or attempt), what waits is a replay, paced; on the first, what queued while
        # it opened is only late, and goes at once.
        replay_bytes = ledger.pending_bytes if self.counters.reconnects else 0
        replaying_s = round(replay_bytes / self.bytes_per_second, 2)
        catching_up_s = round((ledger.pending_bytes - replay_bytes) / self.bytes_per_second, 2)
        self._receiver.connection_opened()
        self._log.info(
            "deepgram.connected", track=self.name, engine=engine, replaying_s=replaying_s, catching_up_s=catching_up_s
        )
        self._side.move(EngineState.OPEN)
        self._report(CallState.STREAMING, "")
        return Connection(live, replay_bytes=replay_bytes)

    def _spool_stragglers(self) -> None:
        """Audio that arrived after CloseStream went out (a message Twilio sent as the stream was closing)."""
        self._flush_channels()
        if not self._ledger.pending_chunks:
            return
        # The connection closed cleanly, so what it carried is final; only the unsent audio is left to keep.
        self._ledger.acknowledge(self._ledger.connection_sent / self.bytes_per_second)
        self._spooler.stretch(*self._ledger.release(), "arrived after the stream to Deepgram was closed")

    async def _wait_to_retry(self, error: SttError, outage: Outage, *, moving: bool = False) -> bool:
        """Back off before the next attempt (none when the track moves to another engine: it goes at once); False
        when there is nothing to retry or the outage is too long."""
        settings = self._settings
        if self._side.state is EngineState.DRAINING and self._ledger.waiting_bytes == 0:
            self._side.move(EngineState.CLOSED)  # all Deepgram was sent is final, and no more comes
            return False
        if outage.exhausted(asyncio.get_running_loop().time()):
            await self._give_up(error, outage_s=settings.deepgram_outage_s)
            return False
        self.counters.reconnects += 1
        DEEPGRAM_RECONNECTS.labels(reason=error.kind).inc()
        self._report(CallState.RECONNECTING, error.reason)
        if moving:
            return True  # `deepgram.failover` says it, as the next connection starts
        delay = backoff(
            outage.attempts,
            base_s=settings.deepgram_backoff_initial_s,
            cap_s=settings.deepgram_backoff_max_s,
            rng=self._rng,
        )
        self._log.warning(
            "deepgram.reconnecting", track=self.name, why=error.reason, attempt=outage.attempts, in_s=round(delay, 3)
        )
        await asyncio.sleep(delay)
        return True

    async def _stream(self, connection: Connection) -> None:
        """One connection: the sender and the receiver, then (bounded) the last finals after CloseStream."""
        sender = asyncio.create_task(self._sender.run(connection), name=f"send-{self.name}")
        receiver = asyncio.create_task(self._receiver.run(connection), name=f"receive-{self.name}")
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if sender not in done:
                receiver.result()  # raises the SttError that ended it, if any
                raise SttUnavailable("Deepgram closed the connection before the call ended", close_code=1000)
            sender.result()
            await self._await_last_results(receiver)
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)

    async def _await_last_results(self, receiver: asyncio.Task[None]) -> None:
        timeout = self._settings.deepgram_close_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await receiver
        except TimeoutError as exc:
            raise SttUnavailable(
                f"no final results within DEEPGRAM_CLOSE_TIMEOUT_S ({timeout:g} s) of CloseStream",
                failure=SttFailure.CLOSE_TIMEOUT,
            ) from exc
        if self._ledger.unacknowledged_bytes > mulaw.FRAME_BYTES * len(
            self.channels
        ):  # timestamps are rounded; a frame is noise
            raise SttUnavailable(
                "Deepgram closed without final results for all the audio", failure=SttFailure.MISSING_FINALS
            )

    # --- Giving up ----------------------------------------------------------------------------------------

    async def _give_up(self, error: SttError, *, outage_s: float | None = None) -> None:
        """Live transcription cannot cover this track any more: what is not final, and what comes, is spooled."""
        self._close_span()
        DEEPGRAM_FAILURES.labels(reason=error.kind).inc()
        reason = error.reason if outage_s is None else f"Deepgram unavailable for {outage_s:g} s: {error.reason}"
        start_s, audio = self._ledger.release()
        self._spooler.take_over(start_s, audio, reason, stream_open=not self._twilio_done.is_set())
        self._side.move(EngineState.FAILED)
        self._report(CallState.SPOOLED, reason)
        await self._on_failure(self, error)

    def _report(self, state: CallState, reason: str) -> None:
        for track in self.channels:
            self._report_state(track, state, reason)

    def abandon(self) -> None:
        """The process is stopping and Deepgram did not finish in time: spool what is not yet final."""
        self._close_span()
        self._flush_channels()
        self._spooler.stretch(*self._ledger.release(), "callscribe stopped before Deepgram's final results")
        self._spooler.close()


class ChannelInput:
    """One track of a call whose tracks share one Deepgram stream: what the session pushes that track's frames to."""

    def __init__(self, name: str, stream: TrackStream) -> None:
        self.name = name
        self.stream = stream
        self.send_now = stream.send_now
        self.reader_sends = stream.reader_sends
        self.received_bytes = 0  # audio Twilio delivered on this track

    def push(self, chunk: int, payload: bytes, timestamp_ms: int) -> None:
        self.received_bytes += len(payload)
        self.stream.push_channel(self.name, chunk, payload, timestamp_ms)
