"""The feed's fan-out (service/live/hub.py): what a call pays for its watchers, and what a slow watcher costs."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from service.live import format as live
from service.live.format import LiveEvent
from service.live.hub import LiveHub, LocalPublisher
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


def test_delivering_never_waits_and_a_stuck_subscriber_is_dropped_there() -> None:
    """`deliver` is synchronous (a call's path never awaits a reader); a reader that stopped reading is dropped
    once its queue is full, while the others keep every event."""
    assert not inspect.iscoroutinefunction(LiveHub.deliver)
    feed = hub(subscribers=2, queue_bound=3)
    reading, stuck = feed.subscribe(None, None), feed.subscribe(None, None)
    publisher = LocalPublisher(feed)
    for _ in range(3):
        publisher.publish(live.TRANSCRIPT, "CA1", transcript())
    reading.queue.clear()  # this one keeps up
    publisher.publish(live.TRANSCRIPT, "CA1", transcript())
    assert feed.subscribers == 1
    assert stuck.ended is not None
    assert "LIVE_SUBSCRIBER_QUEUE (3)" in stuck.ended
    assert len(reading.queue) == 1
