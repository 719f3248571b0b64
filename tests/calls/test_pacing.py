"""The sender's deadlines as numbers: catch-up, replay pace, batching, KeepAlive, how long an idle sender sleeps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.calls.pipeline.pacing import (
    MESSAGE_MAX_BYTES,
    Batching,
    NextMessage,
    ahead_of_pace,
    idle_sleep_s,
    is_backlog,
    keepalive_in,
    next_message,
)

# 8000 bytes are one second of audio; the pace is 1.25x that (10,000 bytes a second) after a 4000-byte burst.


@pytest.mark.parametrize(
    ("sent_bytes", "elapsed_s", "ahead_s"),
    [
        (0, 0.0, -0.4),  # nothing sent: a whole burst may go at once
        (4000, 0.0, 0.0),  # the burst, at once: exactly at the limit, still allowed
        (4160, 0.0, 0.016),  # one frame beyond the burst at once: wait for it
        (14_000, 1.0, 0.0),  # burst plus one second at 1.25x: exactly on pace
        (24_000, 1.0, 1.0),  # burst plus two seconds' pace in one: a second ahead
        (8000, 1.0, -0.6),  # live audio (1x real time) never gets ahead
        (804_000, 80.0, 0.0),  # a long replay keeps the same rate, with no drift
    ],
)
def test_replay_pace(sent_bytes: int, elapsed_s: float, ahead_s: float) -> None:
    assert ahead_of_pace(sent_bytes, elapsed_s) == pytest.approx(ahead_s, abs=1e-9)


@pytest.mark.parametrize(
    ("sent_bytes", "elapsed_s", "ahead_s"), [(8000, 0.0, 0.0), (28_000, 1.0, 0.0), (28_320, 1.0, 0.016)]
)
def test_two_interleaved_channels_replay_at_the_same_pace_in_audio_time(
    sent_bytes: int, elapsed_s: float, ahead_s: float
) -> None:
    """Two channels carry twice the bytes per second: the burst and the 1.25x pace double with them."""
    assert ahead_of_pace(sent_bytes, elapsed_s, channels=2) == pytest.approx(ahead_s, abs=1e-9)
    assert next_message(
        pending_bytes=640, sent_bytes=sent_bytes - 640, replay_bytes=10**6, elapsed_s=elapsed_s, channels=2
    ) == (NextMessage(MESSAGE_MAX_BYTES) if ahead_s <= 0 else NextMessage(0, pytest.approx(ahead_s)))


@pytest.mark.parametrize(
    ("pending", "sent", "replay", "elapsed_s", "max_bytes", "expected"),
    [
        # Catching up (nothing to replay: the first connection, or a replay already out): all at once, 250 ms a message.
        (160, 0, 0, 0.0, 2000, NextMessage(2000)),  # one live frame
        (24_000, 0, 0, 0.0, 2000, NextMessage(2000)),  # 3 s queued while the first connection opened: no wait
        (24_000, 200_000, 0, 1.0, 2000, NextMessage(2000)),  # far ahead of any pace: catch-up has none
        (8000, 30_000, 24_000, 2.0, 2000, NextMessage(2000)),  # the replay is out: what queued since catches up
        # Replaying (the connection's first `replay` bytes): 1.25x real time after a 4000-byte burst.
        (24_000, 0, 24_000, 0.0, 2000, NextMessage(2000)),  # the first message, inside the burst
        (22_000, 2000, 24_000, 0.0, 2000, NextMessage(2000)),  # the second: 4000 bytes, exactly the burst
        (20_000, 4000, 24_000, 0.0, 2000, NextMessage(0, 0.2)),  # the third waits: 250 ms of audio at 1.25x
        (20_000, 4000, 24_000, 0.1, 2000, NextMessage(0, 0.1)),  # ... half of it already waited
        (20_000, 4000, 24_000, 0.2, 2000, NextMessage(2000)),  # ... and then goes, whole
        (500, 23_500, 24_000, 1.9, 2000, NextMessage(0, 0.1)),  # a short last piece waits only for its own bytes
        (0, 4000, 24_000, 0.0, 2000, NextMessage(0, 0.0001)),  # nothing pending: as if one byte were
        (8000, 4000, 24_000, 0.0, 800, NextMessage(0, 0.08)),  # the caller's bound (AUDIO_BATCH_MS=100: 800 bytes)
    ],
)
def test_the_next_message(  # noqa: PLR0917 - one parameter per column of the table
    pending: int, sent: int, replay: int, elapsed_s: float, max_bytes: int, expected: NextMessage
) -> None:
    """How much goes now, or how long to wait: a backlog never waits, a replay waits once per message."""
    got = next_message(
        pending_bytes=pending, sent_bytes=sent, replay_bytes=replay, elapsed_s=elapsed_s, max_bytes=max_bytes
    )
    assert got.max_bytes == expected.max_bytes
    assert got.wait_s == pytest.approx(expected.wait_s)


def test_a_replay_goes_at_the_pace_in_whole_messages() -> None:
    """Ten seconds of replay, planned message by message: 1.25x real time on average, every message 250 ms."""
    sent, now, waits, sizes = 0, 0.0, 0, []
    replay = 80_000
    while sent < replay:
        planned = next_message(pending_bytes=replay - sent, sent_bytes=sent, replay_bytes=replay, elapsed_s=now)
        if planned.wait_s > 0:
            now += planned.wait_s
            waits += 1
            continue
        size = min(planned.max_bytes, replay - sent)
        sizes.append(size)
        sent += size
    assert set(sizes) == {MESSAGE_MAX_BYTES}
    assert waits == len(sizes) - 2, "one timer per message, none for the burst's two"
    assert now == pytest.approx((replay - 4000) / 10_000), "the last message went when the pace allowed it"


@pytest.mark.parametrize(
    ("audio_batch_ms", "chunks", "wait_s"),
    [
        (20, 1, 0.02),  # the default: every frame alone (a batch of one is always full: nothing waits)
        (40, 2, 0.04),  # two frames: the second fills the batch 20 ms after the first; a pause, 40 ms
        (100, 5, 0.1),  # five frames
        (400, 20, 0.4),  # the maximum (Deepgram's Twilio sample): twenty frames
        (50, 2, 0.05),  # not a whole number of frames: whole frames, the wait as asked
    ],
)
def test_batching_from_the_setting(audio_batch_ms: int, chunks: int, wait_s: float) -> None:
    batch = Batching.of(audio_batch_ms)
    assert (batch.chunks, batch.wait_s) == (chunks, pytest.approx(wait_s))


@pytest.mark.parametrize(
    ("batch", "pending", "now", "flush", "send_in_s"),
    [
        (Batching(5, 0.08), 0, 10.5, False, None),  # nothing pending: no deadline
        (Batching(5, 0.08), 0, 10.5, True, None),  # nothing pending, input ended: still nothing to send
        (Batching(5, 0.08), 5, 10.0, False, 0.0),  # a full batch goes at once
        (Batching(5, 0.08), 7, 10.0, False, 0.0),  # more than a batch (after a reconnect): at once
        (Batching(5, 0.08), 2, 10.03, False, 0.05),  # a partial batch waits for the rest
        (Batching(5, 0.08), 2, 10.1, False, -0.02),  # ... but no longer than the batch lasts
        (Batching(5, 0.08), 2, 10.0, True, 0.0),  # input ended: what there is goes now
        (Batching(1, 0.0), 1, 10.0, False, 0.0),  # one frame per message: every frame goes at once
    ],
)
def test_when_pending_frames_go(
    batch: Batching, pending: int, now: float, flush: bool, send_in_s: float | None
) -> None:
    """The oldest pending frame came at 10.0."""
    got = batch.send_in(pending, 10.0, now, flush=flush)
    assert got == (None if send_in_s is None else pytest.approx(send_in_s))


@pytest.mark.parametrize(
    ("last_sent_at", "now", "due_in_s"),
    [
        (100.0, 100.0, 4.0),  # just sent: a whole period to go
        (100.0, 102.5, 1.5),
        (100.0, 104.0, 0.0),  # due exactly now
        (100.0, 109.0, -5.0),  # overdue (the loop was busy): send at once
    ],
)
def test_keepalive_deadline(last_sent_at: float, now: float, due_in_s: float) -> None:
    assert keepalive_in(4.0, last_sent_at, now) == pytest.approx(due_in_s)


@pytest.mark.parametrize(
    ("keepalive_in_s", "send_in_s", "result_timeout_s", "sleep_s"),
    [
        (3.0, None, None, 3.0),  # nothing pending, nothing awaiting results: until KeepAlive
        (3.0, 0.05, None, 0.05),  # a partial batch: until it is due
        (0.01, 0.05, None, 0.01),  # KeepAlive first, even with a batch waiting
        (3.0, None, 15.0, 3.0),  # awaiting results: the result timeout is longer, KeepAlive comes first
        (3.0, None, 1.0, 1.0),  # awaiting results with a short DEEPGRAM_RESULT_TIMEOUT_S: wake to check
        (3.0, 0.05, 1.0, 0.05),  # all three: the earliest
    ],
)
def test_idle_sleep(
    keepalive_in_s: float, send_in_s: float | None, result_timeout_s: float | None, sleep_s: float
) -> None:
    assert idle_sleep_s(keepalive_in_s, send_in_s, result_timeout_s) == sleep_s


@pytest.mark.parametrize(
    "module",
    [
        "service.calls.pipeline.pacing",
        "service.calls.pipeline.interleave",
        "service.calls.pipeline.timeline",
        "service.calls.pipeline.engine_state",
        "service.calls.stream.ending",
    ],
)
def test_pure_modules_import_no_runtime(module: str) -> None:
    """Pure means not even indirectly: no event loop, no logging library, no database toolkit."""
    probe = f"import sys, {module}; print(sorted({{'asyncio', 'structlog', 'sqlalchemy'}} & set(sys.modules)))"
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(  # noqa: S603 - our own interpreter, our own probe
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("since_last_s", "backlog"),
    [
        (0.02, False),  # Twilio's pace: one frame every 20 ms
        (0.012, False),  # a frame a little early (network jitter): still live
        (0.0099, True),  # closer than half a frame: it waited in the socket while the process was busy
        (0.0, True),  # read back to back
    ],
)
def test_auto_tells_a_backlog_by_the_gap_between_frames(since_last_s: float, backlog: bool) -> None:
    assert is_backlog(since_last_s) is backlog
