"""The operator's routes: /healthz, /readyz, and /metrics counting a simulated call (one worker and several)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from tests.helpers.audio import call_audio
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.logs import LogLines
from tests.helpers.processes import start_web
from tests.helpers.service import make_settings, running_service
from tests.helpers.waiting import eventually

METRICS_TOKEN = "metrics-token-for-tests"


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def scrape(url: str, token: str = METRICS_TOKEN) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_healthz_answers_while_the_process_runs() -> None:
    async with running_service(make_settings()) as service, httpx.AsyncClient() as client:
        response = await client.get(f"{service.url}/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_is_ready_when_every_check_passes(deepgram: FakeDeepgram) -> None:
    async with running_service(make_settings(deepgram)) as service, httpx.AsyncClient() as client:
        response = await client.get(f"{service.url}/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"calls": "ok", "twilio_auth_token": "ok", "deepgram_api_key": "ok", "database": "ok"},
    }


async def test_readyz_says_what_is_missing_without_secrets_or_urls() -> None:
    secret_url = "postgresql+asyncpg://user:hunter2@127.0.0.1:9/callscribe"  # nothing listens on port 9
    settings = make_settings(twilio_auth_token=None, deepgram_api_key=None, database_url=secret_url)
    async with running_service(settings) as service, httpx.AsyncClient() as client:
        response = await client.get(f"{service.url}/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["calls"] == "ok"
    assert body["checks"]["twilio_auth_token"] == "not set"
    assert body["checks"]["deepgram_api_key"] == "not set"
    assert body["checks"]["database"].startswith("unreachable (")
    assert "hunter2" not in response.text
    assert "127.0.0.1:9" not in response.text


async def test_readyz_is_not_ready_while_shutting_down_or_full(deepgram: FakeDeepgram) -> None:
    async with running_service(make_settings(deepgram, max_calls=1)) as service, httpx.AsyncClient() as client:
        calls = service.service.calls
        calls.max_calls = 0  # as if MAX_CALLS calls were in progress
        full = await client.get(f"{service.url}/readyz")
        calls.max_calls = 1
        calls.accepting = False
        stopping = await client.get(f"{service.url}/readyz")
        calls.accepting = True
    assert (full.status_code, full.json()["checks"]["calls"]) == (503, "callscribe is at MAX_CALLS (1)")
    assert (stopping.status_code, stopping.json()["checks"]["calls"]) == (503, "shutting down")


async def test_metrics_needs_its_bearer_token(log_lines: LogLines) -> None:
    async with httpx.AsyncClient() as client:
        async with running_service(make_settings()) as service:
            disabled = await client.get(f"{service.url}/metrics")
        async with running_service(make_settings(api_token="api-token", metrics_token=METRICS_TOKEN)) as service:
            missing = await client.get(f"{service.url}/metrics")
            api_token_refused = await client.get(
                f"{service.url}/metrics", headers={"Authorization": "Bearer api-token"}
            )
            allowed = await client.get(f"{service.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        async with running_service(make_settings(api_token="api-token")) as service:
            fallback = await client.get(f"{service.url}/metrics", headers={"Authorization": "Bearer api-token"})
    assert disabled.status_code == 503
    assert disabled.json()["message"] == "set METRICS_TOKEN (or API_TOKEN) to turn /metrics on"
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert api_token_refused.status_code == 401, "with METRICS_TOKEN set, only it opens /metrics"
    assert allowed.status_code == 200
    assert fallback.status_code == 200
    assert METRICS_TOKEN not in log_lines.text()
    assert "api-token" not in log_lines.text()


async def test_metrics_count_a_simulated_call(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """Every counter moves by exactly what the call did: messages, audio, bytes and messages to Deepgram."""
    audio = call_audio(71, 2.0)
    spec = CallSpec(inbound=audio, outbound=call_audio(72, 1.0), speed=0)
    settings = make_settings(deepgram, metrics_token=METRICS_TOKEN, stream_track="both_tracks")
    async with running_service(settings) as service:
        before = await scrape(service.url)
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        ended = await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
        after = await scrape(service.url)
    assert result.close_code == 1000

    def delta(name: str, **labels: str) -> float:
        # The counters are process-wide floats that earlier tests have already added to: the difference of two
        # large sums carries float rounding (1.9999999999999858 for 2.0), which says nothing about the counting.
        return round(value(after, name, **labels) - value(before, name, **labels), 9)

    frames = sum(result.frames_sent.values())
    assert delta("callscribe_calls_total", ended_by="stop") == 1
    assert value(after, "callscribe_calls_active") == 0
    assert delta("callscribe_twilio_messages_total") == frames + 3  # connected, start, stop
    assert delta("callscribe_audio_received_seconds_total", track="inbound") == len(audio) / 8000
    assert delta("callscribe_audio_received_seconds_total", track="outbound") == len(spec.outbound) / 8000
    assert delta("callscribe_deepgram_sent_bytes_total") == len(audio) + len(spec.outbound)
    # A frame alone when caught up, several to a message when they queued (speed=0): what Deepgram received.
    received = sum(len(connection.audio_frames) for connection in deepgram.connections)
    assert delta("callscribe_deepgram_sent_messages_total") == received
    assert delta("callscribe_deepgram_connects_total") == 2  # one per track
    assert delta("callscribe_deepgram_results_total", kind="final") == ended["finals"]
    transcripts = log_lines.events("transcript", call_sid=spec.call_sid)
    assert transcripts
    assert delta("callscribe_result_latency_seconds_count") == len(transcripts)
    assert delta("callscribe_audio_spooled_seconds_total") == 0
    assert delta("callscribe_deepgram_reconnects_total", reason="close_1011") == 0


async def test_metrics_count_reconnects_and_failures_by_reason(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    deepgram.faults.reject_status = 401
    settings = make_settings(deepgram, metrics_token=METRICS_TOKEN)
    spec = CallSpec(inbound=call_audio(73, 0.5), speed=0)
    retried = CallSpec(inbound=call_audio(75, 0.5), speed=0)
    async with running_service(settings) as service:
        before = await scrape(service.url)
        await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
        deepgram.faults.reject_status, deepgram.faults.reject_count = 503, 1  # refused once, then accepted
        await simulate_call(service.url, retried, auth_token=TWILIO_TOKEN)
        await log_lines.wait_for("call.ended", call_sid=retried.call_sid)
        after = await scrape(service.url)
    reconnects = value(after, "callscribe_deepgram_reconnects_total", reason="http_503") - value(
        before, "callscribe_deepgram_reconnects_total", reason="http_503"
    )
    assert reconnects == 1
    failures = value(after, "callscribe_deepgram_failures_total", reason="http_401") - value(
        before, "callscribe_deepgram_failures_total", reason="http_401"
    )
    spooled = value(after, "callscribe_audio_spooled_seconds_total") - value(
        before, "callscribe_audio_spooled_seconds_total"
    )
    assert failures == 1
    assert spooled == 0.5


async def test_metrics_add_up_every_worker(deepgram: FakeDeepgram, tmp_path: Path) -> None:
    """Two Hypercorn workers (multiprocess mode): whichever answers /metrics counts the call once."""
    process, url = await start_web(deepgram, tmp_path, WEB_CONCURRENCY="2", METRICS_TOKEN=METRICS_TOKEN)
    try:
        spec = CallSpec(inbound=call_audio(74, 1.0), speed=0)
        result = await simulate_call(url, spec, auth_token=TWILIO_TOKEN)
        assert result.close_code == 1000
        await asyncio.wait_for(deepgram.connections[0].closed.wait(), timeout=10)
        scrapes: list[Any] = []

        async def six_counted_scrapes() -> bool:
            scraped = await scrape(url)
            if value(scraped, "callscribe_calls_total", ended_by="stop") == 1:
                scrapes.append(scraped)
            return len(scrapes) == 6

        # Until the call's end is counted (its worker counts it as the session finishes), six times over.
        await eventually(six_counted_scrapes, timeout=10, interval=0.05)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert len(scrapes) == 6, "the call was never counted"
    for scraped in scrapes:  # the same totals whichever worker answered
        assert value(scraped, "callscribe_calls_total", ended_by="stop") == 1
        assert value(scraped, "callscribe_deepgram_sent_bytes_total") == 8000
        assert value(scraped, "callscribe_calls_active") == 0
