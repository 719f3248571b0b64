"""End to end: the live feed (`GET /api/live`) of the real service, calls placed by the simulator, fake Deepgram.

The fake's words come from the audio (tests/helpers/fakes/deepgram_server.py), so a feed that lost, repeated or
mixed up a transcript between calls shows the wrong words.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.web.api import OPENAPI_PATH
from tests.helpers.audio import call_audio
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings, running_service
from tests.helpers.sse import FeedReader, SseEvent
from tests.helpers.waiting import eventually

API_TOKEN = "live-t0ken"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CALL_KINDS = ("call.started", "transcript", "call.state", "call.ended")


def documented(event: SseEvent) -> bool:
    """Whether the event's data is a `LiveEvent` of openapi.json, with `type` its SSE event name."""
    document = Resource.from_contents(json.loads(OPENAPI_PATH.read_text()), default_specification=DRAFT202012)
    schema = {"$ref": "urn:callscribe:openapi#/components/schemas/LiveEvent"}
    validator = Draft202012Validator(schema, registry=Registry().with_resource("urn:callscribe:openapi", document))
    validator.validate(event.data)
    return bool(event.data["type"] == event.event)


def live_settings(deepgram: FakeDeepgram, **overrides: Any) -> Any:
    return make_settings(deepgram, api_token=API_TOKEN, stream_track="both_tracks", **overrides)


def call_events(reader: FeedReader, call_sid: str) -> list[SseEvent]:
    return [e for e in reader.events if e.event in CALL_KINDS and e.data["call_sid"] == call_sid]


def final_words(events: list[SseEvent], track: str) -> list[str]:
    finals = [e.data for e in events if e.event == "transcript" and e.data["is_final"] and e.data["track"] == track]
    return [word for final in finals for word in final["text"].split()]


def id_order(event: SseEvent) -> tuple[int, int]:
    assert event.id is not None
    ms, seq = event.id.split("-")
    return int(ms), int(seq)


async def place(url: str, spec: CallSpec) -> None:
    result = await simulate_call(url, spec, auth_token=TWILIO_TOKEN)
    assert result.close_code == 1000


async def test_the_feed_tells_a_two_track_call_in_order(deepgram: FakeDeepgram) -> None:
    """call.started, each track streaming, every interim and final of both tracks, then call.ended; ids increase."""
    caller, agent = call_audio(401, 2.0), call_audio(402, 1.5)
    spec = CallSpec(inbound=caller, outbound=agent, speed=0, from_number="+15005550100")
    async with running_service(live_settings(deepgram)) as service, FeedReader(service.url, AUTH) as feed:
        await place(service.url, spec)
        await feed.wait_for("call.ended", call_sid=spec.call_sid)

    events = call_events(feed, spec.call_sid)
    assert [e.event for e in events[:1]] == ["call.started"]
    assert events[-1].event == "call.ended"
    started = events[0].data
    assert (started["from_number"], started["direction"], started["tracks"]) == (
        "+15005550100",
        "inbound",
        ["inbound", "outbound"],
    )
    assert {(e.data["track"], e.data["state"]) for e in events if e.event == "call.state"} == {
        ("inbound", "streaming"),
        ("outbound", "streaming"),
    }
    assert final_words(events, "inbound") == expected_words(caller)
    assert final_words(events, "outbound") == expected_words(agent)
    transcripts = [e.data for e in events if e.event == "transcript"]
    assert any(not t["is_final"] for t in transcripts), "interim results are on the feed too"
    assert {t["speaker"] for t in transcripts if t["track"] == "inbound"} == {"caller"}
    assert {t["speaker"] for t in transcripts if t["track"] == "outbound"} == {"agent"}
    assert set(transcripts[0]) >= {
        "call_sid",
        "stream_sid",
        "track",
        "speaker",
        "text",
        "start",
        "end",
        "is_final",
        "speech_final",
    }
    assert [id_order(e) for e in events] == sorted({id_order(e) for e in events}), "ids strictly increase"
    assert events[-1].data["ended_by"] == "stop"
    assert all(documented(event) for event in events)


async def test_call_sid_filters_the_feed_to_one_call(deepgram: FakeDeepgram) -> None:
    """Two calls at once: the filtered feed has exactly the one call's events, the same ones the whole feed has."""
    first, second = CallSpec(inbound=call_audio(403, 2.0), speed=2), CallSpec(inbound=call_audio(404, 2.0), speed=2)
    async with (
        running_service(live_settings(deepgram)) as service,
        FeedReader(service.url, AUTH) as everything,
        FeedReader(service.url, AUTH, params={"call_sid": first.call_sid}) as one,
    ):
        await asyncio.gather(place(service.url, first), place(service.url, second))
        await everything.wait_for("call.ended", call_sid=second.call_sid)
        await one.wait_for("call.ended", call_sid=first.call_sid)
        await everything.wait_for("call.ended", call_sid=first.call_sid)

    assert {e.data["call_sid"] for e in one.events} == {first.call_sid}
    assert [(e.id, e.data) for e in one.events] == [(e.id, e.data) for e in call_events(everything, first.call_sid)]
    assert final_words(call_events(everything, second.call_sid), "inbound") == expected_words(second.inbound)


async def test_a_reconnect_with_last_event_id_gets_what_it_missed_once(deepgram: FakeDeepgram) -> None:
    """A client gone mid-call and back with Last-Event-ID has every event exactly once, none twice, none lost."""
    spec = CallSpec(inbound=call_audio(405, 4.0), speed=4)
    async with running_service(live_settings(deepgram)) as service, FeedReader(service.url, AUTH) as whole:
        call = asyncio.create_task(place(service.url, spec))
        async with FeedReader(service.url, AUTH) as before:
            await before.wait_for("transcript", is_final=True)
        await whole.wait_for("transcript", is_final=True, start=2.0)  # more happened while it was away
        assert before.last_id is not None
        async with FeedReader(service.url, {**AUTH, "Last-Event-ID": before.last_id}) as after:
            await call
            await after.wait_for("call.ended", call_sid=spec.call_sid)
        await whole.wait_for("call.ended", call_sid=spec.call_sid)

    together = [e.id for e in [*before.events, *after.events] if e.id is not None]
    assert together == [e.id for e in whole.events if e.id is not None]
    assert not [e for e in after.events if e.event == "feed.behind"], "the missed events were still kept"


async def test_an_id_older_than_the_buffer_is_told_it_may_have_missed_events(deepgram: FakeDeepgram) -> None:
    """A Last-Event-ID from before this process's buffer gets feed.behind first, then what is kept, then
    feed.live: the gap is in the past, and a client that shows the feed's state shows it live again."""
    async with (
        running_service(live_settings(deepgram)) as service,
        FeedReader(service.url, AUTH, params={"last_event_id": "1-0"}) as feed,
    ):
        live = await feed.wait_for("feed.live")
    behind = feed.events[0]
    assert (behind.event, behind.id) == ("feed.behind", None)
    assert behind.data["reason"].startswith("replay_window")
    assert [e.event for e in feed.events] == ["feed.behind", "feed.live"]
    assert live.id is None
    assert documented(behind)
    assert documented(live)


async def test_heartbeats_keep_a_quiet_feed_open(deepgram: FakeDeepgram) -> None:
    """With no calls, the feed sends comment lines every LIVE_HEARTBEAT_S, and no events."""
    async with (
        running_service(live_settings(deepgram, live_heartbeat_s=0.1)) as service,
        FeedReader(service.url, AUTH) as feed,
    ):
        await eventually(lambda: feed.comments.count("heartbeat") >= 3, timeout=10)
    assert feed.events == []


def stuck_client(port: int, call_sid: str | None = None) -> socket.socket:
    """A feed client that asks and then never reads: a receive buffer as small as the kernel allows."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /api/live HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_TOKEN}\r\n\r\n".encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        if chunk.endswith(b"0\r\n\r\n"):  # the chunked response's end
            break
    return b"".join(chunks)


async def test_a_stuck_subscriber_is_dropped_and_never_slows_a_call(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """A client that stops reading is dropped and told why; the calls and a reading client get everything."""
    # Enough events to fill the stuck socket's buffers and its queue; a queue a reading client never fills.
    specs = [CallSpec(inbound=call_audio(410 + n, 6.0), outbound=call_audio(440 + n, 6.0), speed=4) for n in range(16)]
    settings = live_settings(deepgram, live_subscriber_queue=100)
    async with running_service(settings, send_buffer=4096) as service, FeedReader(service.url, AUTH) as reader:
        stuck = stuck_client(service.port)
        await eventually(lambda: service.service.live.subscribers == 2, timeout=10)
        await asyncio.gather(*(place(service.url, spec) for spec in specs))
        for spec in specs:
            await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
        for spec in specs:
            await reader.wait_for("call.ended", call_sid=spec.call_sid)
        [dropped] = log_lines.events("live.subscriber_dropped")
        received = await asyncio.to_thread(read_all, stuck)
        stuck.close()
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{service.url}/metrics", headers=AUTH)).text

    assert "LIVE_SUBSCRIBER_QUEUE (100)" in dropped["why"]
    last = received.rstrip(b"\r\n0").rsplit(b"event: ", 1)[1]
    assert last.startswith((b"feed.dropped\r\n", b"feed.dropped\n"))
    assert b"LIVE_SUBSCRIBER_QUEUE (100)" in last
    assert 'callscribe_live_subscribers_dropped_total{reason="queue_full"} 1.0' in metrics
    for spec in specs:
        events = call_events(reader, spec.call_sid)
        assert final_words(events, "inbound") == expected_words(spec.inbound)
        assert final_words(events, "outbound") == expected_words(spec.outbound or b"")
        [summary] = log_lines.events("call.ended", call_sid=spec.call_sid)
        assert summary["finals"] == len([e for e in events if e.event == "transcript" and e.data["is_final"]])


async def test_the_feed_says_when_a_track_reconnects_and_when_it_is_spooled(deepgram: FakeDeepgram) -> None:
    """A Deepgram drop shows as reconnecting then streaming; a refused key as spooled, with the reason."""
    deepgram.faults.close_after_bytes = 22_000
    deepgram.faults.fault_connections = 1
    spec = CallSpec(inbound=call_audio(430, 4.0), speed=4)
    settings = make_settings(deepgram, api_token=API_TOKEN, deepgram_backoff_initial_s=0.05)
    async with running_service(settings) as service, FeedReader(service.url, AUTH) as feed:
        await place(service.url, spec)
        await feed.wait_for("call.ended", call_sid=spec.call_sid)
    states = [(e.data["state"], e.data["reason"]) for e in call_events(feed, spec.call_sid) if e.event == "call.state"]
    assert [state for state, _ in states] == ["streaming", "reconnecting", "streaming"]
    assert "1011" in states[1][1]

    refused = CallSpec(inbound=call_audio(431, 1.0), speed=4)
    settings = make_settings(deepgram, api_token=API_TOKEN, deepgram_api_key="wrong-key")
    async with running_service(settings) as service, FeedReader(service.url, AUTH) as feed:
        await place(service.url, refused)
        await feed.wait_for("call.ended", call_sid=refused.call_sid)
    [state] = [e.data for e in call_events(feed, refused.call_sid) if e.event == "call.state"]
    assert state["state"] == "spooled"
    assert "401" in state["reason"]


@pytest.mark.parametrize(
    ("api_token", "headers", "status", "error"),
    [
        (API_TOKEN, {}, 401, "unauthorized"),
        (API_TOKEN, {"Authorization": "Bearer wrong"}, 401, "unauthorized"),
        (API_TOKEN, {"Authorization": f"Basic {API_TOKEN}"}, 401, "unauthorized"),
        (None, AUTH, 503, "api_disabled"),
    ],
)
async def test_the_feed_needs_the_bearer_token(
    deepgram: FakeDeepgram, api_token: str | None, headers: dict[str, str], status: int, error: str
) -> None:
    """No token, a wrong one or another scheme is 401 (503 while API_TOKEN is unset), and no event is sent."""
    settings = make_settings(deepgram, api_token=api_token)
    async with running_service(settings) as service, httpx.AsyncClient() as client:
        response = await client.get(f"{service.url}/api/live", headers=headers)
        assert service.service.live.subscribers == 0
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("params", "headers", "parameter"),
    [
        ({"call_sid": "CA/../x"}, {}, "call_sid"),
        ({}, {"Last-Event-ID": "yesterday"}, "Last-Event-ID"),
        ({"last_event_id": "12"}, {}, "last_event_id"),
        ({"callsid": "CA1"}, {}, "callsid"),
    ],
)
async def test_a_bad_feed_query_is_a_400_naming_it(
    deepgram: FakeDeepgram, params: dict[str, str], headers: dict[str, str], parameter: str
) -> None:
    """A malformed call SID, event id or an unknown parameter gets 400 and the parameter's name."""
    async with running_service(live_settings(deepgram)) as service, httpx.AsyncClient() as client:
        response = await client.get(f"{service.url}/api/live", params=params, headers={**AUTH, **headers})
    assert (response.status_code, response.json()["parameter"]) == (400, parameter)


async def test_past_live_max_subscribers_a_client_is_refused_and_the_readers_go_on(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """With LIVE_MAX_SUBSCRIBERS=2 a third authenticated client gets 503 feed_full with Retry-After, logged with its
    address and counted, while the first two receive a whole call; once one leaves, a new client is let in."""
    spec = CallSpec(inbound=call_audio(450, 1.0), speed=4)
    settings = live_settings(deepgram, live_max_subscribers=2)
    async with (
        running_service(settings) as service,
        FeedReader(service.url, AUTH) as first,
        FeedReader(service.url, AUTH) as second,
        httpx.AsyncClient() as client,
    ):
        refused = await client.get(f"{service.url}/api/live", headers=AUTH, timeout=10)  # a feed never ends
        assert service.service.live.subscribers == 2
        await place(service.url, spec)
        await first.wait_for("call.ended", call_sid=spec.call_sid)
        await second.wait_for("call.ended", call_sid=spec.call_sid)
        metrics = (await client.get(f"{service.url}/metrics", headers=AUTH)).text
        await first.close()
        await eventually(lambda: service.service.live.subscribers == 1, timeout=10)
        async with FeedReader(service.url, AUTH) as third:
            assert third.status == 200
            await eventually(lambda: service.service.live.subscribers == 2, timeout=10)

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["content-type"] == "application/json"
    assert refused.json() == {
        "error": "feed_full",
        "message": "LIVE_MAX_SUBSCRIBERS (2) clients already read this process's feed; try again in 30 s",
    }
    [line] = log_lines.events("live.refused")
    assert (line["status"], line["error"], line["address"]) == (503, "feed_full", "127.0.0.1")
    assert "callscribe_live_subscribers_refused_total 1.0" in metrics
    assert final_words(call_events(second, spec.call_sid), "inbound") == expected_words(spec.inbound)
