"""The Redis adapter's promises that need no running server: TLS options, and a bounded queue that never waits."""

from __future__ import annotations

from redis.asyncio.connection import SSLConnection

from service.live.format import TRANSCRIPT
from service.live.hub import LiveHub
from service.live.redis_stream import RedisFeed, connect
from service.metrics import LIVE_EVENTS_UNPUBLISHED
from tests.helpers.service import make_settings


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
