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

    async def send_audio(self, audio: bytes) -> None:
        if self.fail:
            raise SttUnavailable("network error while sending audio", failure=SttFailure.NETWORK)
        self.sent.append(audio)
        self.sent_at.append(asyncio.get_running_loop().time())

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
