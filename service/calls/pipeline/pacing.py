"""Protocol layer (pure: times and byte counts in, seconds out): when a track's sender may send, and how much.

Times are seconds on one clock the caller picks; nothing here reads a clock. Two ways audio can be late, and
three deadlines:

- Catching up. Audio that waited only because this process was busy (or while the call's first connection
  opened) goes as soon as the loop gets to it: what is pending goes at once, coalesced into messages of up
  to MESSAGE_MAX_BYTES (250 ms, the top of Deepgram's advice of 20-250 ms per message), with no timer.
- Replaying. A connection that opens after a failed one starts with what the failure left unfinal plus what
  queued during the outage (its `replay_bytes`). Deepgram accepts replayed audio at up to 1.25x real time;
  a short burst on top covers what queued while connecting. The replay goes in the same coalesced messages,
  one timer per message, not per frame; once it is out, the connection only catches up.
- The batch. With AUDIO_BATCH_MS over one frame, frames go out together: a batch goes once it is full, or
  once its first frame has waited as long as the batch lasts (the stream paused, or ended). With `auto`,
  frames go alone unless they come as a backlog (`is_backlog`), which then goes together, as catching up.
- KeepAlive. Deepgram closes a stream that hears nothing for about 10 s; DEEPGRAM_KEEPALIVE_S after the
  last message, an idle sender sends KeepAlive.
"""

from __future__ import annotations

from dataclasses import dataclass

from service import mulaw

REPLAY_RATE = 1.25 * mulaw.BYTES_PER_SECOND
REPLAY_BURST_BYTES = mulaw.BYTES_PER_SECOND // 2
MESSAGE_MAX_BYTES = mulaw.BYTES_PER_SECOND // 4  # 250 ms


def ahead_of_pace(sent_bytes: int, elapsed_s: float, channels: int = 1) -> float:
    """Seconds a replaying connection that sent `sent_bytes` in its first `elapsed_s` is ahead of the replay pace.

    Zero or less means it may send now. `channels` interleaved channels carry that many times the bytes.
    """
    return (sent_bytes - REPLAY_BURST_BYTES * channels) / (REPLAY_RATE * channels) - elapsed_s


@dataclass(frozen=True, slots=True)
class NextMessage:
    """What the sender does next with pending audio: send up to `max_bytes` now, or wait `wait_s` first."""

    max_bytes: int
    wait_s: float = 0.0


def next_message(
    *,
    pending_bytes: int,
    sent_bytes: int,
    replay_bytes: int,
    elapsed_s: float,
    max_bytes: int = MESSAGE_MAX_BYTES,
    channels: int = 1,
) -> NextMessage:
    """The next message on a connection that has `pending_bytes` to send and sent `sent_bytes` in `elapsed_s`.

    The first `replay_bytes` of the connection are a replay, paced; anything after them is catch-up and goes
    at once. `max_bytes` bounds a message (the ledger sends whole chunks up to it, always at least one).
    """
    if sent_bytes >= replay_bytes:  # catching up (or live): everything pending, now
        return NextMessage(max_bytes)
    message = max(1, min(pending_bytes, max_bytes))
    wait_s = ahead_of_pace(sent_bytes + message, elapsed_s, channels)
    if wait_s <= 0:
        return NextMessage(max_bytes)
    return NextMessage(0, wait_s)  # one wait for the whole next message, not one per frame


@dataclass(frozen=True, slots=True)
class Batching:
    """AUDIO_BATCH_MS as the sender applies it."""

    chunks: int  # frames per message to Deepgram; 1 sends each frame as it comes
    wait_s: float  # how long a batch's first frame may wait for the rest

    @classmethod
    def of(cls, audio_batch_ms: int) -> Batching:
        """A batch's deadline is its whole length after its first frame: a steady stream fills it a frame
        sooner (frames come every 20 ms), so it goes full, on the frame that fills it, not on a timer racing it."""
        return cls(chunks=max(1, audio_batch_ms // mulaw.FRAME_MS), wait_s=audio_batch_ms / 1000)

    def send_in(self, pending_chunks: int, waiting_since: float, now: float, *, flush: bool) -> float | None:
        """Seconds until the pending frames should go (zero or less: now); None when no frame is pending.

        `waiting_since` is when the oldest pending frame came; `flush` (no more input) sends what there is.
        """
        if not pending_chunks:
            return None
        if flush or pending_chunks >= self.chunks:
            return 0.0
        return (waiting_since + self.wait_s) - now  # the deadline as the sender's alarm is set: to the bit


BACKLOG_GAP_S = mulaw.FRAME_MS / 2 / 1000  # frames closer than half a frame came from a backlog


def is_backlog(since_last_frame_s: float) -> bool:
    """AUDIO_BATCH_MS=auto: whether a frame read `since_last_frame_s` after the last one queued while the process
    was busy. Twilio sends a track's frames every 20 ms; read much closer together, they waited in the socket."""
    return since_last_frame_s < BACKLOG_GAP_S


def keepalive_in(period_s: float, last_sent_at: float, now: float) -> float:
    """Seconds until KeepAlive is due on a connection that last sent at `last_sent_at` (zero or less: now)."""
    return period_s - (now - last_sent_at)


def idle_sleep_s(keepalive_in_s: float, send_in_s: float | None, result_timeout_s: float | None) -> float:
    """How long a caught-up sender sleeps before it looks again.

    Until KeepAlive is due, or the pending batch (`send_in_s`, if any). While audio awaits results, the
    caller passes DEEPGRAM_RESULT_TIMEOUT_S as `result_timeout_s`, and the sleep is no longer than that, so
    a Deepgram gone silent is noticed.
    """
    sleep_s = keepalive_in_s if send_in_s is None else min(keepalive_in_s, send_in_s)
    return sleep_s if result_timeout_s is None else min(sleep_s, result_timeout_s)
