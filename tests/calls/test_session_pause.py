"""A call's pause applied to its `CallSession` mid-stream, with the fake engine behind the seam: from the moment it
is applied the engine hears silence of the audio's length (the timeline whole), nothing said in the pause comes
back, the pause is one `[paused]` final spanning it, the feed hears the state, and the coverage counts it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.calls.coverage import summarize
from service.calls.events import CallState
from service.calls.pipeline.engines import LiveEngines
from service.calls.stream.admission import StreamGate
from service.calls.stream.pause import MARKER, PauseControl
from service.calls.stream.session import CallSession
from service.simulator.messages import CallSpec, build_messages, new_stream_sid
from service.spool.directory import Spool
from tests.calls.test_session import Claims, Observed
from tests.helpers.audio import call_audio
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.fakes.deepgram_server import expected_words
from tests.helpers.service import make_settings

FRAME = 160  # bytes of one track's 20 ms
PAUSE = PauseControl("CA", 1, paused=True, by="agent-7")
RESUME = PauseControl("CA", 2, paused=False, by="agent-8")


async def play(engine: FakeEngine, spec: CallSpec, tmp_path: Path, at: dict[int, Callable[[CallSession], Any]],
               *, tracks: tuple[str, ...] = ("inbound",), **settings: Any) -> tuple[CallSession, Observed]:  # fmt: skip
    """Twilio's messages through a session; `at[n]` is called with it before its n-th media message."""
    config = make_settings(stream_tokens="off", spool_dir=tmp_path, **settings)
    observed = Observed()

    async def close_twilio(_code: int, _reason: str) -> None:
        return None

    session = CallSession(
        settings=config, engines=LiveEngines(config, engine), spool=Spool(tmp_path), observer=observed,
        close_twilio=close_twilio, gate=StreamGate(config, key=None, claims=Claims()),
    )  # fmt: skip
    media = 0
    for text in build_messages(spec, new_stream_sid(), tracks, {"from": spec.from_number}):
        if '"event":"media"' in text.replace(" ", ""):
            if media in at:
                at[media](session)
            media += 1
        assert session.on_message(text) is None
        if session.starting:
            assert await session.finish_start() is None
        await session.send_pushed()
    session.twilio_ended()
    async with asyncio.timeout(10):
        await session.finished.wait()
    return session, observed


def in_order(observed: Observed) -> list[str]:
    """The finals' words on the call's timeline (the marker goes out at the resume, maybe before the finals of the
    words said just before the pause, which the engine has not sent yet)."""
    finals = sorted((t for t in observed.transcripts if t.is_final), key=lambda t: t.start)
    return [word.word for transcript in finals for word in transcript.words]


def with_call_sid(control: PauseControl, session: CallSession) -> PauseControl:
    assert session.call is not None
    return PauseControl(session.call.call_sid, control.version, paused=control.paused, by=control.by)


async def test_the_engine_hears_silence_while_paused_and_nothing_said_then_comes_back(tmp_path: Path) -> None:
    engine, audio = FakeEngine(), call_audio(3, 3.0)
    applied: list[float | None] = []
    at = {
        50: lambda session: applied.append(session.apply_pause(with_call_sid(PAUSE, session))),
        100: lambda session: applied.append(session.apply_pause(with_call_sid(RESUME, session))),
    }
    _session, observed = await play(engine, CallSpec(inbound=audio, speed=0), tmp_path, at)

    assert applied == [1.0, 2.0]  # where on the call's timeline each took effect
    [connection] = engine.connections
    heard = bytes(connection.audio)
    assert len(heard) == len(audio)  # the timeline stays whole
    assert heard[: 50 * FRAME] == audio[: 50 * FRAME]
    assert heard[50 * FRAME : 100 * FRAME] == b"\xff" * (50 * FRAME)
    assert heard[100 * FRAME :] == audio[100 * FRAME :]
    # Words of the audio before and after; none of the paused second; the marker in its place, spanning it.
    said = expected_words(audio)
    before, after = said[:2], said[4:]  # the fake's words are 0.5 s windows: two before, two paused
    assert in_order(observed) == [*before, MARKER, *after]
    [marker] = [t for t in observed.transcripts if t.text == MARKER]
    assert (marker.start, marker.end, marker.track, marker.speaker) == (1.0, 2.0, "inbound", "caller")
    moves = [(state.state, state.reason) for state in observed.states if state.reason.startswith("transcription")]
    assert moves == [
        (CallState.PAUSED, "transcription paused by agent-7"),
        (CallState.STREAMING, "transcription resumed by agent-8"),
    ]
    [ended] = observed.ended
    shown = summarize(ended.coverage)
    assert shown["paused_s"] == 1.0
    assert shown["live_s"] == 2.0
    assert shown["complete"] is True


async def test_a_call_that_ends_paused_gets_its_marker_to_the_end(tmp_path: Path) -> None:
    engine, audio = FakeEngine(), call_audio(4, 2.0)
    at = {25: lambda session: session.apply_pause(with_call_sid(PAUSE, session))}
    _session, observed = await play(engine, CallSpec(inbound=audio, speed=0), tmp_path, at)
    [marker] = [t for t in observed.transcripts if t.text == MARKER]
    assert (marker.start, marker.end) == (0.5, 2.0)
    assert in_order(observed) == [*expected_words(audio)[:1], MARKER]
    [ended] = observed.ended
    assert summarize(ended.coverage)["paused_s"] == 1.5


async def test_both_tracks_on_one_connection_are_both_silenced_and_counted_each(tmp_path: Path) -> None:
    engine = FakeEngine(max_channels=2)
    inbound, outbound = call_audio(5, 2.0), call_audio(6, 2.0)
    at = {
        40: lambda session: session.apply_pause(with_call_sid(PAUSE, session)),  # media 40 = 20 frames of each track
        120: lambda session: session.apply_pause(with_call_sid(RESUME, session)),
    }
    _session, observed = await play(
        engine, CallSpec(inbound=inbound, outbound=outbound, speed=0), tmp_path, at,
        tracks=("inbound", "outbound"), deepgram_connections="per_call",
    )  # fmt: skip
    [connection] = engine.connections
    heard = bytes(connection.audio)
    both = heard[0::2], heard[1::2]  # channel 0 (inbound) and 1 (outbound), interleaved sample by sample
    for original, channel in zip((inbound, outbound), both, strict=True):
        assert channel[: 20 * FRAME] == original[: 20 * FRAME]
        assert channel[20 * FRAME : 60 * FRAME] == b"\xff" * (40 * FRAME)
        assert channel[60 * FRAME :] == original[60 * FRAME :]
    [ended] = observed.ended
    for track in ("inbound", "outbound"):
        assert summarize([p for p in ended.coverage if p.track == track])["paused_s"] == 0.8
    assert [t.track for t in observed.transcripts if t.text == MARKER] == ["inbound"]  # one marker per pause
