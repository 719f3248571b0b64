"""Orchestration: one track of a call on Deepgram live, reconnecting until every byte is final or spooled.

`push` runs on the Twilio side and never waits: audio goes into the track's ledger (bounded by
AUDIO_BUFFER_S) or, once live transcription cannot cover it, straight into a spool segment. `run` owns the
Deepgram side: connect, send (paced to 1.25x real time while replaying), read results concurrently,
KeepAlive when idle, CloseStream at the end; on a retryable failure reconnect with full-jitter backoff and
replay what was not yet final; on a fatal one, or an outage longer than DEEPGRAM_OUTAGE_S, spool the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from service import mulaw
from service.calls.ledger import AudioLedger
from service.calls.transcript import Transcript, TranscriptSink, by_speaker, speaker_for
from service.deepgram.live import LiveConnection, SttClient
from service.deepgram.protocol import SttMetadata, SttResult, SttServerError, Word, live_options
from service.errors import SttError, SttRejected, SttUnavailable
from service.metrics import DEEPGRAM_CONNECTS, DEEPGRAM_FAILURES, DEEPGRAM_RECONNECTS, RESULT_LATENCY
from service.retry import Outage, backoff
from service.settings import Settings

# Deepgram accepts replayed audio at up to 1.25x real time; a short burst covers what queued while connecting.
REPLAY_RATE = 1.25 * mulaw.BYTES_PER_SECOND
REPLAY_BURST_BYTES = mulaw.BYTES_PER_SECOND // 2


class SpoolSegment(Protocol):
    def write(self, mulaw: bytes) -> None: ...
    def close(self) -> Any: ...


class Spool(Protocol):
    def open_segment(
        self, *, call_sid: str, stream_sid: str, track: str, start_s: float, reason: str
    ) -> SpoolSegment: ...


class GuardedSegment:
    """A spool segment whose disk errors are counted and said once, instead of ending the call."""

    def __init__(self, open_segment: Callable[[], SpoolSegment], counters: TrackCounters, log: Any) -> None:
        self._counters = counters
        self._log = log
        self._segment: SpoolSegment | None = None
        try:
            self._segment = open_segment()
        except OSError as exc:
            self._lost(exc)

    def write(self, mulaw: bytes) -> None:
        if self._segment is not None:
            try:
                self._segment.write(mulaw)
            except OSError as exc:
                self._lost(exc)
            else:
                self._counters.bytes_spooled += len(mulaw)
                return
        self._counters.bytes_lost += len(mulaw)

    def close(self) -> Any:
        if self._segment is None:
            return None
        try:
            return self._segment.close()
        except OSError as exc:
            self._lost(exc)
            return None

    def _lost(self, error: OSError) -> None:
        self._segment = None
        self._log.error("audio.lost", why=f"cannot write the spool: {error.strerror or error}")


@dataclass(frozen=True, slots=True)
class CallInfo:
    call_sid: str
    stream_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]


@dataclass(slots=True)
class TrackCounters:
    frames_in: int = 0
    bytes_sent: int = 0  # to Deepgram, replays included
    messages_sent: int = 0  # audio messages to Deepgram (one per frame, or per batch with AUDIO_BATCH_MS)
    bytes_spooled: int = 0
    bytes_lost: int = 0  # could not be spooled either (disk full, spool not writable)
    peak_waiting_bytes: int = 0  # most audio held in memory for Deepgram at once (bounded by AUDIO_BUFFER_S)
    chunks_missing: int = 0  # gaps in Twilio's own chunk numbers
    interims: int = 0
    finals: int = 0
    finals_repeated: int = 0  # finals for audio already final, not emitted again
    keepalives: int = 0
    reconnects: int = 0
    request_ids: list[str] = field(default_factory=list)
    spool_entries: list[str] = field(default_factory=list)


class TrackStream:
    """One track of a call: the ledger of its audio and its Deepgram connection(s)."""

    def __init__(
        self,
        *,
        name: str,
        call: CallInfo,
        settings: Settings,
        stt: SttClient,
        spool: Spool,
        emit: TranscriptSink,
        on_failure: Callable[[TrackStream, SttError], Awaitable[None]],
        log: Any,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.counters = TrackCounters()
        self.failure: SttError | None = None
        self._call = call
        self._settings = settings
        self._stt = stt
        self._spool = spool
        self._emit = emit
        self._on_failure = on_failure
        self._log = log
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._ledger = AudioLedger()
        self._speaker = speaker_for(settings, name)
        # Diarization separates voices sharing one track; with both tracks, each track is already one side.
        self._diarize = settings.deepgram_diarize and len(call.tracks) == 1
        self._max_bytes = max(mulaw.FRAME_BYTES, int(settings.audio_buffer_s * mulaw.BYTES_PER_SECOND))
        self._batch_chunks = max(1, settings.audio_batch_ms // mulaw.FRAME_MS)
        self._batch_wait_s = (settings.audio_batch_ms - mulaw.FRAME_MS) / 1000
        self._oldest_at = 0.0
        self._wakeup = asyncio.Event()
        self._alarm: asyncio.TimerHandle | None = None  # the sender's next timed wake-up (see _sleep_until_woken)
        # Set while the sender task waits with nothing to send on an open connection: the Twilio side may then
        # send a frame itself (`send_now`), saving a task switch per frame. None whenever the sender is busy.
        self._idle_live: LiveConnection | None = None
        self._last_sent_at = 0.0  # loop time of the last message to Deepgram (for KeepAlive)
        self._pace_started = 0.0  # loop time the current connection started sending (for the replay pace)
        self._twilio_done = asyncio.Event()
        self._live_input_ended = False  # no more audio for Deepgram: flush, CloseStream, wait for finals
        self._segment: GuardedSegment | None = None
        self._last_chunk = 0
        self._last_final_end_s = 0.0
        self._connection_results = False
        self._last_heard_at = 0.0

    # --- Twilio side (synchronous, never blocks) --------------------------------------------------------

    def push(self, chunk: int, payload: bytes) -> None:
        """Take a frame from Twilio (never waits); the caller then awaits `send_now`."""
        counters = self.counters
        counters.frames_in += 1
        if self._last_chunk and chunk > self._last_chunk + 1:
            counters.chunks_missing += chunk - self._last_chunk - 1
        self._last_chunk = chunk
        if self._segment is None and self._ledger.waiting_bytes + len(payload) > self._max_bytes:
            # Deepgram is too far behind: live keeps what it holds, the rest of the track goes to the spool.
            self._start_spooling(
                self._ledger.received / mulaw.BYTES_PER_SECOND,
                f"more than AUDIO_BUFFER_S ({self._settings.audio_buffer_s:g} s) of audio waiting for Deepgram",
            )
            self._end_live_input()
        if self._segment is not None:
            self._segment.write(payload)
            self._ledger.skip(len(payload))
            return
        if self._batch_chunks > 1 and not self._ledger.pending_chunks:
            self._oldest_at = time.monotonic()  # when this batch started waiting; unused when every frame goes alone
        self._ledger.receive(payload)
        counters.peak_waiting_bytes = max(counters.peak_waiting_bytes, self._ledger.waiting_bytes)
        if self._idle_live is None or self._batch_chunks > 1:
            self._wakeup.set()

    async def send_now(self) -> None:
        """Called by the Twilio side right after `push`. When the sender is idle on an open connection, `push`
        did not wake it: the frame goes to Deepgram from here, saving a task switch per frame.

        The frame is written to the socket before the first await, so it keeps its place among the sender's
        messages. A failed send is the sender's business: the frame is in the ledger as unacknowledged, so the
        next connection replays it.
        """
        live = self._idle_live
        if live is None or not self._ledger.pending_chunks or self._batch_chunks > 1:
            return
        now = asyncio.get_running_loop().time()
        if self._ahead_of_pace(now) > 0:
            self._wakeup.set()
            return
        chunk = self._ledger.take(1)
        try:
            await live.send_audio(chunk)
        except SttError:
            self._wakeup.set()
            return
        self._sent(chunk, now)

    def end(self) -> None:
        """Twilio's stream ended: flush what is held, CloseStream, and close any spool segment."""
        self._twilio_done.set()
        self._end_live_input()

    def _end_live_input(self) -> None:
        self._live_input_ended = True
        self._wakeup.set()

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
            if not self._stt.configured:
                await self._give_up(SttRejected("DEEPGRAM_API_KEY is not set", kind="no_key"))
            else:
                await self._transcribe_live()
            await self._twilio_done.wait()  # a spool segment takes audio until the stream ends
        except Exception as exc:  # noqa: BLE001 - the per-track top level: a bug ends this track only, and says so
            self._log.exception("call.internal_error", track=self.name)
            await self._give_up(SttUnavailable(f"internal error: {type(exc).__name__}", kind="internal"))
        finally:
            self._close_segment()

    async def _transcribe_live(self) -> None:
        settings = self._settings
        outage = Outage(limit_s=settings.deepgram_outage_s)
        loop = asyncio.get_running_loop()
        while True:
            opened_at = loop.time()
            self._connection_results = False
            try:
                async with self._stt.connect(live_options(settings, diarize=self._diarize)) as live:
                    opened_at = loop.time()
                    DEEPGRAM_CONNECTS.inc()
                    self._ledger.restart()
                    self._log.info("deepgram.connected", track=self.name, replaying_s=self._replay_seconds())
                    await self._stream(live)
            except SttRejected as exc:
                await self._give_up(exc)
                return
            except SttUnavailable as exc:
                outage.connection_ended(opened_at=opened_at, now=loop.time(), produced_results=self._connection_results)
                if not await self._wait_to_retry(exc, outage):
                    return
            else:
                self._spool_stragglers()
                return

    def _spool_stragglers(self) -> None:
        """Audio that arrived after CloseStream went out (a message Twilio sent as the stream was closing)."""
        if not self._ledger.pending_chunks:
            return
        # The connection closed cleanly, so what it carried is final; only the unsent audio is left to keep.
        self._ledger.acknowledge(self._ledger.connection_sent / mulaw.BYTES_PER_SECOND)
        start_s, audio = self._ledger.release()
        self._spool_stretch(start_s, audio, "arrived after the stream to Deepgram was closed")

    async def _wait_to_retry(self, error: SttUnavailable, outage: Outage) -> bool:
        """Back off before the next attempt; False when there is nothing to retry or the outage is too long."""
        settings = self._settings
        if self._nothing_left():
            return False
        if outage.exhausted(asyncio.get_running_loop().time()):
            await self._give_up(error, outage_s=settings.deepgram_outage_s)
            return False
        delay = backoff(
            outage.attempts,
            base_s=settings.deepgram_backoff_initial_s,
            cap_s=settings.deepgram_backoff_max_s,
            rng=self._rng,
        )
        self.counters.reconnects += 1
        DEEPGRAM_RECONNECTS.labels(reason=error.kind).inc()
        self._log.warning(
            "deepgram.reconnecting", track=self.name, why=error.reason, attempt=outage.attempts, in_s=round(delay, 3)
        )
        await asyncio.sleep(delay)
        return True

    def _nothing_left(self) -> bool:
        return self._live_input_ended and self._ledger.waiting_bytes == 0

    def _replay_seconds(self) -> float:
        return round(self._ledger.waiting_bytes / mulaw.BYTES_PER_SECOND, 2)

    async def _stream(self, live: LiveConnection) -> None:
        sender = asyncio.create_task(self._send(live), name=f"send-{self.name}")
        receiver = asyncio.create_task(self._receive(live), name=f"receive-{self.name}")
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
            self._cancel_alarm()

    async def _await_last_results(self, receiver: asyncio.Task[None]) -> None:
        timeout = self._settings.deepgram_close_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await receiver
        except TimeoutError as exc:
            raise SttUnavailable(
                f"no final results within DEEPGRAM_CLOSE_TIMEOUT_S ({timeout:g} s) of CloseStream", kind="close_timeout"
            ) from exc
        if self._ledger.unacknowledged_bytes > mulaw.FRAME_BYTES:  # timestamps are rounded; a frame is noise
            raise SttUnavailable("Deepgram closed without final results for all the audio", kind="missing_finals")

    async def _send(self, live: LiveConnection) -> None:
        """Ledger to Deepgram, paced while replaying; KeepAlive when idle; CloseStream when input ends."""
        loop = asyncio.get_running_loop()
        settings = self._settings
        ledger = self._ledger
        self._pace_started = self._last_sent_at = self._last_heard_at = loop.time()
        while True:
            now = loop.time()
            self._check_deepgram_alive(now)
            wait_s = self._batch_due_in() if ledger.pending_chunks else None
            if ledger.pending_chunks and (wait_s is None or wait_s <= 0):
                ahead_s = self._ahead_of_pace(now)
                if ahead_s > 0:  # replaying faster than Deepgram allows
                    await asyncio.sleep(ahead_s)
                    continue
                chunk = ledger.take(self._batch_chunks)
                await live.send_audio(chunk)
                self._sent(chunk, loop.time())
                if self._batch_chunks > 1 and ledger.pending_chunks:
                    self._oldest_at = time.monotonic()
                continue
            if self._live_input_ended and not ledger.pending_chunks:
                await live.close_stream()
                return
            idle_s = settings.deepgram_keepalive_s - (now - self._last_sent_at)
            if idle_s <= 0:
                await live.keep_alive()
                self.counters.keepalives += 1
                self._last_sent_at = loop.time()
                continue
            self._idle_live = live
            try:
                await self._sleep_until_woken(min(idle_s, wait_s) if wait_s is not None else idle_s)
            finally:
                self._idle_live = None

    def _ahead_of_pace(self, now: float) -> float:
        """Seconds the current connection's sending is ahead of the replay pace Deepgram allows (<= 0: not)."""
        return (self._ledger.connection_sent - REPLAY_BURST_BYTES) / REPLAY_RATE - (now - self._pace_started)

    def _sent(self, chunk: bytes, now: float) -> None:
        self.counters.bytes_sent += len(chunk)
        self.counters.messages_sent += 1
        self._last_sent_at = now

    def _check_deepgram_alive(self, now: float) -> None:
        limit = self._settings.deepgram_result_timeout_s
        if self._ledger.unacknowledged_bytes and now - self._last_heard_at > limit:
            raise SttUnavailable(f"Deepgram sent nothing for DEEPGRAM_RESULT_TIMEOUT_S ({limit:g} s)", kind="silent")

    async def _sleep_until_woken(self, timeout_s: float) -> None:
        """Until `push`/`end` wakes the sender, or `timeout_s` passes (the sender re-checks either way).

        Called once per frame, so it does not make a timer per call: one alarm stays set, and is moved only
        when it is due later than needed. An alarm that rings early (audio kept coming) just wakes the sender
        once per KeepAlive period to find nothing to do.
        """
        self._wakeup.clear()
        if self._ledger.unacknowledged_bytes:
            timeout_s = min(timeout_s, self._settings.deepgram_result_timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._alarm is None or self._alarm.when() > deadline:
            if self._alarm is not None:
                self._alarm.cancel()
            self._alarm = loop.call_at(deadline, self._ring)
        await self._wakeup.wait()

    def _ring(self) -> None:
        self._alarm = None
        self._wakeup.set()

    def _cancel_alarm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None

    def _batch_due_in(self) -> float | None:
        """Seconds until the pending audio should go out; None means now."""
        if self._live_input_ended or self._ledger.pending_chunks >= self._batch_chunks:
            return None
        return self._batch_wait_s - (time.monotonic() - self._oldest_at)

    async def _receive(self, live: LiveConnection) -> None:
        loop = asyncio.get_running_loop()
        async for event in live.events():
            heard_at = self._last_heard_at = loop.time()
            if isinstance(event, SttResult):
                if self._on_result(event):
                    RESULT_LATENCY.observe(loop.time() - heard_at)
            elif isinstance(event, SttMetadata):
                # Deepgram's last word on a stream: it has processed this much audio, finals included.
                self._ledger.acknowledge(event.duration)
                self._remember_request(event.request_id)
            elif isinstance(event, SttServerError):
                self._log.warning("deepgram.error_message", track=self.name, description=event.description)

    def _on_result(self, result: SttResult) -> bool:
        """Count the result and emit its transcript; True when a transcript went to the sinks."""
        if result.request_id:
            self._remember_request(result.request_id)
        start, end = self._ledger.call_time(result.start), self._ledger.call_time(result.end)
        if result.is_final:
            self._connection_results = True
            self._ledger.acknowledge(result.end)
            self.counters.finals += 1
            if end <= self._last_final_end_s and result.duration > 0:
                self.counters.finals_repeated += 1  # a stretch already final before a reconnect
                return False
            self._last_final_end_s = max(self._last_final_end_s, end)
        else:
            self.counters.interims += 1
        if not result.text:
            return False  # Deepgram's results for silence: nothing to show or keep
        transcript = Transcript(
            call_sid=self._call.call_sid,
            stream_sid=self._call.stream_sid,
            track=self.name,
            is_final=result.is_final,
            speech_final=result.speech_final,
            from_finalize=result.from_finalize,
            text=result.text,
            start=round(start, 3),
            end=round(end, 3),
            confidence=result.confidence,
            words=self._on_call_timeline(result.words),
            request_id=result.request_id,
            speaker=self._speaker,
        )
        if self._diarize and result.is_final:
            for part in by_speaker(transcript):
                self._emit(part)
        else:
            self._emit(transcript)
        return True

    def _on_call_timeline(self, words: tuple[Word, ...]) -> tuple[Word, ...]:
        offset = self._ledger.call_time(0.0)
        if not offset:
            return words
        return tuple(
            dataclasses.replace(word, start=round(word.start + offset, 3), end=round(word.end + offset, 3))
            for word in words
        )

    def _remember_request(self, request_id: str) -> None:
        if request_id not in self.counters.request_ids:
            self.counters.request_ids.append(request_id)

    # --- Spool --------------------------------------------------------------------------------------------

    async def _give_up(self, error: SttError, *, outage_s: float | None = None) -> None:
        """Live transcription cannot cover this track any more: what is not final, and what comes, is spooled."""
        self.failure = error
        DEEPGRAM_FAILURES.labels(reason=error.kind).inc()
        reason = error.reason if outage_s is None else f"Deepgram unavailable for {outage_s:g} s: {error.reason}"
        start_s, audio = self._ledger.release()
        if self._segment is None and (audio or not self._twilio_done.is_set()):
            self._start_spooling(start_s, reason).write(audio)  # and what Twilio still sends
        elif audio:
            # Already spooling newer audio: this older stretch gets its own entry.
            self._spool_stretch(start_s, audio, reason)
        self._end_live_input()
        await self._on_failure(self, error)

    def _open_segment(self, start_s: float, reason: str) -> GuardedSegment:
        return GuardedSegment(
            lambda: self._spool.open_segment(
                call_sid=self._call.call_sid, stream_sid=self._call.stream_sid, track=self.name,
                start_s=start_s, reason=reason,
            ),
            self.counters,
            self._log.bind(track=self.name),
        )  # fmt: skip

    def _start_spooling(self, start_s: float, reason: str) -> GuardedSegment:
        segment = self._open_segment(start_s, reason)
        self._segment = segment
        self._log.warning("audio.spooling", track=self.name, from_s=round(start_s, 2), why=reason)
        return segment

    def _close_segment(self) -> None:
        if self._segment is not None:
            self._record_entry(self._segment.close())
            self._segment = None

    def _record_entry(self, entry: Any) -> None:
        if entry is not None:
            self.counters.spool_entries.append(str(getattr(entry, "id", entry)))

    def _spool_stretch(self, start_s: float, audio: bytes, reason: str) -> None:
        """One closed spool entry for a stretch of audio."""
        segment = self._open_segment(start_s, reason)
        segment.write(audio)
        self._record_entry(segment.close())
        self._log.warning("audio.spooling", track=self.name, from_s=round(start_s, 2), why=reason)

    def abandon(self) -> None:
        """The process is stopping and Deepgram did not finish in time: spool what is not yet final."""
        start_s, audio = self._ledger.release()
        if audio:
            self._spool_stretch(start_s, audio, "callscribe stopped before Deepgram's final results")
        self._close_segment()
