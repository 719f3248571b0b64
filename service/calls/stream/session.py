"""Orchestration: one `CallSession` per Twilio stream, one `TrackStream` (one Deepgram connection) per track.

The Twilio side is synchronous and cheap: `CallSession.on_message` parses a message, advances the stream's
state and pushes the audio to the track's bounded buffer; it never awaits, so the WebSocket from Twilio is
always read promptly. Right after it, the read loop awaits `send_pushed`, which sends that frame to
Deepgram from the read loop when the track's sender is idle (`TrackSender.send_now` tells the whole
shortcut). Each track's own task sends the rest, reads Deepgram's results concurrently, and on the end of
the stream sends CloseStream and waits (bounded) for the last finals and Metadata. Nothing here is
module-level: every piece of call state hangs off its session.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from service.calls.counters import CallInfo
from service.calls.events import CallEnded, CallObserver, CallStarted, CallState, CallStateChanged
from service.calls.handover.joining import release_after_old, take_over
from service.calls.handover.passing import StreamRecords
from service.calls.handover.stitching import StreamShare
from service.calls.pipeline.call_tracks import CallTracks
from service.calls.pipeline.engines import LiveEngines
from service.calls.pipeline.spooling import Spool
from service.calls.pipeline.track import ChannelInput, TrackStream
from service.calls.stream.admission import Admission, AdmissionRefused, StreamGate
from service.calls.stream.ending import EndedBy, Ending
from service.calls.stream.messages import Reject, TwilioMessages, close_reason
from service.calls.stream.pause import PauseControl, Paused, Resumed, StreamPause, marker
from service.calls.stream.summary import StreamCounts, call_summary
from service.calls.transcript import Transcript, speaker_for
from service.errors import SttError
from service.settings import Settings
from service.twilio import close_codes
from service.twilio.protocol import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    StreamState,
    TwilioEvent,
    Unknown,
)
from service.twilio.stream_tokens import Purpose

CloseTwilio = Callable[[int, str], Awaitable[None]]


class CallSession:
    """One Twilio stream: its state machine, its tracks, and the one summary line when it ends."""

    def __init__(
        self,
        *,
        settings: Settings,
        engines: LiveEngines,
        spool: Spool,
        observer: CallObserver,
        close_twilio: CloseTwilio,
        gate: StreamGate,
        stream_url: str = "",
        records: StreamRecords | None = None,
    ) -> None:
        self._messages = TwilioMessages(settings.max_message_bytes)
        self.call: CallInfo | None = None
        self.tracks: dict[str, TrackStream | ChannelInput] = {}  # by track: where its frames go
        self.streams: list[TrackStream] = []  # the engine streams: one per track, or one for both (per_call)
        self._pipeline: CallTracks | None = None  # both of the above, once the call has begun
        self.ended_by: Ending | None = None  # set once, when the stream ends; str() is what is logged and kept
        self.finished = asyncio.Event()
        self._settings = settings
        self._engines = engines
        self._spool = spool
        self._observer = observer
        self._close_twilio = close_twilio
        self._gate = gate
        self.stream_url = stream_url  # the public wss:// URL Twilio opened this stream to: a hand-over's goes there too
        self._records = records
        self.share = StreamShare()  # this stream's part of the call's timeline (all of it, unless handed over)
        self.pause = StreamPause()  # the call's pause as this stream applies it (`apply_pause`)
        self.track_setting = ""  # the <Stream track> setting the stream was started with, once let in
        self._release: asyncio.Task[None] | None = None  # a hand-over's new stream, waiting for the old one to end
        self._starting: tuple[Start, Admission] | None = None  # a start that passed `gate.check`, not yet claimed
        self._twilio_open = True
        self._started_at = time.monotonic()
        self._pushed: TrackStream | ChannelInput | None = (
            None  # the track `on_message` just gave a frame, for `send_pushed`
        )
        self._failure: SttError | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._track_tasks: list[asyncio.Task[None]] = []
        self._log: Any = structlog.get_logger("callscribe.call")

    # --- Twilio side ------------------------------------------------------------------------------------

    def on_message(self, data: str | bytes) -> Reject | None:
        """Handle one message from Twilio; a Reject means: close the stream with that code and reason."""
        event = self._messages.read(data)
        if isinstance(event, Media):  # the hot path: 50 a second per track
            track = self.tracks.get(event.track)
            if track is None:
                return self._reject(close_codes.POLICY_VIOLATION, f"media for track '{event.track}' not in start")
            payload = self.pause.silenced(event.track, event.payload) if self.pause.on else event.payload
            track.push(event.chunk, payload, event.timestamp_ms)
            if track.reader_sends:
                self._pushed = track
            return None
        if isinstance(event, Reject):
            return self._reject(event.code, event.reason)
        return self._on_control(event)

    @property
    def pushed(self) -> bool:
        """`on_message` left a frame the read loop may send itself: it awaits `send_pushed` (batching, never)."""
        return self._pushed is not None

    async def send_pushed(self) -> None:
        """After `on_message`: the frame it pushed goes to Deepgram now if its track's sender is idle.

        The read loop awaits this between messages; `TrackSender.send_now` tells the whole shortcut.
        """
        track, self._pushed = self._pushed, None
        if track is not None:
            await track.send_now()

    def _on_control(self, event: TwilioEvent) -> Reject | None:
        if isinstance(event, Start):
            return self._on_start(event)
        if isinstance(event, Stop):
            self._end(Ending(EndedBy.STOP))
        elif isinstance(event, Connected):
            self._log.debug("twilio.connected", protocol=event.protocol, version=event.version)
        elif isinstance(event, Dtmf | Mark):
            self._log.info(f"twilio.{type(event).__name__.lower()}", detail=repr(event))
        elif isinstance(event, Unknown) and self._messages.first_of_its_kind(event):
            self._log.warning("twilio.unknown_event", twilio_event=event.event, action="ignored")
        return None

    def _on_start(self, start: Start) -> Reject | None:
        """The checks a start needs no I/O for; the read loop then awaits `finish_start`."""
        if self.ended_by is not None:
            return None  # pushed out while this start was on its way: the socket is closing, nothing starts
        # Bound in this connection's own context: the tasks spawned later inherit it, other calls never see it.
        structlog.contextvars.bind_contextvars(call_sid=start.call_sid, stream_sid=start.stream_sid)
        fmt = start.media_format
        if not fmt.is_mulaw_8k_mono:
            return self._reject(
                close_codes.UNSUPPORTED_DATA,
                f"media format {fmt.encoding} {fmt.sample_rate} Hz x{fmt.channels} is not audio/x-mulaw 8000 Hz mono",
            )
        try:
            self._starting = (start, self._gate.check(start))
        except AdmissionRefused as exc:
            return self._reject(close_codes.POLICY_VIOLATION, str(exc))
        return None

    @property
    def starting(self) -> bool:
        """A start passed the checks without I/O and waits for `finish_start`."""
        return self._starting is not None

    @property
    def started(self) -> bool:
        """The stream was let in: its tracks are being transcribed."""
        return self.call is not None

    async def finish_start(self) -> Reject | None:
        """The cross-process check of the start that passed `on_message`, then the tracks and Deepgram."""
        assert self._starting is not None  # called only while `starting`
        start, admission = self._starting
        self._starting = None
        try:
            await self._gate.claim(start, admission)
        except AdmissionRefused as exc:
            return self._reject(close_codes.POLICY_VIOLATION, str(exc))
        if self.ended_by is None and admission.purpose is Purpose.HANDOVER:
            self.share = await take_over(self._records, start.call_sid, start.stream_sid, self._log) or self.share
        if self.ended_by is None:  # not shut down meanwhile
            self.track_setting = admission.track
            self._begin(start, admission.parameters)
            if self.share.holding and self._records is not None:  # the words wait for the old stream's end
                release = release_after_old(
                    self._records, self.share, call_sid=start.call_sid, stream_sid=start.stream_sid,
                    emit=self.emit_now, log=self._log,
                )  # fmt: skip
                self._release = self._spawn(release, name="handover-release")  # `_finish` lets them out too
        return None

    def _offer(self, transcript: Transcript) -> None:
        """A track's transcript, on its way to the observer through this stream's share of the call."""
        self.emit_now(self.share.offer(transcript))

    def emit_now(self, transcripts: list[Transcript]) -> None:
        for transcript in transcripts:
            self._observer.transcript(transcript)

    def heard_until_s(self) -> float:
        """How far into the call (on its timeline) this stream's audio has come."""
        return self.share.offset_s + (self._pipeline.heard_s() if self._pipeline is not None else 0.0)

    def apply_pause(self, control: PauseControl) -> float | None:
        """A newer version of the call's pause (`calls/pausing.py`): from here on the call's audio is silenced, or
        heard again. Returns where on the call's timeline it took effect, or None when it was not newer (or the call
        has not begun)."""
        call = self.call
        if call is None or control.version <= self.pause.version:
            return None
        at_s = self.heard_until_s()
        move = self.pause.apply(control, at_s)
        if isinstance(move, Paused):
            resumes = f"; it resumes by itself at {move.resume_at.isoformat()}" if move.resume_at else ""
            for name in self.tracks:
                self._track_state(name, CallState.PAUSED, f"transcription paused by {move.by}{resumes}")
            self._log.info("call.paused", by=move.by, at_s=round(at_s, 2))
        elif isinstance(move, Resumed):
            self._pause_ended(move)
            for name in self.tracks:
                self._track_state(name, CallState.STREAMING, f"transcription resumed by {move.by}")
            paused_s = round(move.end_s - move.start_s, 2)
            self._log.info("call.resumed", by=move.by, at_s=round(at_s, 2), paused_s=paused_s)
        return at_s

    def _pause_ended(self, resumed: Resumed) -> None:
        """The pause as one `[paused]` final on the call's first track: its span, nothing said in it."""
        call = self.call
        assert call is not None  # a pause is applied only once the call has begun
        track = call.tracks[0]
        self._offer(marker(call.call_sid, call.stream_sid, track, speaker_for(self._settings, track), resumed))

    def cancel_handover(self) -> None:
        """No one took over: the words held for the hand-over go out, and the stream is drained as before."""
        self.emit_now(self.share.release())

    def hand_over_done(self) -> None:
        """The new stream has the call from the cut on: this one ends (its last finals still come)."""
        for name in self.tracks:
            self._track_state(name, CallState.HANDED_OVER, "a new stream of the call took over in another process")
        self._end(Ending(EndedBy.HANDED_OVER))

    def _begin(self, start: Start, params: dict[str, str]) -> None:
        self.call = CallInfo(
            call_sid=start.call_sid,
            stream_sid=start.stream_sid,
            account_sid=start.account_sid,
            tracks=start.tracks,
            custom_parameters=dict(params),
            offset_s=self.share.offset_s,
        )
        self._observer.call_started(CallStarted.of(self.call, datetime.datetime.now(datetime.UTC)))
        self._log.info(
            "call.started",
            tracks=",".join(start.tracks),
            **{key: value for key, value in params.items() if key in {"from", "to", "direction"}},
        )
        pipeline = CallTracks(
            self.call, settings=self._settings, engines=self._engines, spool=self._spool, emit=self._offer,
            turns=self._observer.turn, on_failure=self._on_track_failure, report_state=self._track_state, log=self._log,
        )  # fmt: skip
        self._pipeline = pipeline
        self.tracks, self.streams = pipeline.inputs, pipeline.streams
        self._track_tasks = [self._spawn(stream.run(), name=f"track-{stream.name}") for stream in self.streams]
        self._spawn(self._finish(self._track_tasks), name="finish")

    @property
    def awaiting_start(self) -> bool:
        """No `start` has come on this socket yet."""
        return self._messages.state in {StreamState.AWAITING_CONNECTED, StreamState.AWAITING_START}

    async def push_out(self, bound: int) -> None:
        """Close this socket, which has sent no `start`, to make room for a newer one (the bound on waiting
        sockets). Ended here, so a `start` that arrives while the close is on its way is not let in."""
        if self._twilio_open and self.awaiting_start:
            self._twilio_open = False
            why = f"closed to make room: {bound} sockets waited for their start message"
            self._log.warning("media.pushed_out", close_code=close_codes.POLICY_VIOLATION, why=why)
            self._end(Ending.rejected(why))
            await self._close_twilio(close_codes.POLICY_VIOLATION, why)

    def went_idle(self, idle_s: float) -> Reject:
        """Twilio sent nothing for STREAM_IDLE_TIMEOUT_S on a started stream: finish it as if it had hung up."""
        self._log.warning("twilio.idle", idle_s=idle_s, why="no message for STREAM_IDLE_TIMEOUT_S")
        self._end(Ending(EndedBy.IDLE_TIMEOUT))
        self._twilio_open = False
        return Reject(close_codes.POLICY_VIOLATION, f"no message for STREAM_IDLE_TIMEOUT_S ({idle_s:g} s)")

    def twilio_ended(self) -> None:
        """Twilio's WebSocket is gone (after stop, a close, or a drop): finish what Deepgram has."""
        self._twilio_open = False
        if self._messages.state is StreamState.STREAMING and self.ended_by is None:
            self._log.info("twilio.disconnected", why="socket closed without a stop message")
            self._end(Ending(EndedBy.TWILIO_DISCONNECTED))
        if not self._tasks:  # never started Deepgram: nothing left to finish
            self.finished.set()

    async def shut_down(self) -> None:
        """The process is stopping: close Twilio's stream, then let Deepgram's last finals arrive."""
        if self._twilio_open:
            self._twilio_open = False
            await self._close_twilio(close_codes.GOING_AWAY, "callscribe is restarting")
        self._end(Ending(EndedBy.SHUTDOWN))

    def abandon(self) -> None:
        """Shutdown ran out of time: spool whatever Deepgram has not made final, and stop waiting for it."""
        if self._pipeline is not None:
            self._pipeline.abandon()
        for task in self._track_tasks:
            task.cancel()

    def _end(self, why: Ending) -> None:
        if self.ended_by is None:
            self.ended_by = why
        if self._pipeline is not None:
            self._pipeline.end()

    def refuse(self, code: int, reason: str) -> Reject:
        """End the stream before it starts, for a reason of the process's own (MAX_CALLS filled up meanwhile)."""
        return self._reject(code, reason)

    def _reject(self, code: int, reason: str) -> Reject:
        self._log.warning("twilio.rejected", close_code=code, why=reason)
        self._end(Ending.rejected(reason))
        self._twilio_open = False
        return Reject(code, close_reason(reason))

    # --- Deepgram side ----------------------------------------------------------------------------------

    def _track_state(self, track: str, state: CallState, reason: str) -> None:
        call = self.call
        assert call is not None  # tracks exist only once the call has begun
        self._observer.call_state(
            CallStateChanged(
                call_sid=call.call_sid, stream_sid=call.stream_sid, track=track, state=state, reason=reason,
                at=datetime.datetime.now(datetime.UTC),
            )
        )  # fmt: skip

    async def _on_track_failure(self, track: TrackStream, error: SttError) -> None:
        if self._failure is not None:
            return  # said once per call
        self._failure = error
        # The stream stays open: the audio goes to the spool and is transcribed in batch later.
        self._log.error("deepgram.failed", track=track.name, why=error.reason, action="spooling for batch")

    def _spawn(self, coroutine: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        # The session keeps its tasks referenced (asyncio holds only weak references to running tasks).
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _finish(self, track_tasks: list[asyncio.Task[None]]) -> None:
        try:
            await asyncio.gather(*track_tasks, return_exceptions=True)
        finally:
            if self._release is not None:
                self._release.cancel()
            if (resumed := self.pause.end(self.heard_until_s())) is not None:
                self._pause_ended(resumed)  # the stream ended paused: the pause ends with it
            self.emit_now(self.share.release())  # the call ended while a hand-over's words waited: they go out now
            self._log_summary()
            self.finished.set()

    def _log_summary(self) -> None:
        counters = [stream.counters for stream in self.streams]
        summary = call_summary(
            [StreamCounts(stream.name, stream.counters, stream.bytes_per_second) for stream in self.streams],
            ended_by=str(self.ended_by) if self.ended_by is not None else "unknown",
            duration_s=time.monotonic() - self._started_at,
            messages_missing=self._messages.missing,
            engine_error=self._failure.reason if self._failure else None,
            offset_s=self.share.offset_s,
            words_cut_ms=self.share.cut_ms,
        )
        self._log.info("call.ended", **summary)
        if self.call is not None:
            self._observer.call_ended(
                CallEnded(
                    call_sid=self.call.call_sid,
                    stream_sid=self.call.stream_sid,
                    ended_at=datetime.datetime.now(datetime.UTC),
                    ended_by=summary["ended_by"],
                    deepgram_request_ids=tuple(rid for c in counters for rid in c.request_ids),
                    audio_s_by_track=self._pipeline.audio_s_by_track() if self._pipeline is not None else {},
                    summary=summary,
                    coverage=tuple(self._pipeline.coverage(self.pause.muted)) if self._pipeline is not None else (),
                )
            )

    async def wait_finished(self) -> None:
        await self.finished.wait()

    @property
    def messages_in(self) -> int:
        """Every message Twilio sent on this stream (for /metrics)."""
        return self._messages.count

    @property
    def active(self) -> bool:
        return not self.finished.is_set()
