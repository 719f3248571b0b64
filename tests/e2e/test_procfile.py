"""The Procfile's web line, run as Heroku runs it: a real Hypercorn process on $PORT that stops on SIGTERM (and on
Ctrl+C, as a local run does)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from service import mulaw
from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.spool.directory import Spool
from service.spool.wav import read_mulaw_wav
from service.storage import queries
from service.storage.schema import create_engine
from tests.e2e.test_live_feed import API_TOKEN, AUTH
from tests.helpers.audio import call_audio
from tests.helpers.connections import Layout, layouts_and_flux
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.processes import start_web
from tests.helpers.service import make_settings
from tests.helpers.waiting import eventually


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (Linux's /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def json_lines(stdout: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def final_words_of(lines: list[dict[str, Any]], track: str) -> list[str]:
    """Every word of the finals logged on `track`, in order."""
    finals = [line for line in lines if line["event"] == "transcript" and line["is_final"] and line["track"] == track]
    return [word for line in finals for word in line["text"].split()]


async def test_the_procfile_web_process_serves_calls_and_stops_on_sigterm(
    deepgram: FakeDeepgram, tmp_path: Path
) -> None:
    """`web:` binds $PORT, transcribes a simulated call, logs JSON lines, and exits cleanly on SIGTERM."""
    process, url = await start_web(deepgram, tmp_path)
    try:
        assert children_of(process.pid) == [], "one worker is served in-process: no supervisor, no resource tracker"
        spec = CallSpec(inbound=call_audio(61, 1.5), speed=0)
        result = await simulate_call(url, spec, auth_token=TWILIO_TOKEN)
        assert result.close_code == 1000
        await asyncio.wait_for(deepgram.connections[0].closed.wait(), timeout=10)  # the call's last finals
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # as Heroku does: every process of the dyno
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    lines = json_lines(stdout)
    events = [line["event"] for line in lines]
    assert events[0] == "service.ready"
    assert any(event.startswith("Running on") for event in events), "Hypercorn's own lines are JSON too"
    finals = [line for line in lines if line["event"] == "transcript" and line["is_final"]]
    assert [w for line in finals for w in line["text"].split()] == expected_words(bytes(deepgram.connections[0].audio))
    assert events[-1] == "service.stopped"
    assert stderr.decode() == ""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
async def test_a_stop_with_a_page_open_ends_its_feed_first_and_exits_within_two_seconds(
    deepgram: FakeDeepgram, tmp_path: Path, stop: signal.Signals
) -> None:
    """SIGINT (Ctrl+C) or SIGTERM with a live feed open and no call: the feed's last event is `feed.closing`, which
    tells the page to reconnect (and when), its end is logged before `service.stopped`, and the process exits
    cleanly within 2 s of the signal. A feed used to hold Ctrl+C for Hypercorn's whole graceful timeout (25 s)."""
    process, url = await start_web(deepgram, tmp_path, API_TOKEN=API_TOKEN)
    loop = asyncio.get_running_loop()
    frame: list[str] = []
    try:
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("GET", f"{url}/api/live", headers=AUTH) as feed,
        ):
            lines = feed.aiter_lines()
            assert await anext(lines) == ": callscribe live feed"  # subscribed: the hub holds this feed now
            assert await anext(lines) == "retry: 2000"  # the opening's: EventSource's wait after a network error
            signalled_at = loop.time()
            os.killpg(process.pid, stop)  # as Ctrl+C in a terminal, or the platform: the whole group
            frame = [line async for line in lines if line]
        # Awaited, with a generous bound for a loaded machine; the 2 s is measured, not slept.
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        stopped_in_s = loop.time() - signalled_at
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert frame[:2] == ["retry: 2000", "event: feed.closing"], frame
    data = json.loads(frame[2].removeprefix("data: "))
    assert data == {"type": "feed.closing", "reason": data["reason"], "retry_ms": 2000}
    assert "reconnect with Last-Event-ID" in data["reason"]
    assert process.returncode == 0, stderr.decode()
    assert "Traceback" not in stdout.decode() + stderr.decode()
    events = [line["event"] for line in json_lines(stdout)]
    assert events.index("live.ended") < events.index("service.stopped"), "the feed ends first"
    assert stopped_in_s < 2.0, f"exited {stopped_in_s:.2f} s after the signal"


@layouts_and_flux
async def test_sigterm_with_a_call_in_flight_finishes_it_before_exiting(
    deepgram: FakeDeepgram, tmp_path: Path, layout: Layout
) -> None:
    """SIGTERM mid-call: Twilio's stream is closed 1001, Deepgram's last finals arrive, the process exits 0."""
    process, url = await start_web(deepgram, tmp_path, **layout.env())
    spec = layout.spec(62, 6.0, speed=1)
    call = asyncio.create_task(simulate_call(url, spec, auth_token=TWILIO_TOKEN))
    await deepgram.wait_for_connections(1)
    await eventually(lambda: len(deepgram.connections[0].audio) >= 8000 * layout.channels)  # a second is in
    started = asyncio.get_running_loop().time()
    os.killpg(process.pid, signal.SIGTERM)  # as Heroku does: every process of the dyno
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    result = await call
    assert process.returncode == 0, stderr.decode()
    assert asyncio.get_running_loop().time() - started < 25  # inside Heroku's 30 s
    assert result.close_code == 1001
    assert result.close_reason == "callscribe is restarting"
    lines = json_lines(stdout)
    [summary] = [line for line in lines if line["event"] == "call.ended"]
    assert summary["ended_by"] == "shutdown"
    # Only frames Twilio sent after CloseStream, as the stream was closing, are spooled (kept, not lost): on a
    # busy machine a frame or two of each track, never the call.
    assert summary["audio_s_spooled"] <= 0.1 * layout.channels
    assert summary["audio_s_lost"] == 0
    [connection] = deepgram.connections
    assert connection.control[-1] == {"type": "CloseStream"}
    heard = bytes(connection.audio)
    assert 0 < len(heard) < len(layout.heard(spec))
    for track, audio in layout.split(heard).items():
        assert final_words_of(lines, track) == expected_words(audio)
    [stopped] = [line for line in lines if line["event"] == "service.stopped"]
    assert (stopped["calls"], stopped["calls_spooled"]) == (1, 0)


@layouts_and_flux
async def test_sigterm_while_deepgram_catches_up_loses_nothing(
    deepgram: FakeDeepgram, tmp_path: Path, layout: Layout
) -> None:
    """SIGTERM just after Twilio's stop, with audio still queued for Deepgram: it is all sent and transcribed."""
    process, url = await start_web(deepgram, tmp_path, **layout.env())
    spec = layout.spec(63, 3.0, speed=0)  # all at once: Deepgram gets it at 1.25x real time
    result = await simulate_call(url, spec, auth_token=TWILIO_TOKEN)
    os.killpg(process.pid, signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert (result.close_code, process.returncode) == (1000, 0), stderr.decode()
    [connection] = deepgram.connections
    assert bytes(connection.audio) == layout.heard(spec)
    lines = json_lines(stdout)
    for track, audio in layout.sent(spec).items():
        assert final_words_of(lines, track) == expected_words(audio)


@layouts_and_flux
async def test_sigterm_with_finals_later_than_the_drain_spools_what_is_not_final(
    deepgram: FakeDeepgram, tmp_path: Path, layout: Layout
) -> None:
    """SIGTERM while Deepgram has stopped answering: past SHUTDOWN_TIMEOUT_S what is not final is spooled, each
    track from where its finals reached, and nothing is lost."""
    process, url = await start_web(deepgram, tmp_path, **layout.env(), SHUTDOWN_TIMEOUT_S="1")
    spec = layout.spec(65, 6.0, speed=1)
    call = asyncio.create_task(simulate_call(url, spec, auth_token=TWILIO_TOKEN))
    await deepgram.wait_for_connections(1)
    [connection] = deepgram.connections
    await eventually(lambda: len(connection.finals()) >= layout.channels, timeout=10)  # 2 s of each track final
    await eventually(lambda: len(connection.audio) >= 24_000 * layout.channels)  # and a second more heard
    deepgram.faults.silent = True  # no more results, not even for CloseStream
    os.killpg(process.pid, signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert (await call).close_code == 1001
    lines = json_lines(stdout)
    [summary] = [line for line in lines if line["event"] == "call.ended"]
    assert summary["audio_s_lost"] == 0
    entries = {entry.track: entry for entry in Spool(tmp_path).entries()}
    assert set(entries) == set(layout.tracks)
    for track, audio in layout.sent(spec).items():
        assert final_words_of(lines, track) == expected_words(audio[:16_000])
        spooled = read_mulaw_wav(entries[track].wav_path.read_bytes())
        assert entries[track].start_s == 2.0
        assert len(spooled) < len(audio) - 16_000  # what was heard after the final; the rest never came
        rest = audio[16_000:]
        heard = next((n for n, (a, b) in enumerate(zip(spooled, rest, strict=False)) if a != b), len(spooled))
        assert heard >= 8000
        # On one connection the track that was behind when the process stopped is padded to the other with
        # silence (what the interleaver does at a stream's end), by less than the lag bound.
        padded = len(spooled) - heard
        assert spooled[heard:] == bytes([mulaw.SILENCE]) * padded
        lag_bound = make_settings(None).deepgram_channel_lag_ms * mulaw.BYTES_PER_SECOND // 1000 + mulaw.FRAME_BYTES
        assert padded <= (lag_bound if layout.channels > 1 else 0)
        assert "callscribe stopped before Deepgram's final results" in entries[track].spooled_because
    assert summary["audio_s_spooled"] == round(sum(e.duration_s for e in entries.values()), 2)
    [stopped] = [line for line in lines if line["event"] == "service.stopped"]
    assert (stopped["calls"], stopped["calls_spooled"]) == (1, 1)


async def test_the_web_line_alone_stores_transcripts_in_a_fresh_sqlite_file(
    deepgram: FakeDeepgram, tmp_path: Path
) -> None:
    """No `db upgrade` first (`python -m service serve` by hand): the service migrates its SQLite file itself."""
    database = tmp_path / "callscribe.sqlite3"  # start_web's DATABASE_URL: a file no one has created yet
    process, url = await start_web(deepgram, tmp_path)
    engine = create_engine(f"sqlite:///{database}")
    try:
        spec = CallSpec(inbound=call_audio(64, 1.5), speed=0)
        result = await simulate_call(url, spec, auth_token=TWILIO_TOKEN)
        assert result.close_code == 1000
        await asyncio.wait_for(deepgram.connections[0].closed.wait(), timeout=10)
        expected = expected_words(bytes(deepgram.connections[0].audio))
        stored = await eventually(lambda: stored_words(engine, spec.call_sid, len(expected)), timeout=10)
    finally:
        await engine.dispose()
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert stored == expected
    events = [line["event"] for line in json_lines(stdout)]
    assert "store.migrated" in events
    assert "store.unavailable" not in events


async def stored_words(engine: Any, call_sid: str, count: int) -> list[str] | None:
    """The call's stored words once `count` of them are in the database, else None."""
    words = [word for u in await queries.get_utterances(engine, call_sid) for word in u.text.split()]
    return words if len(words) >= count else None
