"""Orchestration: the sending half of a track's Deepgram side, and the read loop's shortcut around it.

`TrackSender.run` is one connection's sender task: the ledger to Deepgram (`pacing.py`: a backlog goes at
once in messages of up to 250 ms, a replay after a reconnect in the same messages at 1.25x real time, frames
batched with AUDIO_BATCH_MS), KeepAlive when idle, CloseStream once input ends. `send_now`
lets Twilio's read loop send a frame itself while that task sleeps; its docstring tells the whole shortcut.
"""

from __future__ import annotations

import asyncio

from service import mulaw
from service.calls.counters import TrackCounters
from service.calls.pipeline.engine_state import DRAINING, IDLE, Connection, EngineSide, EngineState
from service.calls.pipeline.ledger import AudioLedger
from service.calls.pipeline.pacing import (
    MESSAGE_MAX_BYTES,
    Batching,
    idle_sleep_s,
    is_backlog,
    keepalive_in,
    next_message,
)
from service.errors import SttError, SttFailure, SttUnavailable
from service.settings import Settings


class Wakeup(asyncio.Event):
    """The sender's wake-up: the Twilio side `set()`s it (the Event's own method), and it rings itself at the
    sender's next deadline.

    One alarm stays set, and is moved only when it is due later than the new deadline: a sleep makes no timer
    of its own, and neither does a frame. An alarm that rings early (audio kept coming) just wakes the sender
    once to find nothing to do.
    """

    def __init__(self) -> None:
        super().__init__()
        self._alarm: asyncio.TimerHandle | None = None

    async def sleep(self, timeout_s: float) -> None:
        """Until `set()`, or `timeout_s` passes (the sleeper re-checks either way)."""
        self.clear()
        loop = asyncio.get_running_loop()
        self.ring_at(loop.time() + timeout_s, loop)
        await self.wait()

    def ring_at(self, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        """Ring at `deadline` (loop time) at the latest: the alarm moves only earlier."""
        alarm = self._alarm
        if alarm is None or alarm.when() > deadline:
            if alarm is not None:
                alarm.cancel()
            self._alarm = loop.call_at(deadline, self._ring)

    def disarm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None

    def _ring(self) -> None:
        self._alarm = None
        self.set()


class TrackSender:
    """Sends one track's ledger to its Deepgram connections, one connection at a time."""

    def __init__(self, *, ledger: AudioLedger, side: EngineSide, counters: TrackCounters, settings: Settings) -> None:
        self.wakeup = Wakeup()  # `push` and `end` set it
        # AUDIO_BATCH_MS=auto: frames go alone (as at 20 ms), but a backlog the read loop finds goes together.
        self._auto = settings.audio_batch_ms == "auto"
        self._last_read_at = float("-inf")  # auto: loop time the read loop last sent a frame itself
        batch = Batching.of(mulaw.FRAME_MS if settings.audio_batch_ms == "auto" else settings.audio_batch_ms)
        self.batching = batch.chunks > 1  # frames wait to go together (`queue` tells how)
        self.batch_chunks = batch.chunks
        self.batch_started_at = 0.0  # loop time when the first pending frame of a batch came
        self._batch = batch
        # The most audio one message carries: a batch when batching, else whatever is pending, up to 250 ms.
        message_bytes = batch.chunks * mulaw.FRAME_BYTES if self.batching else MESSAGE_MAX_BYTES
        self._message_bytes = message_bytes * ledger.channels  # interleaved channels: the same audio time
        self._ledger = ledger
        self._side = side
        self._counters = counters
        self._settings = settings
        self._connection: Connection | None = None  # the one `run` sends on; `send_now` uses it only while IDLE

    def queue(self, payload: bytes) -> None:
        """The Twilio side: a frame (or both tracks' interleaved) into the ledger; never waits.

        The sender is woken only when it must act. Batching, it sleeps until the batch's deadline (its first
        frame's time plus the batch's wait, an alarm the first frame sets) or until the batch is full: a frame
        costs its append, and a batch one wake-up, not one per frame. Not batching, an IDLE sender sleeps on and
        the read loop sends the frame (`send_now`); in any other state the frame wakes the sender.
        """
        ledger = self._ledger
        if self.batching:
            pending = ledger.pending_chunks
            if not pending:
                loop = asyncio.get_running_loop()
                self.batch_started_at = now = loop.time()
                self.wakeup.ring_at(now + self._batch.wait_s, loop)
            ledger.receive(payload)
            if pending + 1 >= self.batch_chunks:
                self.wakeup.set()
        else:
            ledger.receive(payload)
            if self._side.state is not IDLE:
                self.wakeup.set()

    async def send_now(self) -> None:
        """Sending from the read loop: the frame `push` just queued goes to Deepgram from the caller's task.

        Twilio's read loop (`MediaStreams` in `web/media.py`) gives each message to `CallSession.on_message`,
        which pushes a frame to its track (`TrackStream.push`) and returns without awaiting; the loop then awaits
        `CallSession.send_pushed`, which calls this. While the sender task sleeps caught up on an open
        connection (IDLE, which it enters only when every frame goes alone: AUDIO_BATCH_MS of one frame),
        `push` does not wake it, and the frame goes from here: one task switch fewer per frame. In any other
        state `push` woke the sender, and this returns.

        The frame is written to the socket before the first await, so it keeps its place among the sender's
        messages (and anything else pending goes with it, up to a message's bound). The await returns at once
        unless Deepgram's socket is backed up, and long before that the ledger's bound (sent audio counts until
        it is final) moves the track to the spool. When the send fails, the sender is woken and takes over:
        the frame is in the ledger, unacknowledged, so the next connection replays it. A connection still
        replaying never sleeps IDLE (its replay is pending); should it, the sender is woken to pace it.

        With AUDIO_BATCH_MS=auto, a frame that comes less than half a frame after the last one this sent (a
        backlog: Twilio sends every 20 ms, so they queued while the process was busy) is left to the sender,
        woken here: it runs once the read loop has read what queued and waits for more, and sends it all in one
        message (up to 250 ms). While the process keeps up, every frame goes from here, alone, as at 20 ms.
        """
        connection = self._connection
        ledger = self._ledger
        if self._side.state is not IDLE or connection is None or not ledger.pending_chunks:
            return
        if ledger.connection_sent < connection.replay_bytes:
            self.wakeup.set()
            return
        now = asyncio.get_running_loop().time()
        if self._auto:
            backlog = is_backlog(now - self._last_read_at)
            self._last_read_at = now
            if backlog:
                self.wakeup.set()
                return
        chunk = ledger.take(self._message_bytes)
        try:
            await connection.live.send_audio(chunk)
        except SttError:
            self.wakeup.set()
            return
        self._sent(connection, chunk, now)

    async def run(self, connection: Connection) -> None:
        """Ledger to Deepgram (a backlog at once, a replay paced); KeepAlive when idle; CloseStream when input ends.

        Each pass sends one message; a backlog takes back-to-back passes with no sleep between them.
        """
        loop = asyncio.get_running_loop()
        ledger = self._ledger
        self._connection = connection
        connection.start_clocks(loop.time())
        try:
            while True:
                now = loop.time()
                self._check_deepgram_alive(connection, now)
                draining = self._side.state is DRAINING
                send_in_s = self._batch.send_in(ledger.pending_chunks, self.batch_started_at, now, flush=draining)
                if send_in_s is not None and send_in_s <= 0:
                    await self._send_pending(connection, now)
                elif draining:  # and nothing is pending
                    await connection.live.close_stream()
                    return
                else:
                    await self._idle(connection, now, send_in_s)
        finally:
            self.wakeup.disarm()

    async def _send_pending(self, connection: Connection, now: float) -> None:
        ledger = self._ledger
        planned = next_message(
            pending_bytes=ledger.pending_bytes,
            sent_bytes=ledger.connection_sent,
            replay_bytes=connection.replay_bytes,
            elapsed_s=now - connection.started_at,
            max_bytes=self._message_bytes,
            channels=ledger.channels,
        )
        if planned.wait_s > 0:  # replaying: the next message would be ahead of the pace Deepgram allows
            await asyncio.sleep(planned.wait_s)
            return
        chunk = ledger.take(planned.max_bytes)
        if self.batching:
            self.wakeup.disarm()  # this batch's deadline: spent, should the batch have filled before it
        await connection.live.send_audio(chunk)
        now = asyncio.get_running_loop().time()
        self._sent(connection, chunk, now)
        if self.batching and ledger.pending_chunks:
            self.batch_started_at = now  # what came meanwhile is the next batch, from now (the loop sets its alarm)

    async def _idle(self, connection: Connection, now: float, send_in_s: float | None) -> None:
        """Nothing to send yet: KeepAlive when due, else sleep until `push`, `end` or the next deadline."""
        settings = self._settings
        keepalive_in_s = keepalive_in(settings.deepgram_keepalive_s, connection.last_sent_at, now)
        if keepalive_in_s <= 0:
            await connection.live.keep_alive()
            self._counters.keepalives += 1
            connection.last_sent_at = asyncio.get_running_loop().time()
            return
        result_timeout_s = settings.deepgram_result_timeout_s if self._ledger.unacknowledged_bytes else None
        sleep_s = idle_sleep_s(keepalive_in_s, send_in_s, result_timeout_s)
        if self.batching:  # until the batch's deadline, or until `push` finds the batch full
            await self.wakeup.sleep(sleep_s)
            return
        self._side.move(EngineState.IDLE)  # every frame goes alone: meanwhile the read loop sends them
        try:
            await self.wakeup.sleep(sleep_s)
        finally:
            self._side.move(EngineState.OPEN)

    def _sent(self, connection: Connection, chunk: bytes, now: float) -> None:
        self._counters.bytes_sent += len(chunk)
        self._counters.messages_sent += 1
        connection.last_sent_at = now

    def _check_deepgram_alive(self, connection: Connection, now: float) -> None:
        limit = self._settings.deepgram_result_timeout_s
        if self._ledger.unacknowledged_bytes and now - connection.last_heard_at > limit:
            raise SttUnavailable(
                f"Deepgram sent nothing for DEEPGRAM_RESULT_TIMEOUT_S ({limit:g} s)", failure=SttFailure.SILENT
            )
