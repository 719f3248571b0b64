"""Nothing said on a call is lost: Deepgram faults, reconnects with replay, the spool, batch, and SIGTERM.

Each test checks, from what the caller sent and what was logged, that every word is there exactly once, in
order, on the call's timeline; or, where live transcription could not cover some audio, that exactly that
audio waits in the spool.

The tests marked `@layouts_and_flux` run three times: a single-track call, a both-track call over one
multichannel connection (DEEPGRAM_CONNECTIONS=per_call, `tests/helpers/connections.py`), where each track must
come through on its own as a single track does, and a single-track call on Deepgram Flux (`/v2/listen`), whose
turns must give the same guarantees as v1's finals.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.spool.directory import Spool
from service.spool.wav import read_mulaw_wav
from tests.helpers.connections import FLUX, Layout, layouts_and_flux, padded
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.fakes.deepgram_server import FLUX_PATH, LISTEN_PATH, FakeDeepgram, expected_words
from tests.helpers.logs import LogLines, final_words
from tests.helpers.service import make_settings, running_service

SECOND = 8000
PER_TRACK = Layout("per_track")


async def run_call(
    deepgram: FakeDeepgram, log_lines: LogLines, spec: CallSpec, layout: Layout = PER_TRACK, **settings: Any
) -> dict[str, Any]:
    """One simulated call through the real service, streamed as `layout` says; returns its call.ended line."""
    async with running_service(make_settings(deepgram, **layout.settings(), **settings)) as service:
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        summary = await log_lines.wait_for("call.ended", timeout=30, call_sid=spec.call_sid)
    assert result.close_code == 1000
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(("track-", "send-", "receive-"))]
    for connection in deepgram.connections:
        assert connection.closed.is_set()
        assert connection.path == (FLUX_PATH if layout.flux else LISTEN_PATH)
    return summary


def assert_every_word_once_in_order(log_lines: LogLines, spec: CallSpec, layout: Layout = PER_TRACK) -> None:
    for track, audio in layout.sent(spec).items():
        assert final_words(log_lines, spec.call_sid, track) == expected_words(audio)
        finals = log_lines.events("transcript", call_sid=spec.call_sid, track=track, is_final=True)
        ends = [line["end"] for line in finals]
        assert ends == sorted(ends)
        assert all(line["start"] < line["end"] for line in finals)
        assert all(a["end"] <= b["start"] + 1e-6 for a, b in itertools.pairwise(finals))


def spooled_audio(directory: Path, call_sid: str, track: str = "inbound") -> list[tuple[float, bytes, str]]:
    entries = [entry for entry in Spool(directory).entries() if (entry.call_sid, entry.track) == (call_sid, track)]
    return [(entry.start_s, read_mulaw_wav(entry.wav_path.read_bytes()), entry.spooled_because) for entry in entries]


@pytest.mark.parametrize("layout", [PER_TRACK, FLUX], ids=["v1", "flux"])
async def test_a_1011_in_the_middle_of_a_word_is_replayed_from_the_last_final(
    deepgram: FakeDeepgram, log_lines: LogLines, layout: Layout
) -> None:
    """Deepgram closing 1011 mid-window: reconnect, replay from the last final (on Flux, from the start of the
    turn that was open), every word exactly once."""
    deepgram.faults.close_after_bytes = 22_000  # after one final (16 000 bytes), inside the sixth window
    deepgram.faults.fault_connections = 1
    spec = layout.spec(201, 6.0, speed=4)
    summary = await run_call(deepgram, log_lines, spec, layout, deepgram_backoff_initial_s=0.05)

    assert_every_word_once_in_order(log_lines, spec)
    first, second = deepgram.connections
    assert first.close_code == 1011
    assert bytes(second.audio) == padded(spec.inbound)[16_000:]  # the replay starts at the last final's end
    assert summary["reconnects"] == 1
    assert summary["audio_s_spooled"] == 0
    [warning] = log_lines.events("deepgram.reconnecting")
    assert "1011 NET-0000" in warning["why"]


@layouts_and_flux
async def test_a_connection_dropped_without_a_close_frame_is_replayed(
    deepgram: FakeDeepgram, log_lines: LogLines, layout: Layout
) -> None:
    """A TCP drop (1006, no close frame) is retried like a 1011, and nothing is lost or doubled."""
    deepgram.faults.drop_after_bytes = 30_000 * layout.channels
    deepgram.faults.fault_connections = 1
    spec = layout.spec(202, 5.0, speed=4)
    summary = await run_call(deepgram, log_lines, spec, layout, deepgram_backoff_initial_s=0.05)
    assert_every_word_once_in_order(log_lines, spec, layout)
    assert summary["reconnects"] == 1
    assert "no close frame" in log_lines.events("deepgram.reconnecting")[0]["why"]


@layouts_and_flux
async def test_refused_upgrades_are_retried_with_backoff(
    deepgram: FakeDeepgram, log_lines: LogLines, layout: Layout
) -> None:
    """503 at the first three upgrades: the fourth attempt carries the whole call, buffered meanwhile."""
    deepgram.faults.reject_status = 503
    deepgram.faults.reject_count = 3
    spec = layout.spec(203, 3.0, speed=2)
    summary = await run_call(
        deepgram, log_lines, spec, layout, deepgram_backoff_initial_s=0.05, deepgram_backoff_max_s=0.2
    )
    assert_every_word_once_in_order(log_lines, spec, layout)
    assert deepgram.upgrade_attempts == 4
    assert summary["reconnects"] == 3
    [connection] = deepgram.connections
    assert bytes(connection.audio) == layout.heard(spec)


@layouts_and_flux
async def test_a_handshake_that_never_finishes_is_abandoned_and_retried(
    deepgram: FakeDeepgram, log_lines: LogLines, layout: Layout
) -> None:
    """TCP accepted but the upgrade never answered: time out, retry, and the call is whole."""
    deepgram.faults.hang_handshake = True
    spec = layout.spec(204, 3.0, speed=2)

    async def heal() -> None:
        await log_lines.wait_for("deepgram.reconnecting")  # the first attempt's 0.5 s timeout has passed
        deepgram.faults.hang_handshake = False

    healer = asyncio.create_task(heal())
    summary = await run_call(
        deepgram, log_lines, spec, layout, deepgram_connect_timeout_s=0.5, deepgram_backoff_initial_s=0.05
    )
    await healer
    assert_every_word_once_in_order(log_lines, spec, layout)
    assert summary["reconnects"] >= 1
    assert "did not open the connection" in log_lines.events("deepgram.reconnecting")[0]["why"]


@layouts_and_flux
async def test_a_silent_deepgram_is_detected_and_replaced(
    deepgram: FakeDeepgram, log_lines: LogLines, layout: Layout
) -> None:
    """Socket open but no results: after DEEPGRAM_RESULT_TIMEOUT_S reconnect and replay; words exactly once."""
    deepgram.faults.silent = True
    deepgram.faults.fault_connections = 1
    spec = layout.spec(205, 3.0, speed=2)
    summary = await run_call(
        deepgram, log_lines, spec, layout, deepgram_result_timeout_s=0.5, deepgram_backoff_initial_s=0.05
    )
    assert_every_word_once_in_order(log_lines, spec, layout)
    assert summary["reconnects"] == 1
    assert "sent nothing" in log_lines.events("deepgram.reconnecting")[0]["why"]


async def test_a_flux_connection_that_stalls_is_detected_and_replaced(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """Flux's reported stall (socket open, audio taken, no TurnInfo) mid-turn: DEEPGRAM_RESULT_TIMEOUT_S catches it,
    the open turn is replayed on a new connection, and every word comes once."""
    deepgram.faults.stall_after_bytes = 20_000  # 2.5 s: one turn ended (at 2 s), the second open
    deepgram.faults.fault_connections = 1
    spec = FLUX.spec(212, 6.0, speed=2)
    summary = await run_call(
        deepgram, log_lines, spec, FLUX, deepgram_result_timeout_s=0.5, deepgram_backoff_initial_s=0.05
    )
    assert_every_word_once_in_order(log_lines, spec)
    first, second = deepgram.connections
    assert len(first.audio) > 20_000  # audio went on flowing into the stalled connection
    assert first.client_close_code == 1000  # Flux never closed it: callscribe gave up on it
    assert bytes(second.audio) == padded(spec.inbound)[16_000:]  # from the open turn's start
    assert summary["reconnects"] == 1
    [warning] = log_lines.events("deepgram.reconnecting")
    assert "sent nothing for DEEPGRAM_RESULT_TIMEOUT_S (0.5 s)" in warning["why"]


@layouts_and_flux
async def test_malformed_and_unknown_deepgram_messages_are_ignored(
    deepgram: FakeDeepgram, log_lines: LogLines, layout: Layout
) -> None:
    """Truncated JSON and an unknown message type from Deepgram change nothing in the transcript."""
    deepgram.faults.send_garbage = True
    spec = layout.spec(206, 2.0, speed=0)
    summary = await run_call(deepgram, log_lines, spec, layout)
    assert_every_word_once_in_order(log_lines, spec, layout)
    assert summary["reconnects"] == 0


@layouts_and_flux
async def test_a_rejected_key_spools_the_whole_call_without_retrying(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path, layout: Layout
) -> None:
    """401: said once, never retried, and every byte of the call waits in the spool from 0 s, one entry a track."""
    spec = layout.spec(207, 2.0, speed=4)
    summary = await run_call(deepgram, log_lines, spec, layout, deepgram_api_key="wrong-key", spool_dir=tmp_path)
    assert deepgram.upgrade_attempts == 1
    assert len(log_lines.events("deepgram.failed")) == 1
    for track, audio in layout.sent(spec).items():
        [(start_s, spooled, reason)] = spooled_audio(tmp_path, spec.call_sid, track)
        assert (start_s, spooled) == (0.0, audio)
        assert "HTTP 401" in reason
    assert summary["audio_s_spooled"] == 2.0 * layout.channels


@layouts_and_flux
async def test_a_long_outage_spools_what_live_could_not_cover(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path, layout: Layout
) -> None:
    """Deepgram gone past DEEPGRAM_OUTAGE_S mid-call: finals up to the drop, the rest of each track spooled."""
    deepgram.faults.close_after_bytes = 20_000 * layout.channels  # 2.5 s of each track: one final (2 s) each
    deepgram.faults.fault_connections = 1
    spec = layout.spec(208, 4.0, speed=2)

    async def break_deepgram() -> None:
        await deepgram.wait_for_connections(1)
        await deepgram.connections[0].closed.wait()
        deepgram.faults.reject_status = 503  # and it stays down

    breaker = asyncio.create_task(break_deepgram())
    summary = await run_call(
        deepgram, log_lines, spec, layout, spool_dir=tmp_path, deepgram_outage_s=0.5, deepgram_backoff_initial_s=0.05
    )
    await breaker
    for track, audio in layout.sent(spec).items():
        [(start_s, spooled, reason)] = spooled_audio(tmp_path, spec.call_sid, track)
        assert start_s == 2.0  # one final covered the first 2 s (16 000 bytes) of the track
        assert spooled == audio[16_000:]
        assert final_words(log_lines, spec.call_sid, track) == expected_words(audio[:16_000])
        assert "unavailable for 0.5 s" in reason
    assert summary["audio_s_spooled"] == 2.0 * layout.channels


@layouts_and_flux
async def test_memory_is_bounded_when_deepgram_falls_behind(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path, layout: Layout
) -> None:
    """A silent Deepgram with AUDIO_BUFFER_S=1: at most a second of each track is held, the rest goes to the
    spool, counted."""
    deepgram.faults.silent = True
    spec = layout.spec(209, 3.0, speed=4)
    summary = await run_call(
        deepgram, log_lines, spec, layout, spool_dir=tmp_path, audio_buffer_s=1.0, deepgram_result_timeout_s=30,
        deepgram_close_timeout_s=0.3, deepgram_outage_s=0.3, deepgram_backoff_initial_s=0.05,
    )  # fmt: skip
    for track, audio in layout.sent(spec).items():
        pieces = sorted(spooled_audio(tmp_path, spec.call_sid, track))
        assert b"".join(spooled for _, spooled, _ in pieces) == audio
        assert pieces[0][0] == 0.0
        assert "AUDIO_BUFFER_S (1 s)" in pieces[1][2]
        assert pieces[1][0] == 1.0  # bounded: live held exactly one second
    assert summary["audio_s_spooled"] == 3.0 * layout.channels
    assert summary["audio_s_lost"] == 0
    assert 0.9 <= summary["buffer_peak_s"] <= 1.0  # seconds of the call, whichever way its tracks were sent
    assert len(log_lines.events("audio.spooling")) == 2 * layout.channels


@layouts_and_flux
async def test_an_unwritable_spool_is_counted_and_said_not_a_crash(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path, layout: Layout
) -> None:
    """If the spool cannot be written (a file where the folder should be), the loss is logged and counted."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    spec = layout.spec(210, 1.0, speed=0)
    summary = await run_call(deepgram, log_lines, spec, layout, deepgram_api_key="wrong-key", spool_dir=blocker)
    assert summary["audio_s_lost"] == 1.0 * layout.channels
    assert summary["audio_s_spooled"] == 0
    assert log_lines.events("audio.lost")


@layouts_and_flux
async def test_spooled_audio_comes_back_as_batch_transcripts_after_a_restart(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path, layout: Layout
) -> None:
    """Live down and batch failing: the call is spooled; after a restart the worker delivers each track exactly
    once."""
    deepgram.faults.reject_status = 503  # live Deepgram stays down
    spec = layout.spec(211, 3.0, speed=0)
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as batch:
        batch.fail_status = 503  # and so does batch, for the first process's lifetime
        settings: dict[str, Any] = {
            "spool_dir": tmp_path, "deepgram_batch_url": batch.url, "deepgram_outage_s": 0.3,
            "deepgram_backoff_initial_s": 0.05, "spool_retry_s": 0.2, **layout.settings(),
        }  # fmt: skip
        async with running_service(make_settings(deepgram, **settings)) as service:
            await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
            await log_lines.wait_for("batch.failed", timeout=10, call_sid=spec.call_sid)
        entries = Spool(tmp_path).entries()
        assert sorted((entry.call_sid, entry.track) for entry in entries) == [(spec.call_sid, t) for t in layout.tracks]
        assert not log_lines.events("transcript", call_sid=spec.call_sid, is_final=True)

        batch.fail_status = None  # Deepgram's batch API is back; a new process starts
        async with running_service(make_settings(deepgram, **settings)):
            for track in layout.tracks:
                await log_lines.wait_for("batch.delivered", timeout=10, track=track)
            await asyncio.sleep(0.5)  # the point: time for more worker passes, in which nothing may be delivered twice

    finals = log_lines.events("transcript", call_sid=spec.call_sid, is_final=True)
    assert all(line["batch"] for line in finals)
    for track, audio in layout.sent(spec).items():
        assert final_words(log_lines, spec.call_sid, track) == expected_words(audio)
    assert Spool(tmp_path).entries() == []
    # Flux is live only: its spooled audio goes to a pre-recorded model (Nova-3 unless DEEPGRAM_BATCH_MODEL says).
    assert {request.option("model") for request in batch.requests if request.path == "/v1/listen"} == {"nova-3"}
