"""One `CallSession` on its own, with the fake engine behind the seam (no socket, no server): Twilio's
messages in, the observer's events out, and every connection the engine was asked for."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.calls.coverage import Category, Outcome, spool_key, summarize
from service.calls.events import CallEnded, CallStarted, CallState, CallStateChanged, TurnChanged
from service.calls.pipeline.engines import LiveEngines
from service.calls.stream.admission import ClaimOutcome, StreamGate
from service.calls.stream.messages import Reject
from service.calls.stream.session import CallSession
from service.calls.transcript import Transcript
from service.errors import SttRejected
from service.simulator.messages import CallSpec, build_messages, new_stream_sid
from service.spool.directory import Spool
from service.twilio import close_codes
from tests.helpers.audio import call_audio
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.fakes.deepgram_server import expected_words
from tests.helpers.service import make_settings


@dataclass
class Observed:
    """Everything the session told its observer."""

    started: list[CallStarted] = field(default_factory=list)
    transcripts: list[Transcript] = field(default_factory=list)
    states: list[CallStateChanged] = field(default_factory=list)
    turns: list[TurnChanged] = field(default_factory=list)
    ended: list[CallEnded] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def call_started(self, event: CallStarted) -> None:
        self.started.append(event)

    def transcript(self, transcript: Transcript) -> None:
        self.transcripts.append(transcript)

    def call_state(self, event: CallStateChanged) -> None:
        self.states.append(event)

    def turn(self, event: TurnChanged) -> None:
        self.turns.append(event)

    def call_ended(self, event: CallEnded) -> None:
        self.ended.append(event)

    def spool_outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def words(self, track: str = "inbound") -> list[str]:
        return [w.word for t in self.transcripts if t.is_final and t.track == track for w in t.words]


class Claims:
    async def claim(self, **_fields: Any) -> ClaimOutcome:
        return ClaimOutcome.CLAIMED


@dataclass
class Played:
    session: CallSession
    observed: Observed
    rejects: list[Reject]


async def play(engine: FakeEngine, spec: CallSpec, tmp_path: Path, *, tracks: tuple[str, ...] = ("inbound",),
               lost: range = range(0), **settings: Any) -> Played:  # fmt: skip
    """Twilio's messages for `spec` through a session, as `web/media.py`'s read loop gives them, until it ends."""
    config = make_settings(stream_tokens="off", spool_dir=tmp_path, deepgram_backoff_initial_s=0.01, **settings)
    observed = Observed()
    closed: list[tuple[int, str]] = []

    async def close_twilio(code: int, reason: str) -> None:
        closed.append((code, reason))

    session = CallSession(
        settings=config, engines=LiveEngines(config, engine), spool=Spool(tmp_path), observer=observed,
        close_twilio=close_twilio,
        gate=StreamGate(config, key=None, claims=Claims()),
    )  # fmt: skip
    rejects = []
    messages = build_messages(spec, new_stream_sid(), tracks, {"from": spec.from_number})
    for text in [message for index, message in enumerate(messages) if index not in lost]:  # `lost`: Twilio's gaps
        reject = session.on_message(text)
        if reject is not None:
            rejects.append(reject)
            break
        if session.starting:
            reject = await session.finish_start()
            rejects += [reject] if reject is not None else []
        await session.send_pushed()
    session.twilio_ended()
    async with asyncio.timeout(10):
        await session.finished.wait()
    return Played(session, observed, rejects)


async def test_every_word_reaches_the_observer_once_in_order(tmp_path: Path) -> None:
    """A call's audio goes to one connection unchanged; each final's words go out once; the summary adds up."""
    engine, audio = FakeEngine(), call_audio(1, 3.0)
    played = await play(engine, CallSpec(inbound=audio, speed=0), tmp_path)
    assert played.rejects == []
    assert [bytes(c.audio) for c in engine.connections] == [audio]
    assert played.observed.words() == expected_words(audio)
    [ended] = played.observed.ended
    assert ended.ended_by == "stop"
    assert ended.summary["audio_s_sent"] == 3.0
    assert ended.summary["finals"] == len(expected_words(audio))
    assert ended.summary["deepgram_request_ids"] == engine.connections[0].request_id
    assert ended.audio_s_by_track == {"inbound": 3.0}


async def test_an_engine_that_names_no_request_records_none(tmp_path: Path) -> None:
    """A stream the engine gave no request id (Flux without Connected or the upgrade's header) adds nothing to the
    call's request ids: no empty entry, no stray comma."""
    engine, audio = FakeEngine(request_id=""), call_audio(8, 1.0)
    played = await play(engine, CallSpec(inbound=audio, speed=0), tmp_path)
    assert played.observed.ended[0].deepgram_request_ids == ()
    assert played.observed.ended[0].summary["deepgram_request_ids"] == ""


async def test_both_tracks_on_a_mono_engine_get_a_connection_each(tmp_path: Path) -> None:
    """DEEPGRAM_CONNECTIONS=per_call needs multichannel: an engine without it gets one connection per track."""
    engine = FakeEngine(max_channels=1)
    inbound, outbound = call_audio(2, 2.0), call_audio(3, 2.0)
    spec = CallSpec(inbound=inbound, outbound=outbound, speed=0)
    played = await play(engine, spec, tmp_path, tracks=("inbound", "outbound"), deepgram_connections="per_call")
    assert sorted(bytes(c.audio) for c in engine.connections) == sorted([inbound, outbound])
    assert played.observed.words("inbound") == expected_words(inbound)
    assert played.observed.words("outbound") == expected_words(outbound)
    assert {t.speaker for t in played.observed.transcripts if t.track == "outbound"} == {"agent"}


async def test_a_broken_connection_is_replayed_from_the_first_unsettled_byte(tmp_path: Path) -> None:
    """The engine drops the connection mid-window: the next one starts at the first byte not settled, and every
    word still comes once."""
    engine, audio = FakeEngine(break_after_bytes=10_000), call_audio(4, 3.0)
    played = await play(engine, CallSpec(inbound=audio, speed=0), tmp_path)
    first, second = engine.connections
    settled = 8_000  # two whole windows were final before the drop
    assert bytes(second.audio) == audio[settled:]
    assert played.observed.words() == expected_words(audio)
    starts = [t.start for t in played.observed.transcripts if t.is_final]
    assert starts == sorted(starts)
    assert starts[2] == settled / 8000  # the replay's times are placed on the call's timeline
    assert played.observed.ended[0].summary["reconnects"] == 1
    assert len(first.audio) >= 10_000


async def test_a_refusing_engine_sends_the_call_to_the_spool(tmp_path: Path) -> None:
    """A refusal retrying cannot fix: no transcript, the whole call spooled, the reason said and kept."""
    engine = FakeEngine(refuse=SttRejected("Deepgram rejected the API key (HTTP 401)", status=401))
    audio = call_audio(5, 1.0)
    played = await play(engine, CallSpec(inbound=audio, speed=0), tmp_path)
    assert played.observed.transcripts == []
    summary = played.observed.ended[0].summary
    assert summary["audio_s_spooled"] == 1.0
    assert summary["deepgram_error"] == "Deepgram rejected the API key (HTTP 401)"
    assert [s.state for s in played.observed.states] == [CallState.SPOOLED]


async def test_media_for_a_track_not_in_start_is_refused(tmp_path: Path) -> None:
    """Twilio's start names the tracks: a frame of another is a policy violation, said with the track."""
    engine = FakeEngine()
    spec = CallSpec(inbound=call_audio(6, 0.2), outbound=call_audio(7, 0.2), speed=0)
    config = make_settings(stream_tokens="off", spool_dir=tmp_path)
    stream_sid = new_stream_sid()
    messages = build_messages(spec, stream_sid, ("inbound",), {})
    session = CallSession(
        settings=config, engines=LiveEngines(config, engine), spool=Spool(tmp_path), observer=Observed(),
        close_twilio=_never,
        gate=StreamGate(config, key=None, claims=Claims()),
    )  # fmt: skip
    assert session.on_message(messages[0]) is None
    assert session.on_message(messages[1]) is None  # start: the inbound track only
    assert await session.finish_start() is None
    both = build_messages(spec, stream_sid, ("inbound", "outbound"), {})
    outbound = next(m for m in both if '"track":"outbound"' in m)
    reject = session.on_message(outbound)
    assert reject == Reject(close_codes.POLICY_VIOLATION, "media for track 'outbound' not in start")
    session.twilio_ended()
    async with asyncio.timeout(10):
        await session.finished.wait()
    assert str(session.ended_by).startswith("rejected")


async def _never(_code: int, _reason: str) -> None:
    raise AssertionError("the session closed Twilio's socket itself")


# --- Coverage: where each track's audio went, carried by call.ended --------------------------------------------------


def shown(ended: CallEnded, track: str | None = None) -> dict[str, Any]:
    parts = [part for part in ended.coverage if track is None or part.track == track]
    return summarize(parts)


async def test_a_live_call_is_covered_live_and_a_replay_counts_as_replayed(tmp_path: Path) -> None:
    """Every second final: the first connection's finals live, what the second resent after the drop replayed;
    together exactly the call, nothing waiting or lost."""
    engine, audio = FakeEngine(break_after_bytes=10_000), call_audio(4, 3.0)
    played = await play(engine, CallSpec(inbound=audio, speed=0), tmp_path)
    coverage = shown(played.observed.ended[0])
    assert coverage["complete"] is True
    assert coverage["audio_s"] == 3.0
    assert coverage["live_s"] >= 1.0  # the two windows final before the drop, at least
    assert coverage["replayed_s"] > 0
    assert coverage["live_s"] + coverage["replayed_s"] == 3.0


async def test_a_refused_call_waits_for_batch_in_its_spool_entry_with_the_reason(tmp_path: Path) -> None:
    """The part is keyed by the entry the spool wrote, so batch's outcome for that entry finds it."""
    engine = FakeEngine(refuse=SttRejected("Deepgram rejected the API key (HTTP 401)", status=401))
    played = await play(engine, CallSpec(inbound=call_audio(5, 1.0), speed=0), tmp_path)
    [ended] = played.observed.ended
    [entry] = Spool(tmp_path).entries()
    [waiting] = [part for part in ended.coverage if part.category is Category.WAITING]
    assert (waiting.key, waiting.ms, waiting.reason) == (
        spool_key(entry.id),
        1000,
        "Deepgram rejected the API key (HTTP 401)",
    )
    assert shown(ended)["missing"] == "1 s waiting for batch: Deepgram rejected the API key (HTTP 401)"


async def test_both_tracks_on_one_connection_are_counted_per_track(tmp_path: Path) -> None:
    """DEEPGRAM_CONNECTIONS=per_call, refused: each track's own entry and seconds, never the pair's."""
    engine = FakeEngine(refuse=SttRejected("no", status=401))
    inbound, outbound = call_audio(6, 2.0), call_audio(7, 1.0)
    spec = CallSpec(inbound=inbound, outbound=outbound, speed=0)
    played = await play(engine, spec, tmp_path, tracks=("inbound", "outbound"), deepgram_connections="per_call")
    [ended] = played.observed.ended
    assert (shown(ended, "inbound")["audio_s"], shown(ended, "outbound")["audio_s"]) == (2.0, 1.0)
    assert shown(ended, "inbound")["waiting_s"] == 2.0
    # The outbound track's entry holds the silence that padded it to the inbound's length: not Twilio's audio.
    assert shown(ended, "outbound")["waiting_s"] == 1.0
    entries = {entry.id: entry.track for entry in Spool(tmp_path).entries()}
    assert {(part.track, entries[part.key.removeprefix("spool:")]) for part in ended.coverage
            if part.category is Category.WAITING} == {("inbound", "inbound"), ("outbound", "outbound")}  # fmt: skip


async def test_a_spool_that_cannot_be_written_counts_the_audio_lost(tmp_path: Path) -> None:
    """A file where the spool folder should be: the refused call's audio is lost, with that reason."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    engine = FakeEngine(refuse=SttRejected("no", status=401))
    played = await play(engine, CallSpec(inbound=call_audio(9, 1.0), speed=0), blocker)
    coverage = shown(played.observed.ended[0])
    assert (coverage["lost_s"], coverage["waiting_s"]) == (1.0, 0.0)
    assert coverage["missing"] == "1 s lost: could not be written to the spool"


async def test_chunks_twilio_never_delivered_are_lost_on_their_track(tmp_path: Path) -> None:
    """Three media messages missing on Twilio's side: 60 ms lost (chunks_missing) on top of what came, all of
    which was final."""
    engine = FakeEngine()
    played = await play(engine, CallSpec(inbound=call_audio(10, 1.0), speed=0), tmp_path, lost=range(10, 13))
    coverage = shown(played.observed.ended[0])
    assert (coverage["audio_s"], coverage["live_s"], coverage["lost_s"]) == (1.0, 0.94, 0.06)
    assert coverage["missing"] == "0.06 s lost: gaps in Twilio's chunk numbers"
