"""The Redis adapter's promises: TLS options, a bounded queue that never waits, and entries checked before a page
sees them (a real Redis for the reader)."""

from __future__ import annotations

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from structlog.testing import capture_logs

from service.live.format import CALL_STARTED, CALL_STATE, TRANSCRIPT
from service.live.hub import LiveHub
from service.live.redis_stream import FORGET, MAX_ENTRY_BYTES, RedisFeed, UnreadableEntry, connect, entry_event
from service.metrics import LIVE_EVENTS_UNPUBLISHED
from tests.helpers.redis import redis_server_url, stream_key
from tests.helpers.service import make_settings
from tests.helpers.waiting import eventually
from tests.live.test_forget import calls_in, running_feed, started, state


def test_rediss_is_tls_without_certificate_checks() -> None:
    """rediss:// (Heroku's) connects over TLS and accepts a self-signed certificate; redis:// stays plain."""
    secure = connect("rediss://:secret@redis.example:6380/0", read_timeout_s=1.0)
    assert secure.connection_pool.connection_class is SSLConnection
    assert secure.connection_pool.connection_kwargs["ssl_cert_reqs"] == "none"
    plain = connect("redis://127.0.0.1:6379/0", read_timeout_s=1.0)
    assert "ssl_cert_reqs" not in plain.connection_pool.connection_kwargs


async def test_past_its_bound_the_queue_counts_what_it_does_not_keep() -> None:
    """publish never waits: past LIVE_REDIS_QUEUE an event is counted (metric and attribute), not queued."""
    settings = make_settings(None, redis_url="redis://127.0.0.1:9/0", live_redis_queue=10)
    hub = LiveHub(window_s=60, max_events=100, queue_bound=10, max_subscribers=10, floor=(0, 0))
    feed = RedisFeed(settings, hub)
    before = LIVE_EVENTS_UNPUBLISHED._value.get()
    for n in range(15):
        feed.publish(TRANSCRIPT, f"CA{n}", object())
    assert feed.unpublished == 5
    assert LIVE_EVENTS_UNPUBLISHED._value.get() - before == 5
    await feed.close()  # the ten still queued are counted as they go with the process
    assert LIVE_EVENTS_UNPUBLISHED._value.get() - before == 15


GOOD = {b"k": CALL_STATE.encode(), b"c": b"CA1", b"d": b'{"type":"call.state","call_sid":"CA1"}'}


def test_an_entry_callscribe_wrote_is_an_event_on_the_replay_window_of_its_id() -> None:
    event = entry_event(b"1733100000000-3", GOOD, wall_s=1733100002.5, monotonic_s=100.0)
    assert (event.id, event.kind, event.call_sid, event.json()) == ((1733100000000, 3), CALL_STATE, "CA1", GOOD[b"d"])
    assert event.at == pytest.approx(97.5)  # it happened 2.5 s ago
    control = entry_event(b"1-0", {b"k": FORGET, b"c": b"", b"d": b'["CA1","CA2"]'}, wall_s=2.0, monotonic_s=1.0)
    assert orjson.loads(control.json()) == ["CA1", "CA2"]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({b"k": b"call.state", b"c": b"CA1"}, "no field b'd'"),
        (GOOD | {b"k": b"call.state\ndata: forged"}, "is not one the feed sends"),
        (GOOD | {b"k": b"call.hacked"}, "is not one the feed sends"),
        (GOOD | {b"d": b'{"type":\n"call.state"}\n\nevent: forged'}, "not one line"),  # SSE framing from data
        (GOOD | {b"d": b"{" + b" " * MAX_ENTRY_BYTES + b"}"}, "not one line of at most"),
        (GOOD | {b"d": b"not json"}, "not JSON"),
        (GOOD | {b"d": b"[1, 2]"}, "not a JSON object"),
        (GOOD | {b"c": b""}, "without a CallSid"),
        (GOOD | {b"c": b"CA 1"}, "without a CallSid"),
        (GOOD | {b"c": "CAé".encode()}, "not ASCII"),
        ({b"k": FORGET, b"c": b"", b"d": b'{"CA1": 1}'}, "not a list of CallSids"),
        ({b"k": FORGET, b"c": b"", b"d": b"[1]"}, "not a list of CallSids"),
        ({b"k": FORGET, b"c": b"CA1", b"d": b'["CA1"]'}, "not a list of CallSids"),
    ],
)
def test_an_entry_callscribe_did_not_write_is_refused_with_why(fields: dict[bytes, bytes], why: str) -> None:
    with pytest.raises(UnreadableEntry, match=why):
        entry_event(b"1733100000000-0", fields, wall_s=0.0, monotonic_s=0.0)


async def test_a_reader_skips_an_entry_it_cannot_take_counts_it_and_goes_on() -> None:
    """Entries another writer put on the stream, one before the reader started and one while it reads, are skipped
    (counted, said once), and the call events around them still reach the hub. Before, the first one raised out
    of the reader: that process's pages heard nothing more from any worker."""
    key = stream_key()
    client = Redis.from_url(redis_server_url())
    try:
        await client.xadd(key, {"k": CALL_STATE, "c": "CA1", "d": b'{"type":"call.state"}'})
        await client.xadd(key, {"k": "call.state", "c": "CA1"})  # no data: read by the prefill
        with capture_logs() as logs:
            async with running_feed(key) as (feed, live):
                await eventually(lambda: calls_in(live) == ["CA1"] and feed.skipped == 1)
                await client.xadd(key, {"k": CALL_STATE, "c": "CA2", "d": b'{"a":1}\n\nevent: call.ended'})
                feed.publish(CALL_STATE, "CA2", state("CA2"))
                feed.publish(CALL_STARTED, "CA3", started("CA3"))
                await eventually(lambda: calls_in(live) == ["CA1", "CA2", "CA3"])
                assert feed.skipped == 2
        skipped = [line for line in logs if line["event"] == "live.entry_skipped"]
        assert [(line["skipped"], line["why"]) for line in skipped] == [(1, "no field b'd'")], (
            "the first, then every 1000th"
        )
    finally:
        await client.delete(key)
        await client.aclose()
