"""The sending half on its own: the read loop's send (`send_now`) in each state, and the sender's one alarm."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from service.calls.counters import TrackCounters
from service.calls.deepgram_state import Connection, DeepgramSide, DeepgramState
from service.calls.ledger import AudioLedger
from service.calls.sender import TrackSender, Wakeup
from service.errors import SttFailure, SttUnavailable
from tests.helpers.service import make_settings

FRAME = b"\x01" * 160


@dataclass
class RecordingLive:
    """A connection that keeps what is sent to it; `fail` makes audio sends fail as a dropped socket does."""

    sent: list[bytes] = field(default_factory=list)
    control: list[str] = field(default_factory=list)
    fail: bool = False

    async def send_audio(self, audio: bytes) -> None:
        if self.fail:
            raise SttUnavailable("network error while sending audio", failure=SttFailure.NETWORK)
        self.sent.append(audio)

    async def keep_alive(self) -> None:
        self.control.append("KeepAlive")

    async def close_stream(self) -> None:
        self.control.append("CloseStream")


@dataclass
class Running:
    sender: TrackSender
    side: DeepgramSide
    ledger: AudioLedger
    counters: TrackCounters
    live: RecordingLive


@pytest.fixture
async def running(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    """A sender on an open connection, run until it sleeps (`audio_batch_ms` from the test's parameter)."""
    ledger, side, counters = AudioLedger(), DeepgramSide(), TrackCounters()
    side.move(DeepgramState.OPEN)
    settings = make_settings(audio_batch_ms=getattr(request, "param", 20))
    sender = TrackSender(ledger=ledger, side=side, counters=counters, settings=settings)
    live = RecordingLive()
    task = asyncio.create_task(sender.run(Connection(live)))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    yield Running(sender, side, ledger, counters, live)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_idle_sender_leaves_the_frame_to_the_read_loop(running: Running) -> None:
    assert running.side.state is DeepgramState.IDLE
    running.ledger.receive(FRAME)  # as `push` does, without waking the sender
    await running.sender.send_now()
    assert running.live.sent == [FRAME]
    assert (running.counters.messages_sent, running.counters.bytes_sent) == (1, 160)
    assert running.ledger.unacknowledged_bytes == 160, "sent, and kept until a final covers it"
    assert not running.sender.wakeup.is_set(), "the sender slept through it: no task switch"


@pytest.mark.parametrize("running", [100], indirect=True)
async def test_with_batches_the_read_loop_never_sends(running: Running) -> None:
    """AUDIO_BATCH_MS=100: the sender collects frames itself, so it sleeps OPEN, never IDLE."""
    assert running.side.state is DeepgramState.OPEN
    running.ledger.receive(FRAME)
    await running.sender.send_now()
    assert running.live.sent == []


async def test_once_input_ends_the_read_loop_never_sends(running: Running) -> None:
    running.side.move(DeepgramState.DRAINING)  # Twilio's stop, while the sender sleeps
    running.ledger.receive(FRAME)
    await running.sender.send_now()
    assert running.live.sent == []
    running.sender.wakeup.set()
    await asyncio.sleep(0.01)
    assert (running.live.sent, running.live.control) == ([FRAME], ["CloseStream"]), "the sender flushes and closes"


async def test_ahead_of_the_replay_pace_the_sender_takes_the_frame(running: Running) -> None:
    """A second of replay just went out at once (the burst allows half): the next frame waits for the pace."""
    running.ledger.receive(b"\x01" * 8000)
    running.sender.wakeup.set()
    await asyncio.sleep(0)  # the sender sends the burst and sleeps again
    running.ledger.receive(FRAME)
    await running.sender.send_now()
    assert running.live.sent == [b"\x01" * 8000]
    assert running.sender.wakeup.is_set(), "the sender is woken to send it when the pace allows"
    async with asyncio.timeout(3):  # due (8000 + 160 - 4000) / 10,000 = 0.416 s after the connection started
        while True:
            if len(running.live.sent) == 2:
                break
            await asyncio.sleep(0.02)
    assert running.live.sent == [b"\x01" * 8000, FRAME]


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
