"""End to end: the live feed across processes through a real redis-server (REDIS_URL).

Two service processes (the Procfile's web line, as two dynos run it) share one Redis Stream; a feed on one
must show every event of the calls the other handles, each once, in order, under the same ids on both.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from tests.e2e.test_live_feed import API_TOKEN, AUTH, call_events, final_words, id_order
from tests.helpers.audio import call_audio
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines
from tests.helpers.processes import start_web
from tests.helpers.redis import PrivateRedis, redis_server_url, stream_key
from tests.helpers.service import make_settings, running_service
from tests.helpers.sse import FeedReader


async def test_a_feed_on_one_process_gets_every_event_of_calls_on_another(
    deepgram: FakeDeepgram, tmp_path: Path
) -> None:
    """Calls on process B appear on A's feed exactly once, in order per call, with the ids B's feed has; their
    alerts too (a disclosure no call makes: one `call.alert` each, at its end)."""
    disclosure = [{"name": "disclosure", "phrases": ["recorded"], "speaker": "agent", "absent_within_s": 60}]
    env = {
        "REDIS_URL": redis_server_url(), "LIVE_REDIS_STREAM": stream_key(), "API_TOKEN": API_TOKEN,
        "STREAM_TRACK": "both_tracks", "LOG_LEVEL": "WARNING", "ALERT_RULES": json.dumps(disclosure),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite3'}",  # one database, as two dynos have
    }  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, first_url = await start_web(deepgram, tmp_path / "a", **env)
    second, second_url = await start_web(deepgram, tmp_path / "b", **env)
    specs = [CallSpec(inbound=call_audio(500 + n, 2.0), outbound=call_audio(510 + n, 1.5), speed=2) for n in range(3)]
    try:
        async with FeedReader(first_url, AUTH) as on_first, FeedReader(second_url, AUTH) as on_second:
            results = await asyncio.gather(*(simulate_call(second_url, s, auth_token=TWILIO_TOKEN) for s in specs))
            assert [r.close_code for r in results] == [1000] * len(specs)
            for spec in specs:
                await on_first.wait_for("call.ended", call_sid=spec.call_sid)
                await on_second.wait_for("call.ended", call_sid=spec.call_sid)
                await on_first.wait_for("call.alert", call_sid=spec.call_sid)  # decided at the end: right after it
                await on_second.wait_for("call.alert", call_sid=spec.call_sid)
    finally:
        for process in (first, second):
            os.killpg(process.pid, signal.SIGTERM)
        outputs = await asyncio.gather(*(asyncio.wait_for(p.communicate(), timeout=30) for p in (first, second)))
    assert [p.returncode for p in (first, second)] == [0, 0], [err.decode()[-2000:] for _, err in outputs]

    for spec in specs:
        events = call_events(on_first, spec.call_sid)
        assert events[0].event == "call.started"
        assert events[-1].event == "call.ended"
        assert final_words(events, "inbound") == expected_words(spec.inbound)
        assert final_words(events, "outbound") == expected_words(spec.outbound or b"")
        assert [id_order(e) for e in events] == sorted({id_order(e) for e in events}), "each once, in order"
        assert [(e.id, e.data) for e in events] == [(e.id, e.data) for e in call_events(on_second, spec.call_sid)]
        alerts = [
            [(e.id, e.data) for e in feed.of("call.alert", call_sid=spec.call_sid)] for feed in (on_first, on_second)
        ]
        assert alerts[0] == alerts[1]
        assert [(data["rule"], data["kind"], data["end"]) for _, data in alerts[0]] == [("disclosure", "absent", 60.0)]


async def test_redis_stopped_mid_call_loses_nothing_and_the_feed_recovers(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path
) -> None:
    """Redis down mid-call: the call is transcribed and stored whole, the feed says feed.behind, then feed.live
    when Redis is back, and the events queued meanwhile arrive: the feed ends up with the whole call once."""
    redis_server_url()  # the Redis tests need redis-server (.ci/run installs it)
    redis = PrivateRedis(tmp_path / "redis")
    url = await redis.start()
    spec = CallSpec(inbound=call_audio(520, 6.0), speed=1)
    settings = make_settings(deepgram, api_token=API_TOKEN, redis_url=url, live_redis_stream=stream_key())
    try:
        async with running_service(settings) as service, FeedReader(service.url, AUTH) as feed:
            call = asyncio.create_task(simulate_call(service.url, spec, auth_token=TWILIO_TOKEN))
            await feed.wait_for("transcript", call_sid=spec.call_sid)
            await redis.stop()
            await feed.wait_for("feed.behind")
            await log_lines.wait_for("transcript", is_final=True, start=2.0, call_sid=spec.call_sid)  # calls go on
            await redis.start()
            await feed.wait_for("feed.live")
            assert (await call).close_code == 1000
            await feed.wait_for("call.ended", call_sid=spec.call_sid)
    finally:
        await redis.stop()

    logged = [
        w
        for line in log_lines.events("transcript", call_sid=spec.call_sid, is_final=True)
        for w in line["text"].split()
    ]
    assert logged == expected_words(spec.inbound)
    [summary] = log_lines.events("call.ended", call_sid=spec.call_sid)
    assert (summary["audio_s_lost"], summary["audio_s_spooled"]) == (0, 0)
    events = call_events(feed, spec.call_sid)
    assert final_words(events, "inbound") == expected_words(spec.inbound)
    assert [id_order(e) for e in events] == sorted({id_order(e) for e in events})
    kinds = [e.event for e in feed.events]
    assert kinds.index("feed.behind") < kinds.index("feed.live")
    assert log_lines.events("live.redis_failed")
