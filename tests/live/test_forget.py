"""Erased calls leave the live feed: this process's replay buffer, board and subscribers' queues; with REDIS_URL
(a real Redis), the stream's entries, and through the control entry every other process's buffer, while a
process that starts later never sees them or the control entry as an event."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.calls.events import CallStarted, CallState, CallStateChanged
from service.live.format import CALL_STARTED, CALL_STATE, LiveEvent, parse_id
from service.live.hub import LiveHub
from service.live.redis_stream import FORGET, RedisFeed, erase_calls, erase_from_stream
from service.live.replay import ReplayBuffer
from tests.helpers.redis import redis_server_url, stream_key
from tests.helpers.service import make_settings
from tests.helpers.waiting import eventually

T0 = datetime.datetime(2026, 12, 7, 18, 0, tzinfo=datetime.UTC)


def started(call_sid: str) -> CallStarted:
    return CallStarted(
        call_sid=call_sid, stream_sid=f"MZ{call_sid}", account_sid="AC1", from_number="+14155550167",
        to_number="+14155550199", direction="inbound", tracks=("inbound",), custom_parameters={}, started_at=T0,
    )  # fmt: skip


def state(call_sid: str) -> CallStateChanged:
    return CallStateChanged(call_sid, f"MZ{call_sid}", "inbound", CallState.STREAMING, "", T0)


def hub() -> LiveHub:
    return LiveHub(window_s=60, max_events=100, queue_bound=100, max_subscribers=10, floor=(0, 0))


def test_the_buffer_forgets_only_the_erased_calls_and_keeps_its_floor() -> None:
    buffer = ReplayBuffer(window_s=60, max_events=100, floor=(5, 0))
    for ms, call_sid in enumerate(["CA1", "CA2", "CA1", "CA3"], start=10):
        buffer.append(LiveEvent((ms, 0), CALL_STATE, call_sid, 0.0))
    assert buffer.forget({"CA1", "CAnever"}) == 2
    assert [event.call_sid for event in buffer.after((0, 0)).events] == ["CA2", "CA3"]
    assert buffer.floor == (5, 0)
    assert buffer.forget({"CA1"}) == 0


def test_the_hub_forgets_a_call_from_its_buffer_board_and_subscribers_queues() -> None:
    live = hub()
    subscriber = live.subscribe(None, None)
    for n, call_sid in enumerate(["CA1", "CA2"]):
        live.deliver(LiveEvent((10 + n, 0), CALL_STARTED, call_sid, 0.0, started(call_sid)))
    assert set(live.board.calls) == {"CA1", "CA2"}
    assert live.forget(["CA1"]) == 1
    assert set(live.board.calls) == {"CA2"}
    assert [item.call_sid for item in subscriber.queue if isinstance(item, LiveEvent)] == ["CA2"]
    assert [event.call_sid for event in live.buffer.after((0, 0)).events] == ["CA2"]


@contextlib.asynccontextmanager
async def running_feed(key: str) -> AsyncIterator[tuple[RedisFeed, LiveHub]]:
    """One process's feed on the shared stream: its publisher and reader running."""
    settings = make_settings(None, redis_url=redis_server_url(), live_redis_stream=key, live_replay_s=60.0)
    live = hub()
    feed = RedisFeed(settings, live)
    tasks = [asyncio.create_task(feed.run_publisher()), asyncio.create_task(feed.run_reader())]
    try:
        yield feed, live
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await feed.close()


def calls_in(live: LiveHub) -> list[str]:
    return [event.call_sid for event in live.buffer.after((0, 0)).events]


async def entries(client: Redis, key: str) -> list[tuple[bytes, bytes]]:
    """(kind, call_sid) of every entry of the stream."""
    return [(fields[b"k"], fields[b"c"]) for _, fields in await client.xrange(key)]


async def test_an_erasure_reaches_every_process_through_the_stream() -> None:
    """Process A erases CA1: its entries leave the stream, B's buffer forgets them through the control entry, and
    C, started afterwards, loads CA2's events only, the control entry never delivered as an event."""
    key = stream_key()
    client = Redis.from_url(redis_server_url())
    try:
        async with running_feed(key) as (a, a_hub), running_feed(key) as (_b, b_hub):
            for call_sid in ("CA1", "CA2"):
                a.publish(CALL_STARTED, call_sid, started(call_sid))
                a.publish(CALL_STATE, call_sid, state(call_sid))
            await eventually(lambda: len(b_hub.buffer) == 4 and len(a_hub.buffer) == 4)
            assert await a.forget({"CA1"}) == 2
            assert calls_in(a_hub) == ["CA2", "CA2"]  # at once, here
            await eventually(lambda: calls_in(b_hub) == ["CA2", "CA2"])
            assert set(b_hub.board.calls) == {"CA2"}
            [*kept, control] = await entries(client, key)
            assert kept == [(CALL_STARTED.encode(), b"CA2"), (CALL_STATE.encode(), b"CA2")]
            assert control == (FORGET, b"")
            async with running_feed(key) as (_c, c_hub):
                await eventually(lambda: len(c_hub.buffer) == 2)
                assert calls_in(c_hub) == ["CA2", "CA2"]
    finally:
        await client.delete(key)
        await client.aclose()


async def test_a_control_entry_goes_with_the_first_erasure_after_the_replay_window() -> None:
    """A control entry holds CallSids only, and only as long as a reader may still need it: the next erasure
    after LIVE_REPLAY_S deletes it; a process with no feed (`calls erase`) erases through its own client."""
    key = stream_key()
    client = Redis.from_url(redis_server_url())
    try:
        await client.xadd(key, {"k": CALL_STATE, "c": "CA1", "d": b"{}"})
        await client.xadd(key, {"k": CALL_STATE, "c": "CA2", "d": b"{}"})
        settings = make_settings(None, redis_url=redis_server_url(), live_redis_stream=key, live_replay_s=60.0)
        assert await erase_from_stream(settings, ["CA1"]) == 1
        [(_, first), *_] = [entry for entry in await client.xrange(key) if entry[1][b"k"] == FORGET]
        assert orjson.loads(first[b"d"]) == ["CA1"]
        assert await erase_calls(client, key, ["CA2"], window_s=60.0, maxlen=1000) == 1
        assert len(await entries(client, key)) == 2  # both control entries, each still within the window
        assert await erase_calls(client, key, ["CA3"], window_s=0.0, maxlen=1000) == 0
        [(entry_id, fields)] = await client.xrange(key)
        assert orjson.loads(fields[b"d"]) == ["CA3"]  # the spent ones went; this one waits for its window
        assert parse_id(entry_id.decode())[0] > 0
        assert await erase_calls(client, key, [], window_s=0.0, maxlen=1000) == 0  # nothing to forget: untouched
        assert len(await client.xrange(key)) == 1
    finally:
        await client.delete(key)
        await client.aclose()


async def test_an_unreachable_stream_raises_rather_than_pretend() -> None:
    """The eraser turns this into 'nothing erased, ask again' (web/erasing.py): it must not pass silently."""
    settings = make_settings(None, redis_url="redis://127.0.0.1:9/0")
    with pytest.raises((RedisError, OSError)):
        await erase_from_stream(settings, ["CA1"])
