"""Orchestration: one `CallSession` per Twilio stream, one `TrackStream` (one Deepgram connection) per track.

The Twilio side is synchronous and cheap: `CallSession.on_message` parses a message, advances the stream's
state and appends the audio to the track's bounded buffer; it never awaits, so the WebSocket from Twilio
is always read promptly. Each track's task sends that buffer to Deepgram (KeepAlive when idle), reads
Deepgram's results concurrently, and on the end of the stream sends CloseStream and waits (bounded) for the
last finals and Metadata. Nothing here is module-level: every piece of call state hangs off its session.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from service import close_codes
from service.deepgram_protocol import (
    MULAW_BYTES_PER_SECOND,
    SttMetadata,
    SttResult,
    SttServerError,
    Word,
    live_options,
)
from service.errors import InvalidState, SttError, SttRejected, SttUnavailable, TwilioProtocolError
from service.settings import FRAME_MS, Settings
from service.stt import LiveConnection, SttClient
from service.twilio_protocol import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    StreamState,
    TwilioEvent,
    Unknown,
    parse,
    transition,
)

FRAMES_PER_SECOND = 1000 // FRAME_MS


@dataclass(frozen=True, slots=True)
class Transcript:
    """One interim or final result, placed on the call's timeline (seconds from the start of the stream)."""

    call_sid: str
    stream_sid: str
    track: str
    is_final: bool
    speech_final: bool
    from_finalize: bool
    text: str
    start: float
    end: float
    confidence: float
    words: tuple[Word, ...] = field(repr=False)
    request_id: str | None
    batch: bool = False  # transcribed later from the spool, through the pre-recorded API


TranscriptSink = Callable[[Transcript], None]
CloseTwilio = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Reject:
    """Close Twilio's WebSocket with this code and reason."""

    code: int
    reason: str


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
    bytes_sent: int = 0
    frames_dropped: int = 0  # forced out of a full buffer
    frames_untranscribed: int = 0  # arrived after Deepgram failed for good
    chunks_missing: int = 0  # gaps in Twilio's own chunk numbers
    interims: int = 0
    finals: int = 0
    keepalives: int = 0
    request_ids: list[str] = field(default_factory=list)


class TrackStream:
    """One track of a call on its own Deepgram live connection."""

    def __init__(
        self,
        *,
        name: str,
        call: CallInfo,
        settings: Settings,
        stt: SttClient,
        emit: TranscriptSink,
        on_failure: Callable[[TrackStream, SttError], Awaitable[None]],
        log: Any,
    ) -> None:
        self.name = name
        self.counters = TrackCounters()
        self.failure: SttError | None = None
        self._call = call
        self._settings = settings
        self._stt = stt
        self._emit = emit
        self._on_failure = on_failure
        self._log = log
        self._frames: collections.deque[bytes] = collections.deque()
        self._max_frames = max(1, int(settings.audio_buffer_s * FRAMES_PER_SECOND))
        self._batch_frames = max(1, settings.audio_batch_ms // FRAME_MS)
        self._batch_wait_s = (settings.audio_batch_ms - FRAME_MS) / 1000
        self._oldest_at = 0.0
        self._wakeup = asyncio.Event()
        self._ended = False
        self._last_chunk = 0
        # Deepgram's timestamps count from its connection's first byte; this puts them on the call's timeline.
        self._offset_s = 0.0

    # --- Twilio side (synchronous, never blocks) --------------------------------------------------------

    def push(self, media: Media) -> None:
        counters = self.counters
        counters.frames_in += 1
        if self._last_chunk and media.chunk > self._last_chunk + 1:
            counters.chunks_missing += media.chunk - self._last_chunk - 1
        self._last_chunk = media.chunk
        if self.failure is not None or self._ended:
            counters.frames_untranscribed += 1
            return
        frames = self._frames
        if len(frames) >= self._max_frames:
            frames.popleft()
            counters.frames_dropped += 1
            if counters.frames_dropped == 1:
                self._log.warning(
                    "audio.dropped",
                    track=self.name,
                    why=f"Deepgram is behind by more than AUDIO_BUFFER_S ({self._settings.audio_buffer_s:g} s)",
                )
        elif not frames:
            self._oldest_at = time.monotonic()
        frames.append(media.payload)
        self._wakeup.set()

    def end(self) -> None:
        """No more audio will come: flush what is buffered, then CloseStream."""
        self._ended = True
        self._wakeup.set()

    @property
    def buffered_frames(self) -> int:
        return len(self._frames)

    # --- Deepgram side ----------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with self._stt.connect(live_options(self._settings)) as live:
                self._log.info("deepgram.connected", track=self.name)
                await self._stream(live)
        except SttError as exc:
            await self._fail(exc)
        except Exception as exc:  # noqa: BLE001 - the per-track top level: a bug ends this call only, and says so
            self._log.exception("call.internal_error", track=self.name)
            await self._fail(SttUnavailable(f"internal error: {type(exc).__name__}"))
        finally:
            self._frames.clear()

    async def _fail(self, error: SttError) -> None:
        self.failure = error
        self.counters.frames_untranscribed += len(self._frames)
        self._frames.clear()
        await self._on_failure(self, error)

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

    async def _await_last_results(self, receiver: asyncio.Task[None]) -> None:
        timeout = self._settings.deepgram_close_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await receiver
        except TimeoutError:
            self._log.warning(
                "deepgram.close_timeout",
                track=self.name,
                why=f"no Metadata within DEEPGRAM_CLOSE_TIMEOUT_S ({timeout:g} s) after CloseStream",
            )

    async def _send(self, live: LiveConnection) -> None:
        """Buffer to Deepgram; KeepAlive when no audio has gone for DEEPGRAM_KEEPALIVE_S; CloseStream at the end."""
        loop = asyncio.get_running_loop()
        keepalive_s = self._settings.deepgram_keepalive_s
        last_sent = loop.time()
        frames = self._frames
        while True:
            wait_s = self._batch_due_in() if frames else None
            if frames and (wait_s is None or wait_s <= 0):
                chunk = self._take_batch()
                await live.send_audio(chunk)
                self.counters.bytes_sent += len(chunk)
                last_sent = loop.time()
                continue
            if self._ended and not frames:
                await live.close_stream()
                return
            idle_s = keepalive_s - (loop.time() - last_sent)
            if idle_s <= 0:
                await live.keep_alive()
                self.counters.keepalives += 1
                last_sent = loop.time()
                continue
            self._wakeup.clear()
            try:
                async with asyncio.timeout(min(idle_s, wait_s) if wait_s is not None else idle_s):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _batch_due_in(self) -> float | None:
        """Seconds until the buffered frames should go out; None means now."""
        if self._ended or len(self._frames) >= self._batch_frames:
            return None
        return self._batch_wait_s - (time.monotonic() - self._oldest_at)

    def _take_batch(self) -> bytes:
        frames = self._frames
        if self._batch_frames == 1 or len(frames) == 1:
            chunk = frames.popleft()
        else:
            count = min(len(frames), self._batch_frames)
            chunk = b"".join([frames.popleft() for _ in range(count)])
        if frames:
            self._oldest_at = time.monotonic()
        return chunk

    async def _receive(self, live: LiveConnection) -> None:
        async for event in live.events():
            if isinstance(event, SttResult):
                self._on_result(event)
            elif isinstance(event, SttMetadata):
                self._remember_request(event.request_id)
                self._log.debug("deepgram.metadata", track=self.name, audio_s=event.duration)
            elif isinstance(event, SttServerError):
                self._log.warning("deepgram.error_message", track=self.name, description=event.description)

    def _on_result(self, result: SttResult) -> None:
        if result.request_id:
            self._remember_request(result.request_id)
        if result.is_final:
            self.counters.finals += 1
        else:
            self.counters.interims += 1
        if not result.text:
            return  # Deepgram's results for silence: nothing to show or keep
        offset = self._offset_s
        self._emit(
            Transcript(
                call_sid=self._call.call_sid,
                stream_sid=self._call.stream_sid,
                track=self.name,
                is_final=result.is_final,
                speech_final=result.speech_final,
                from_finalize=result.from_finalize,
                text=result.text,
                start=round(result.start + offset, 3),
                end=round(result.end + offset, 3),
                confidence=result.confidence,
                words=result.words,
                request_id=result.request_id,
            )
        )

    def _remember_request(self, request_id: str) -> None:
        if request_id not in self.counters.request_ids:
            self.counters.request_ids.append(request_id)


class CallSession:
    """One Twilio stream: its state machine, its tracks, and the one summary line when it ends."""

    def __init__(
        self,
        *,
        settings: Settings,
        stt: SttClient,
        emit: TranscriptSink,
        close_twilio: CloseTwilio,
    ) -> None:
        self.state = StreamState.AWAITING_CONNECTED
        self.call: CallInfo | None = None
        self.tracks: dict[str, TrackStream] = {}
        self.ended_by: str | None = None
        self.finished = asyncio.Event()
        self._settings = settings
        self._stt = stt
        self._emit = emit
        self._close_twilio = close_twilio
        self._twilio_open = True
        self._started_at = time.monotonic()
        self._unknown_events: set[str] = set()
        self._failure: SttError | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._log: Any = structlog.get_logger("callscribe.call")

    # --- Twilio side ------------------------------------------------------------------------------------

    def on_message(self, data: str | bytes) -> Reject | None:
        """Handle one message from Twilio; a Reject means: close the stream with that code and reason."""
        if len(data) > self._settings.max_message_bytes:
            return self._reject(
                close_codes.MESSAGE_TOO_BIG,
                f"message of {len(data)} bytes is over MAX_MESSAGE_BYTES ({self._settings.max_message_bytes})",
            )
        try:
            event = parse(data)
            self.state = transition(self.state, event)
        except TwilioProtocolError as exc:
            return self._reject(close_codes.INVALID_PAYLOAD, f"bad message: {exc}")
        except InvalidState as exc:
            return self._reject(close_codes.POLICY_VIOLATION, str(exc))
        if isinstance(event, Media):  # the hot path: 50 a second per track
            track = self.tracks.get(event.track)
            if track is None:
                return self._reject(close_codes.POLICY_VIOLATION, f"media for track '{event.track}' not in start")
            track.push(event)
            return None
        return self._on_control(event)

    def _on_control(self, event: TwilioEvent) -> Reject | None:
        if isinstance(event, Start):
            return self._on_start(event)
        if isinstance(event, Stop):
            self._end("stop")
        elif isinstance(event, Connected):
            self._log.debug("twilio.connected", protocol=event.protocol, version=event.version)
        elif isinstance(event, Dtmf | Mark):
            self._log.info(f"twilio.{type(event).__name__.lower()}", detail=repr(event))
        elif isinstance(event, Unknown) and event.event not in self._unknown_events:
            self._unknown_events.add(event.event)
            self._log.warning("twilio.unknown_event", twilio_event=event.event, action="ignored")
        return None

    def _on_start(self, start: Start) -> Reject | None:
        # Bound in this connection's own context: the tasks spawned below inherit it, other calls never see it.
        structlog.contextvars.bind_contextvars(call_sid=start.call_sid, stream_sid=start.stream_sid)
        fmt = start.media_format
        if not fmt.is_mulaw_8k_mono:
            return self._reject(
                close_codes.UNSUPPORTED_DATA,
                f"media format {fmt.encoding} {fmt.sample_rate} Hz x{fmt.channels} is not audio/x-mulaw 8000 Hz mono",
            )
        self.call = CallInfo(
            call_sid=start.call_sid,
            stream_sid=start.stream_sid,
            account_sid=start.account_sid,
            tracks=start.tracks,
            custom_parameters=dict(start.custom_parameters),
        )
        self._log.info(
            "call.started",
            tracks=",".join(start.tracks),
            **{key: value for key, value in start.custom_parameters.items() if key in {"from", "to", "direction"}},
        )
        if not self._stt.configured:
            self._failure = SttRejected("DEEPGRAM_API_KEY is not set")
            self._log.error("deepgram.failed", why=self._failure.reason, action="call not transcribed")
            return self._reject(close_codes.INTERNAL_ERROR, self._failure.reason)
        for name in start.tracks:
            self.tracks[name] = TrackStream(
                name=name,
                call=self.call,
                settings=self._settings,
                stt=self._stt,
                emit=self._emit,
                on_failure=self._on_track_failure,
                log=self._log,
            )
        track_tasks = [self._spawn(track.run(), name=f"track-{track.name}") for track in self.tracks.values()]
        self._spawn(self._finish(track_tasks), name="finish")
        return None

    def twilio_ended(self) -> None:
        """Twilio's WebSocket is gone (after stop, a close, or a drop): finish what Deepgram has."""
        self._twilio_open = False
        if self.state is StreamState.STREAMING and self.ended_by is None:
            self._log.info("twilio.disconnected", why="socket closed without a stop message")
            self._end("twilio_disconnected")
        if not self._tasks:  # never started Deepgram: nothing left to finish
            self.finished.set()

    def shut_down(self) -> None:
        """The process is stopping: treat the stream as ended so Deepgram's last finals still arrive."""
        self._end("shutdown")

    def _end(self, why: str) -> None:
        if self.ended_by is None:
            self.ended_by = why
        for track in self.tracks.values():
            track.end()

    def _reject(self, code: int, reason: str) -> Reject:
        self._log.warning("twilio.rejected", close_code=code, why=reason)
        if self.ended_by is None:
            self.ended_by = f"rejected: {reason}"
        self._end(self.ended_by)
        self._twilio_open = False
        # A WebSocket close reason is at most 123 bytes.
        return Reject(code, reason.encode()[:123].decode(errors="ignore"))

    # --- Deepgram side ----------------------------------------------------------------------------------

    async def _on_track_failure(self, track: TrackStream, error: SttError) -> None:
        if self._failure is not None:
            return  # said once per call
        self._failure = error
        self._log.error("deepgram.failed", track=track.name, why=error.reason, action="call not transcribed")
        if self.ended_by is None:
            self.ended_by = f"deepgram failed: {error.reason}"
        self._end(self.ended_by)
        if self._twilio_open:
            self._twilio_open = False
            await self._close_twilio(close_codes.INTERNAL_ERROR, error.reason.encode()[:123].decode(errors="ignore"))

    def _spawn(self, coroutine: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        # The session keeps its tasks referenced (asyncio holds only weak references to running tasks).
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _finish(self, track_tasks: list[asyncio.Task[None]]) -> None:
        try:
            await asyncio.gather(*track_tasks)
        finally:
            self._log_summary()
            self.finished.set()

    def _log_summary(self) -> None:
        counters = [track.counters for track in self.tracks.values()]
        self._log.info(
            "call.ended",
            ended_by=self.ended_by or "unknown",
            duration_s=round(time.monotonic() - self._started_at, 2),
            audio_s_sent=round(sum(c.bytes_sent for c in counters) / MULAW_BYTES_PER_SECOND, 2),
            frames_in=sum(c.frames_in for c in counters),
            finals=sum(c.finals for c in counters),
            interims=sum(c.interims for c in counters),
            frames_dropped=sum(c.frames_dropped for c in counters),
            frames_untranscribed=sum(c.frames_untranscribed for c in counters),
            chunks_missing=sum(c.chunks_missing for c in counters),
            keepalives=sum(c.keepalives for c in counters),
            deepgram_request_ids=",".join(rid for c in counters for rid in c.request_ids),
            deepgram_error=self._failure.reason if self._failure else None,
        )

    async def wait_finished(self) -> None:
        await self.finished.wait()

    @property
    def active(self) -> bool:
        return not self.finished.is_set()
