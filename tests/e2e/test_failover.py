"""A second Deepgram (DEEPGRAM_FALLBACK_URL): a call whose primary fails mid-call moves to the fallback and loses
and doubles nothing; while the primary is down new calls start on the fallback; the probe brings them back; the
spool's batch transcription asks the fallback when the primary refuses.

Two fake Deepgrams (`deepgram`, `deepgram_fallback`, each with its own key), the real deepgram-sdk, and calls
through `/voice` and `/media` from the Twilio simulator. Each test checks from what the caller sent and what
was logged that every word is there once, in order, with increasing timestamps, and which engine carried what.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.spool.directory import Spool
from tests.e2e.test_resilience import PER_TRACK, assert_every_word_once_in_order
from tests.helpers.audio import call_audio
from tests.helpers.connections import Layout, layouts_and_flux
from tests.helpers.credentials import DEEPGRAM_FALLBACK_KEY, DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines, final_words
from tests.helpers.service import RunningService, make_settings, running_service

FINAL_BYTES = 16_000  # the fake's final: 4 words of 4000 bytes, 2 s of a track


def with_fallback(primary: FakeDeepgram, fallback: FakeDeepgram | str, **overrides: Any) -> dict[str, Any]:
    """Settings for a service whose primary is `primary` and whose fallback is `fallback`, with its own key."""
    return {
        "deepgram_fallback_url": fallback if isinstance(fallback, str) else fallback.url,
        "deepgram_fallback_api_key": DEEPGRAM_FALLBACK_KEY,
        "deepgram_backoff_initial_s": 0.05,
        "deepgram_backoff_max_s": 0.2,
        **overrides,
    }


async def one_call(service: RunningService, log_lines: LogLines, spec: CallSpec) -> dict[str, Any]:
    """A simulated call through `service`; its call.ended line."""
    result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
    assert result.close_code == 1000
    return await log_lines.wait_for("call.ended", timeout=30, call_sid=spec.call_sid)


def engines_of(summary: dict[str, Any]) -> list[tuple[str, str, float, float]]:
    """call.ended's `engines` as (track, engine, from_s, to_s)."""
    spans = []
    for part in summary["engines"].split(", "):
        track, engine, stretch = part.split(" ")
        start, end = stretch.split("-")
        spans.append((track, engine, float(start), float(end)))
    return spans


@layouts_and_flux
async def test_a_primary_that_closes_mid_word_and_then_refuses_moves_the_call_to_the_fallback(
    deepgram: FakeDeepgram, deepgram_fallback: FakeDeepgram, log_lines: LogLines, layout: Layout
) -> None:
    """1011 inside the sixth word (retried on the primary: it may pass), then HTTP 402 (out of credit) at the
    reconnect: the track moves to the fallback at once, which replays from the last final: every word once."""
    deepgram.faults.close_after_bytes = 22_000 * layout.channels  # after one final, inside the sixth window
    deepgram.faults.fault_connections = 1
    spec = layout.spec(301, 6.0, speed=4)

    async def out_of_credit() -> None:
        await deepgram.wait_for_connections(1)
        await deepgram.connections[0].closed.wait()
        deepgram.faults.reject_status = 402

    breaker = asyncio.create_task(out_of_credit())
    settings = make_settings(deepgram, **layout.settings(), **with_fallback(deepgram, deepgram_fallback))
    async with running_service(settings) as service:
        summary = await one_call(service, log_lines, spec)
    await breaker

    assert_every_word_once_in_order(log_lines, spec, layout)
    [first] = deepgram.connections
    assert first.close_code == 1011
    assert deepgram.upgrade_attempts == 2  # the 402 was not retried: no backoff on the primary
    [second] = deepgram_fallback.connections
    assert bytes(second.audio) == layout.heard(spec, 2.0)  # the replay starts at the last final's end
    [move] = log_lines.events("deepgram.failover")
    assert (move["from_engine"], move["to_engine"], move["why"]) == ("primary", "fallback", "refused")
    assert move["replaying_s"] >= 0.75  # at least what the primary had not made final (22 000 - 16 000 bytes)
    assert "HTTP 402" in move["error"]
    [backoff] = log_lines.events("deepgram.reconnecting")  # the 1011 may pass: the primary once more, then 402
    assert "1011" in backoff["why"]
    assert summary["reconnects"] == 2
    assert summary["audio_s_spooled"] == 0
    stream = "+".join(layout.tracks) if layout.channels == 2 else "inbound"
    assert engines_of(summary) == [(stream, "primary", 0.0, 2.0), (stream, "fallback", 2.0, 6.0)]
    assert len(log_lines.events("deepgram.primary_down")) == 1


async def test_a_primary_that_keeps_dropping_is_left_after_deepgram_failover_after_s(
    deepgram: FakeDeepgram, deepgram_fallback: FakeDeepgram, log_lines: LogLines
) -> None:
    """A TCP drop mid-word, then every reconnect dropped before a final: the primary is retried with backoff
    until DEEPGRAM_FAILOVER_AFTER_S, then the fallback takes the replay. Nothing lost or doubled."""
    deepgram.faults.drop_after_bytes = 22_000
    deepgram.faults.fault_connections = 1
    spec = CallSpec(inbound=call_audio(302, 5.0), speed=2)

    async def keep_dropping() -> None:
        await deepgram.wait_for_connections(1)
        await deepgram.connections[0].closed.wait()
        deepgram.faults.drop_after_bytes = 1_000  # every connection from now on, before a word
        deepgram.faults.fault_connections = None

    breaker = asyncio.create_task(keep_dropping())
    settings = make_settings(deepgram, **with_fallback(deepgram, deepgram_fallback, deepgram_failover_after_s=0.5))
    async with running_service(settings) as service:
        summary = await one_call(service, log_lines, spec)
    await breaker

    assert_every_word_once_in_order(log_lines, spec)
    assert len(deepgram.connections) >= 2  # the drop mid-word, then at least one retry of the primary
    [fallback] = deepgram_fallback.connections
    assert bytes(fallback.audio) == PER_TRACK.heard(spec, 2.0)
    [move] = log_lines.events("deepgram.failover")
    assert (move["from_engine"], move["to_engine"], move["why"]) == ("primary", "fallback", "failing")
    assert "no close frame" in move["error"]
    reconnects = log_lines.events("deepgram.reconnecting")
    assert reconnects  # the primary was retried first
    assert move["timestamp"] > reconnects[-1]["timestamp"]
    assert engines_of(summary) == [("inbound", "primary", 0.0, 2.0), ("inbound", "fallback", 2.0, 5.0)]


async def test_a_refused_key_at_the_upgrade_moves_the_call_new_calls_start_on_the_fallback_and_the_probe_brings_them_back(  # noqa: E501
    deepgram: FakeDeepgram, deepgram_fallback: FakeDeepgram, log_lines: LogLines
) -> None:
    """The primary refuses the key (401): the first call moves at its first connection; a call while the primary
    is down never asks it; once the primary takes the key again, the probe finds it and the next call is the
    primary's."""
    deepgram.api_key = "another-key"  # DEEPGRAM_API_KEY is refused: a key revoked at the primary
    first, second, third = (CallSpec(inbound=call_audio(seed, 2.0), speed=4) for seed in (303, 304, 305))
    settings = make_settings(deepgram, **with_fallback(deepgram, deepgram_fallback, deepgram_probe_s=0.2))
    async with running_service(settings) as service:
        summary = await one_call(service, log_lines, first)
        assert deepgram.connections == []  # every upgrade refused: the call's one, and any probe's
        [move] = log_lines.events("deepgram.failover")
        assert (move["from_engine"], move["to_engine"], move["why"]) == ("primary", "fallback", "refused")
        assert engines_of(summary) == [("inbound", "fallback", 0.0, 2.0)]

        down = await one_call(service, log_lines, second)
        assert engines_of(down) == [("inbound", "fallback", 0.0, 2.0)]
        assert len(log_lines.events("deepgram.failover")) == 1  # straight to the fallback: no move
        [connected] = log_lines.events("deepgram.connected", call_sid=second.call_sid)
        assert connected["engine"] == "fallback"
        assert deepgram.connections == []  # only the probe asked the primary meanwhile, refused

        deepgram.api_key = DEEPGRAM_KEY  # the key is good again
        back = await log_lines.wait_for("deepgram.primary_back", timeout=5)
        assert back["down_s"] > 0
        [probe] = deepgram.connections  # the probe: opened and closed cleanly, no audio
        assert (probe.audio, probe.control, probe.close_code) == (b"", [{"type": "CloseStream"}], 1000)

        again = await one_call(service, log_lines, third)
    assert engines_of(again) == [("inbound", "primary", 0.0, 2.0)]
    assert bytes(deepgram.connections[-1].audio) == PER_TRACK.heard(third)
    for spec in (first, second, third):
        assert_every_word_once_in_order(log_lines, spec)
    assert len(deepgram_fallback.connections) == 2


async def test_the_outage_bound_holds_across_both_deepgrams(
    deepgram: FakeDeepgram, deepgram_fallback: FakeDeepgram, log_lines: LogLines, tmp_path: Path
) -> None:
    """The primary closes mid-word and then answers 503, and so does the fallback: the track moves once, then
    DEEPGRAM_OUTAGE_S (counted from the first failure, across both) spools the rest from the last final."""
    deepgram.faults.close_after_bytes = 22_000
    deepgram.faults.fault_connections = 1
    deepgram_fallback.faults.reject_status = 503
    spec = CallSpec(inbound=call_audio(308, 4.0), speed=2)

    async def primary_gone() -> None:
        await deepgram.wait_for_connections(1)
        await deepgram.connections[0].closed.wait()
        deepgram.faults.reject_status = 503

    breaker = asyncio.create_task(primary_gone())
    settings = make_settings(
        deepgram, spool_dir=tmp_path,
        **with_fallback(deepgram, deepgram_fallback, deepgram_outage_s=0.6, deepgram_failover_after_s=0.3),
    )  # fmt: skip
    async with running_service(settings) as service:
        summary = await one_call(service, log_lines, spec)
    await breaker

    [move] = log_lines.events("deepgram.failover")
    assert (move["from_engine"], move["to_engine"], move["why"]) == ("primary", "fallback", "unreachable")
    assert deepgram_fallback.upgrade_attempts >= 1
    assert deepgram_fallback.connections == []
    [entry] = Spool(tmp_path).entries()
    assert entry.start_s == 2.0  # from the primary's last final
    assert "unavailable for 0.6 s" in entry.spooled_because
    assert final_words(log_lines, spec.call_sid) == expected_words(PER_TRACK.heard(spec)[:FINAL_BYTES])
    assert engines_of(summary) == [("inbound", "primary", 0.0, 2.0)]  # the spooled rest is no engine's
    assert summary["audio_s_spooled"] == 2.0


async def test_without_a_fallback_nothing_moves(deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path) -> None:
    """No DEEPGRAM_FALLBACK_URL: a refused key spools the call as before, and the record names the primary."""
    deepgram.api_key = "another-key"
    spec = CallSpec(inbound=call_audio(306, 1.0), speed=4)
    async with running_service(make_settings(deepgram, spool_dir=tmp_path)) as service:
        summary = await one_call(service, log_lines, spec)
    assert not log_lines.events("deepgram.failover")
    assert not log_lines.events("deepgram.primary_down")
    assert summary["audio_s_spooled"] == 1.0
    assert summary["engines"] == ""


async def test_batch_asks_the_fallback_when_the_primary_refuses(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path
) -> None:
    """A call spooled while live Deepgram was down; a process with a fallback transcribes it: the primary's
    pre-recorded API refuses the key, so the fallback's answers, and every word is delivered once."""
    deepgram.faults.reject_status = 503  # live Deepgram stays down: the call goes to the spool
    spec = CallSpec(inbound=call_audio(307, 3.0), speed=0)
    async with (
        FakeDeepgramBatch(api_key="another-key") as primary_batch,  # refuses DEEPGRAM_API_KEY: 401
        FakeDeepgramBatch(api_key=DEEPGRAM_FALLBACK_KEY) as fallback_batch,
    ):
        spooling: dict[str, Any] = {
            "spool_dir": tmp_path, "deepgram_batch_url": primary_batch.url, "deepgram_outage_s": 0.3,
            "deepgram_backoff_initial_s": 0.05, "spool_retry_s": 60,
        }  # fmt: skip
        async with running_service(make_settings(deepgram, **spooling)) as service:
            await one_call(service, log_lines, spec)
        assert [entry.call_sid for entry in Spool(tmp_path).entries()] == [spec.call_sid]

        fallback = with_fallback(deepgram, fallback_batch.url, deepgram_failover_after_s=0.1)
        batch = {**spooling, "spool_retry_s": 0.2, **fallback}
        async with running_service(make_settings(deepgram, **batch)):
            await log_lines.wait_for("batch.delivered", timeout=10, call_sid=spec.call_sid)
        assert [request.status for request in primary_batch.requests] == [401]  # the primary first, once
        assert [request.status for request in fallback_batch.requests] == [200]

    [move] = log_lines.events("batch.failover", call_sid=spec.call_sid)
    assert (move["from_engine"], move["to_engine"]) == ("primary", "fallback")
    assert "HTTP 401" in move["error"]
    assert final_words(log_lines, spec.call_sid) == expected_words(PER_TRACK.heard(spec))
    assert Spool(tmp_path).entries() == []
