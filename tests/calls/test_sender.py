"""The sending half on its own: the read loop's send (`send_now`) in each state, and the sender's one alarm."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from service.calls.counters import TrackCounters
from service.calls.pipeline.engine_state import Connection, EngineSide, EngineState
from service.calls.pipeline.ledger import AudioLedger
from service.calls.pipeline.sender import TrackSender, Wakeup
from service.errors import SttFailure, SttUnavailable
from tests.helpers.clock import virtual_time
from tests.helpers.service import make_settings
from tests.helpers.waiting import eventually

FRAME = b"\x01" * 160


@dataclass
class RecordingLive:
    """A connection that keeps what is sent to it; `fail` makes audio sends fail as a dropped socket does."""

    sent: list[bytes] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # loop time of each audio send
    control: list[str] = field(default_factory=list)
    fail: bool = False
    a_send: asyncio.Event = field(default_factory=asyncio.Event)  # set at each audio send

    async def send_audio(self, audio: bytes) -> None:
        if self.fail:
            raise SttUnavailable("network error while sending audio", failure=SttFailure.NETWORK)
        self.sent.append(audio)
        self.sent_at.append(asyncio.get_running_loop().time())
        self.a_send.set()

    async def next_send(self) -> float:
        """The loop time of the next audio send (awaited; on a virtual clock the timeout costs no real time)."""
        self.a_send.clear()
        await asyncio.wait_for(self.a_send.wait(), timeout=30.0)
        return self.sent_at[-1]

    async def keep_alive(self) -> None:
        self.control.append("KeepAlive")

    async def close_stream(self) -> None:
        self.control.append("CloseStream")


@dataclass
class Running:
    sender: TrackSender
    side: EngineSide
    ledger: AudioLedger
    counters: TrackCounters
    live: RecordingLive


@pytest.fixture
async def running(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    """A sender on an open connection, run until it sleeps (`audio_batch_ms` from the test's parameter)."""
    ledger, side, counters = AudioLedger(), EngineSide(), TrackCounters()
    side.move(EngineState.OPEN)
    settings = make_settings(audio_batch_ms=getattr(request, "param", 20))
    sender = TrackSender(ledger=ledger, side=side, counters=counters, settings=settings)
    live = RecordingLive()
    task = asyncio.create_task(sender.run(Connection(live)))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    yield Running(sender, side, ledger, counters, live)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def batching(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    """A sender batching `audio_batch_ms` (the test's parameter) on an open connection, on a virtual clock."""
    loop = asyncio.get_running_loop()
    with virtual_time(loop):
        ledger, side, counters = AudioLedger(), EngineSide(), TrackCounters()
        side.move(EngineState.OPEN)
        sender = TrackSender(
            ledger=ledger, side=side, counters=counters, settings=make_settings(audio_batch_ms=request.param)
        )
        live = RecordingLive()
        task = asyncio.create_task(sender.run(Connection(live)))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        yield Running(sender, side, ledger, counters, live)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def sending(ledger: AudioLedger, *, replay_bytes: int) -> AsyncIterator[tuple[TrackSender, RecordingLive]]:
    """A sender started on a connection whose first `replay_bytes` are a replay, with `ledger` already filled."""
    side = EngineSide()
    side.move(EngineState.OPEN)
    sender = TrackSender(ledger=ledger, side=side, counters=TrackCounters(), settings=make_settings())
    live = RecordingLive()
    task = asyncio.create_task(sender.run(Connection(live, replay_bytes=replay_bytes)))  # type: ignore[arg-type]
    try:
        yield sender, live
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def filled(frames: int) -> AudioLedger:
    ledger = AudioLedger()
    for seq in range(frames):
        ledger.receive(bytes([seq % 256]) * 160)
    return ledger


async def test_an_idle_sender_leaves_the_frame_to_the_read_loop(running: Running) -> None:
    assert running.side.state is EngineState.IDLE
    running.ledger.receive(FRAME)  # as `push` does, without waking the sender
    await running.sender.send_now()
    assert running.live.sent == [FRAME]
    assert (running.counters.messages_sent, running.counters.bytes_sent) == (1, 160)
    assert running.ledger.unacknowledged_bytes == 160, "sent, and kept until a final covers it"
    assert not running.sender.wakeup.is_set(), "the sender slept through it: no task switch"


@pytest.mark.parametrize("running", [100], indirect=True)
async def test_with_batches_the_read_loop_never_sends(running: Running) -> None:
    """AUDIO_BATCH_MS=100: the sender collects frames itself, so it sleeps OPEN, never IDLE."""
    assert running.side.state is EngineState.OPEN
    running.ledger.receive(FRAME)
    await running.sender.send_now()
    assert running.live.sent == []


async def test_once_input_ends_the_read_loop_never_sends(running: Running) -> None:
    running.side.move(EngineState.DRAINING)  # Twilio's stop, while the sender sleeps
    running.ledger.receive(FRAME)
    await running.sender.send_now()
    assert running.live.sent == []
    running.sender.wakeup.set()
    await asyncio.sleep(0.01)
    assert (running.live.sent, running.live.control) == ([FRAME], ["CloseStream"]), "the sender flushes and closes"


async def test_a_backlog_goes_at_once_in_messages_of_250_ms() -> None:
    """Three seconds that queued while the first connection opened: 13 messages, back to back, no pace."""
    ledger = filled(150)
    audio = b"".join(bytes([seq % 256]) * 160 for seq in range(150))
    async with sending(ledger, replay_bytes=0) as (sender, live):
        await asyncio.sleep(0)  # the sender's first turn: every message, none of them after a sleep
        assert [len(message) for message in live.sent] == [1920] * 12 + [960]
        assert b"".join(live.sent) == audio
        ledger.receive(FRAME)  # the first live frame after it goes alone, from the read loop
        await sender.send_now()
        assert live.sent[-1] == FRAME


async def test_a_replay_goes_in_messages_of_250_ms_at_the_pace() -> None:
    """Three seconds to replay after a failure: the burst's two messages at once, then one per 0.2 s."""
    loop = asyncio.get_running_loop()
    ledger = filled(150)
    async with sending(ledger, replay_bytes=24_000) as (_, live):
        started = loop.time()
        await asyncio.sleep(0)
        assert [len(message) for message in live.sent] == [1920] * 2, "the burst: two messages at once"
        await eventually(lambda: len(live.sent) >= 4, timeout=5.0)
        assert [len(message) for message in live.sent[:4]] == [1920] * 4
        # Due when 1.25x real time allows them: (3840 + 1920 - 4000) / 10,000 s and (5760 + 1920 - 4000) / 10,000 s.
        assert live.sent_at[2] - started >= 0.17
        assert live.sent_at[3] - started >= 0.36


async def test_a_failed_send_from_the_read_loop_is_replayed_later(running: Running) -> None:
    running.live.fail = True
    running.ledger.receive(FRAME)
    await running.sender.send_now()
    assert running.counters.messages_sent == 0
    assert running.sender.wakeup.is_set(), "the sender takes over (and finds the connection gone)"
    assert running.ledger.unacknowledged_bytes == 160, "not final: the next connection replays it"


async def test_an_alarm_is_moved_only_earlier() -> None:
    """One alarm for all sleeps: a later deadline keeps the earlier alarm, which just rings early."""
    wakeup = Wakeup()
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(wakeup.sleep(0.05))
    await asyncio.sleep(0)
    wakeup.set()
    await first
    started = loop.time()
    await asyncio.wait_for(wakeup.sleep(10.0), timeout=1.0)
    assert loop.time() - started < 0.5, "the earlier alarm still rang: no new timer for the later sleep"
    started = loop.time()
    await wakeup.sleep(0.05)
    assert loop.time() - started >= 0.04, "an earlier deadline moves the alarm"


async def test_a_disarmed_alarm_rings_no_more() -> None:
    wakeup = Wakeup()
    sleeping = asyncio.create_task(wakeup.sleep(0.02))
    await asyncio.sleep(0)
    wakeup.set()
    await sleeping
    wakeup.disarm()
    await asyncio.sleep(0.05)
    assert wakeup.is_set(), "still the set() from before"
    wakeup.clear()
    await asyncio.sleep(0.05)
    assert not wakeup.is_set(), "the old alarm did not ring"


def frame(seq: int) -> bytes:
    return bytes([seq % 256]) * 160


@pytest.mark.parametrize("batching", [100], indirect=True)
async def test_a_partial_batch_leaves_at_its_deadline_and_no_frame_wakes_the_sender(batching: Running) -> None:
    """AUDIO_BATCH_MS=100, two frames and a pause: both go together 100 ms after the first came (the batch's
    deadline), on the first frame's alarm; neither frame woke the sender."""
    loop = asyncio.get_running_loop()
    first_at = loop.time()
    batching.sender.queue(frame(0))
    assert not batching.sender.wakeup.is_set(), "a frame only joins the ledger"
    await asyncio.sleep(0.02)  # virtual: Twilio's next frame, 20 ms later
    batching.sender.queue(frame(1))
    assert not batching.sender.wakeup.is_set()
    assert batching.live.sent == []
    sent_at = await batching.live.next_send()
    assert sent_at == pytest.approx(first_at + 0.1, abs=1e-9)
    assert batching.live.sent == [frame(0) + frame(1)]


@pytest.mark.parametrize("batching", [100], indirect=True)
async def test_a_full_batch_leaves_at_once(batching: Running) -> None:
    """Five frames at one instant (a backlog read at once) fill a 100 ms batch: it goes then, not at its deadline."""
    loop = asyncio.get_running_loop()
    at = loop.time()
    for seq in range(5):
        batching.sender.queue(frame(seq))
    assert batching.sender.wakeup.is_set(), "the full batch wakes the sender"
    assert await batching.live.next_send() == at
    assert batching.live.sent == [b"".join(frame(seq) for seq in range(5))]


@pytest.mark.parametrize("batching", [400], indirect=True)
async def test_batched_audio_arrives_whole_in_order_each_frame_within_its_batch(batching: Running) -> None:
    """AUDIO_BATCH_MS=400 and 103 frames 20 ms apart, then the stream's end: every byte goes once, in order, in
    messages of 400 ms (each leaving on the frame that fills it) and the rest at the end; one wake per batch."""
    loop = asyncio.get_running_loop()
    came_at: list[float] = []
    wakes = 0
    wait = batching.sender.wakeup.wait

    async def counted_wait() -> bool:
        nonlocal wakes
        woke = await wait()
        wakes += 1
        return woke

    batching.sender.wakeup.wait = counted_wait  # type: ignore[method-assign]
    for seq in range(103):
        came_at.append(loop.time())
        batching.sender.queue(frame(seq))
        await asyncio.sleep(0.02)
    batching.side.move(EngineState.DRAINING)  # Twilio's stop, as `TrackStream.end` does
    batching.sender.wakeup.set()
    await eventually(lambda: batching.live.control == ["CloseStream"])
    assert b"".join(batching.live.sent) == b"".join(frame(seq) for seq in range(103))
    assert [len(message) for message in batching.live.sent] == [3200] * 5 + [480]
    for index, sent_at in enumerate(batching.live.sent_at[:5]):
        assert sent_at == came_at[index * 20 + 19], f"batch {index} left when its last frame came"
    assert wakes <= 2 * 6, f"{wakes} wake-ups for 6 messages: the sender is woken per batch, not per frame"


@pytest.mark.parametrize("batching", ["auto"], indirect=True)
async def test_auto_sends_each_frame_alone_while_the_process_keeps_up(batching: Running) -> None:
    """AUDIO_BATCH_MS=auto and frames at Twilio's pace: each goes from the read loop as it comes, alone, and the
    sender sleeps through them (as at 20 ms)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)
    assert batching.side.state is EngineState.IDLE
    came_at = []
    for seq in range(5):
        came_at.append(loop.time())
        batching.sender.queue(frame(seq))
        await batching.sender.send_now()
        assert not batching.sender.wakeup.is_set()
        await asyncio.sleep(0.02)  # virtual
    assert batching.live.sent == [frame(seq) for seq in range(5)]
    assert batching.live.sent_at == came_at


@pytest.mark.parametrize("batching", ["auto"], indirect=True)
async def test_auto_sends_what_queued_while_the_process_was_busy_together_at_once(batching: Running) -> None:
    """Ten frames read back to back (they waited in the socket): the first goes alone at once; the nine behind it
    go in one message as soon as the read loop waits for more, not at any deadline; nothing lost or reordered."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)
    at = loop.time()
    for seq in range(10):  # the read loop, never yielding: each `send_now` returns without awaiting
        batching.sender.queue(frame(seq))
        await batching.sender.send_now()
    assert batching.live.sent == [frame(0)]
    assert batching.sender.wakeup.is_set(), "the backlog is the sender's"
    assert await batching.live.next_send() == at, "sent when the read loop yields, the same instant"
    assert batching.live.sent == [frame(0), b"".join(frame(seq) for seq in range(1, 10))]
    await asyncio.sleep(0.02)  # virtual: the next frame at Twilio's pace goes alone again
    batching.sender.queue(frame(10))
    await batching.sender.send_now()
    assert batching.live.sent[-1] == frame(10)
    assert batching.counters.messages_sent == 3
