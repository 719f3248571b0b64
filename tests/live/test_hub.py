"""The feed's fan-out (service/live/hub.py): what a call pays for its watchers, and what a slow watcher costs."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from service.live import format as live
from service.live.format import LiveEvent
from service.live.hub import LiveHub, LocalPublisher
from service.web.live import OPENING, feed_chunks
from tests.live.test_format import transcript


def hub(subscribers: int = 50, queue_bound: int = 100) -> LiveHub:
    return LiveHub(window_s=60, max_events=1000, queue_bound=queue_bound, max_subscribers=subscribers, floor=(0, 0))


async def test_fifty_subscribers_cost_one_encode_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """One transcript to 50 subscribers: its JSON is made once, and every subscriber's frame is the same bytes."""
    made: list[str] = []
    real = live.payload

    def counted(kind: str, source: object) -> dict[str, Any]:
        made.append(kind)
        return real(kind, source)

    monkeypatch.setattr(live, "payload", counted)
    feed = hub()
    subscribers = [feed.subscribe(None, None) for _ in range(50)]
    LocalPublisher(feed).publish(live.TRANSCRIPT, "CA1", transcript())
    assert made == [], "delivering serializes nothing: only a reader does"
    frames = []
    for sub in subscribers:
        item = await sub.next(heartbeat_s=1.0)
        assert isinstance(item, LiveEvent)
        frames.append(item.frame())  # as each feed's response loop (`web/live.py`) does
    assert made == [live.TRANSCRIPT], "one encode for 50 readers"
    assert all(frame is frames[0] for frame in frames)
    assert b'"text":"hello there"' in frames[0]


async def test_a_burst_of_events_goes_to_a_feed_in_one_write_in_order() -> None:
    """Events delivered one at a time, the loop running between them (calls starting one after another), wake the
    feed's reader once (FEED_FLUSH_S) and leave as one chunk, in order; the last word still comes after the queue."""
    feed = hub()
    sub = feed.subscribe(None, None)
    chunks = feed_chunks(feed, sub, heartbeat_s=5.0)
    assert await anext(chunks) == OPENING
    reading = asyncio.ensure_future(anext(chunks))
    await asyncio.sleep(0)  # the reader waits for events now
    publisher = LocalPublisher(feed)
    for call_sid in ("CA1", "CA2", "CA3"):
        publisher.publish(live.TRANSCRIPT, call_sid, transcript(call_sid=call_sid))
        for _ in range(5):  # turns of the loop in which a reader woken per event would have taken it alone
            await asyncio.sleep(0)
        assert not reading.done()
    burst = await reading
    assert burst.count(b"event: transcript\n") == 3
    assert [burst.index(f'"call_sid":"{sid}"'.encode()) for sid in ("CA1", "CA2", "CA3")] == sorted(
        burst.index(f'"call_sid":"{sid}"'.encode()) for sid in ("CA1", "CA2", "CA3")
    )
    publisher.publish(live.TRANSCRIPT, "CA4", transcript(call_sid="CA4"))
    feed.close("restarting", retry_ms=2000)
    rest = [chunk async for chunk in chunks]
    assert len(rest) == 2
    assert b'"call_sid":"CA4"' in rest[0]
    assert b"feed.closing" in rest[1]


def test_delivering_never_waits_for_a_reader() -> None:
    """`deliver` is synchronous: a call's path never awaits a reader; each subscriber's queue has the event on
    return, whether or not anyone reads it. (Dropping a reader that stopped reading is
    tests/e2e/test_live_feed.py's: it counts a process-wide metric.)"""
    assert not inspect.iscoroutinefunction(LiveHub.deliver)
    feed = hub(subscribers=3)
    subscribers = [feed.subscribe(None, None) for _ in range(3)]
    LocalPublisher(feed).publish(live.TRANSCRIPT, "CA1", transcript())
    assert [len(sub.queue) for sub in subscribers] == [1, 1, 1]
