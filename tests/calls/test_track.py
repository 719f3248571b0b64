"""One track on its own, against the fake Deepgram: what the call-level tests cannot time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from service.calls.counters import CallInfo
from service.calls.events import TurnChanged
from service.calls.pipeline.engine_state import EngineState
from service.calls.pipeline.engines import LiveEngines
from service.calls.pipeline.interleave import CHANNELS
from service.calls.pipeline.track import TrackStream
from service.calls.transcript import Transcript
from service.deepgram.live import DeepgramLive
from service.errors import SttError
from service.settings import Settings
from service.spool.directory import Spool
from service.spool.wav import read_mulaw_wav
from tests.helpers.audio import call_audio
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.service import make_settings
from tests.helpers.waiting import eventually


def no_turns(_turn: TurnChanged) -> None:
    raise AssertionError("Deepgram v1 has no turns")


CALL = CallInfo(call_sid="CA1", stream_sid="MZ1", account_sid="AC1", tracks=("inbound",), custom_parameters={})


async def test_audio_arriving_after_close_stream_is_spooled_not_lost(deepgram: FakeDeepgram, tmp_path: Path) -> None:
    """A frame Twilio sends as the stream closes, after CloseStream went out, waits in the spool at its time."""
    settings = make_settings(deepgram, spool_dir=tmp_path)
    audio, late = call_audio(1, 1.0), call_audio(2, 0.02)
    heard: list[Transcript] = []

    def emit(transcript: Transcript) -> None:
        heard.append(transcript)
        if transcript.is_final and transcript.end == 1.0:
            # The last final comes after CloseStream went out: Twilio's last frame arrives just now.
            assert {"type": "CloseStream"} in deepgram.connections[0].control
            track.push(51, late)

    async def on_failure(_track: TrackStream, error: SttError) -> None:
        raise AssertionError(error.reason)

    track = TrackStream(
        name="inbound", call=CALL, settings=settings,
        engines=LiveEngines(settings, DeepgramLive(settings)), spool=Spool(tmp_path),
        emit=emit, turns=no_turns, on_failure=on_failure, log=structlog.get_logger("test"),
    )  # fmt: skip
    running = asyncio.create_task(track.run())
    for chunk, start in enumerate(range(0, len(audio), 160), start=1):
        track.push(chunk, audio[start : start + 160])
    track.end()
    await asyncio.wait_for(running, timeout=5)

    assert [w for t in heard if t.is_final for w in t.text.split()] == expected_words(audio)
    [entry] = Spool(tmp_path).entries()
    assert (entry.start_s, read_mulaw_wav(entry.wav_path.read_bytes())) == (1.0, late)


async def test_a_frame_of_one_track_after_close_stream_is_spooled_not_lost_on_one_connection(
    deepgram: FakeDeepgram, tmp_path: Path
) -> None:
    """Both tracks on one connection: a frame of one track that Twilio sends as the stream closes, with no frame
    of the other to pair with, waits in the spool at its time (the other track's entry is that slot's padding)."""
    settings = make_settings(deepgram, spool_dir=tmp_path, stream_track="both_tracks", deepgram_connections="per_call")
    caller, agent, late = call_audio(4, 1.0), call_audio(5, 1.0), call_audio(6, 0.02)
    heard: list[Transcript] = []

    def emit(transcript: Transcript) -> None:
        heard.append(transcript)
        if transcript.is_final and transcript.end == 1.0 and transcript.track == "outbound":
            # Both channels' last finals come after CloseStream went out: the caller's last frame arrives now.
            assert {"type": "CloseStream"} in deepgram.connections[0].control
            track.push_channel("inbound", 51, late, 1000)

    async def on_failure(_track: TrackStream, error: SttError) -> None:
        raise AssertionError(error.reason)

    both = CallInfo(call_sid="CA1", stream_sid="MZ1", account_sid="AC1", tracks=CHANNELS, custom_parameters={})
    track = TrackStream(
        name="inbound+outbound", call=both, channels=CHANNELS, settings=settings,
        engines=LiveEngines(settings, DeepgramLive(settings)),
        spool=Spool(tmp_path), emit=emit, turns=no_turns, on_failure=on_failure, log=structlog.get_logger("test"),
    )  # fmt: skip
    running = asyncio.create_task(track.run())
    for chunk, start in enumerate(range(0, len(caller), 160), start=1):
        track.push_channel("inbound", chunk, caller[start : start + 160], (chunk - 1) * 20)
        track.push_channel("outbound", chunk, agent[start : start + 160], (chunk - 1) * 20)
    track.end()
    await asyncio.wait_for(running, timeout=5)

    for name, audio in (("inbound", caller), ("outbound", agent)):
        assert [w for t in heard if t.is_final and t.track == name for w in t.text.split()] == expected_words(audio)
    entries = {entry.track: entry for entry in Spool(tmp_path).entries()}
    spooled = {name: (entry.start_s, read_mulaw_wav(entry.wav_path.read_bytes())) for name, entry in entries.items()}
    assert spooled == {"inbound": (1.0, late), "outbound": (1.0, b"\xff" * 160)}
    assert (track.counters.bytes_spooled, track.counters.bytes_lost) == (320, 0)


def quiet_track(settings: Settings, tmp_path: Path, failures: list[SttError]) -> TrackStream:
    async def on_failure(_track: TrackStream, error: SttError) -> None:
        failures.append(error)

    return TrackStream(
        name="inbound", call=CALL, settings=settings,
        engines=LiveEngines(settings, DeepgramLive(settings)), spool=Spool(tmp_path),
        emit=lambda _transcript: None, turns=no_turns, on_failure=on_failure, log=structlog.get_logger("test"),
    )  # fmt: skip


async def test_a_track_that_finished_live_is_closed(deepgram: FakeDeepgram, tmp_path: Path) -> None:
    failures: list[SttError] = []
    track = quiet_track(make_settings(deepgram, spool_dir=tmp_path), tmp_path, failures)
    assert track.state is EngineState.CONNECTING
    running = asyncio.create_task(track.run())
    audio = call_audio(3, 1.0)
    for chunk, start in enumerate(range(0, len(audio), 160), start=1):
        track.push(chunk, audio[start : start + 160])
    track.end()
    await asyncio.wait_for(running, timeout=5)
    assert (track.state, failures, Spool(tmp_path).entries()) == (EngineState.CLOSED, [], [])


async def test_a_track_without_a_key_fails_to_the_spool(tmp_path: Path) -> None:
    failures: list[SttError] = []
    track = quiet_track(make_settings(deepgram_api_key=None, spool_dir=tmp_path), tmp_path, failures)
    running = asyncio.create_task(track.run())
    await asyncio.sleep(0)
    track.push(1, call_audio(4, 0.02))
    track.end()
    await asyncio.wait_for(running, timeout=5)
    assert track.state is EngineState.FAILED
    assert [error.kind for error in failures] == ["no_key"]
    [entry] = Spool(tmp_path).entries()
    assert entry.duration_s == 0.02


async def test_a_short_batch_goes_at_its_deadline_not_at_the_next_keepalive(
    deepgram: FakeDeepgram, tmp_path: Path
) -> None:
    """AUDIO_BATCH_MS=100 and a pause after two frames: the sender sends both when the batch's time is up
    (100 ms), not when something else next wakes it."""
    failures: list[SttError] = []
    track = quiet_track(make_settings(deepgram, spool_dir=tmp_path, audio_batch_ms=100), tmp_path, failures)
    running = asyncio.create_task(track.run())
    await eventually(lambda: deepgram.connections and track.state in {EngineState.OPEN, EngineState.IDLE})
    audio = call_audio(4, 0.04)
    for chunk, start in enumerate(range(0, len(audio), 160), start=1):
        track.push(chunk, audio[start : start + 160])
        await track.send_now()  # as the read loop does after each message
    assert deepgram.connections[0].audio_frames == []
    # 0.1 s here; a sender left asleep would wake only at its next alarm or Deepgram's next message (1 s or more).
    await eventually(lambda: deepgram.connections[0].audio_frames == [audio], timeout=0.6)
    track.end()
    await asyncio.wait_for(running, timeout=5)
    assert failures == []
