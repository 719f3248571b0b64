"""End to end on Deepgram Flux (DEEPGRAM_MODEL=flux-general-en): the real app on Hypercorn, the project's Twilio
simulator through /voice and /media, the fake's `/v2/listen`.

The fault tests run on Flux too, beside v1 (`@layouts_and_flux` in test_resilience.py); here is what is Flux's
own: one final per turn, keep-alive as silence, per_call falling back to a connection per track, and the options
Flux refuses stopping start-up instead of failing every call.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from service.deepgram.flux_protocol import KEEPALIVE_SILENCE
from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from tests.helpers.audio import SILENCE, turn_audio
from tests.helpers.connections import padded
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FLUX_PATH, FakeDeepgram, expected_words
from tests.helpers.logs import LogLines, final_words
from tests.helpers.paths import ROOT
from tests.helpers.service import make_settings, running_service
from tests.helpers.sse import FeedReader
from tests.helpers.twilio_stream import streaming

FLUX = "flux-general-en"
FEED_TOKEN = "flux-feed-t0ken"  # API_TOKEN: the live feed's credentials


async def test_a_call_on_flux_is_one_final_per_turn_with_every_word_once(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """Flux gets exactly the caller's bytes as mu-law 8 kHz; each turn is one final, in order, every word once,
    on the call's timeline; interims come from Updates; the call ends with CloseStream and a clean close."""
    audio = turn_audio(41, 5.0)  # turns 0-1.5 s, 2-3.5 s, 4-5 s
    async with running_service(make_settings(deepgram, deepgram_model=FLUX)) as service:
        spec = CallSpec(inbound=audio, speed=0)
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    assert result.close_code == 1000
    [connection] = deepgram.connections
    assert connection.path == FLUX_PATH
    assert connection.query == {"model": [FLUX], "encoding": ["mulaw"], "sample_rate": ["8000"]}
    assert connection.headers["authorization"] == f"Token {DEEPGRAM_KEY}"
    assert bytes(connection.audio) == audio
    assert connection.control == [{"type": "CloseStream"}]
    await connection.closed.wait()
    assert connection.close_code == 1000

    assert final_words(log_lines, spec.call_sid) == expected_words(audio)
    finals = log_lines.events("transcript", call_sid=spec.call_sid, is_final=True)
    assert [(line["start"], line["end"]) for line in finals] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]
    assert all(line["speech_final"] for line in finals)
    assert log_lines.events("transcript", call_sid=spec.call_sid, is_final=False), "Updates are interims"
    [summary] = log_lines.events("call.ended", call_sid=spec.call_sid)
    assert (summary["finals"], summary["audio_s_sent"], summary["reconnects"]) == (3, 5.0, 0)
    assert summary["deepgram_request_ids"] == connection.request_id
    assert summary["audio_s_spooled"] == 0


async def test_a_pause_is_kept_alive_with_silence_and_times_stay_on_the_calls_audio(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """A pause longer than DEEPGRAM_KEEPALIVE_S sends 100 ms of silence (Flux has no KeepAlive), so Flux's idle
    close never comes; the transcript's times leave that silence out."""
    deepgram.faults.idle_timeout_s = 2.0
    settings = make_settings(deepgram, deepgram_model=FLUX, deepgram_keepalive_s=0.5)
    audio = turn_audio(42, 2.0)
    async with running_service(settings) as service:
        spec = CallSpec(inbound=audio, speed=0)
        async with streaming(service.url, spec, ("inbound",)) as stream:
            await stream.send_media(frames=50)  # the first second
            await asyncio.sleep(3.0)  # the point: a pause longer than the fake's idle timeout
            await stream.send_media()
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    [connection] = deepgram.connections
    assert connection.control == [{"type": "CloseStream"}]
    assert connection.close_code == 1000  # not the idle close (1011)
    heard = bytes(connection.audio)
    inserted = len(heard) - len(audio)
    assert inserted >= 2 * len(KEEPALIVE_SILENCE)
    assert heard == audio[:8000] + SILENCE * inserted + audio[8000:]
    [summary] = log_lines.events("call.ended", call_sid=spec.call_sid)
    assert summary["keepalives"] == inserted // len(KEEPALIVE_SILENCE)
    assert final_words(log_lines, spec.call_sid) == connection.final_words()
    finals = log_lines.events("transcript", call_sid=spec.call_sid, is_final=True)
    assert finals[0]["start"] == 0.0
    assert finals[-1]["end"] == 2.0  # the call's 2 s, not 2 s plus the silence Flux heard


async def test_per_call_falls_back_to_a_connection_per_track_and_start_up_says_so(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """DEEPGRAM_CONNECTIONS=per_call on Flux (mono only): each track gets its own connection, said once at start-up."""
    settings = make_settings(deepgram, deepgram_model=FLUX, stream_track="both_tracks", deepgram_connections="per_call")
    caller, agent = turn_audio(43, 2.0), turn_audio(44, 2.0)
    async with running_service(settings) as service:
        [warning] = log_lines.events("settings.per_call_unavailable")
        assert "one connection per track" in warning["why"]
        spec = CallSpec(inbound=caller, outbound=agent, speed=0)
        await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    assert sorted(bytes(c.audio) for c in deepgram.connections) == sorted([padded(caller), padded(agent)])
    assert all(c.path == FLUX_PATH for c in deepgram.connections)
    assert final_words(log_lines, spec.call_sid, "inbound") == expected_words(caller)
    assert final_words(log_lines, spec.call_sid, "outbound") == expected_words(agent)


async def test_an_option_flux_refuses_stops_start_up_naming_it(tmp_path: Path) -> None:
    """DEEPGRAM_OPTIONS=smart_format=true with a Flux model: `serve` exits 2 before serving, naming the variable,
    the option and why, as any bad setting does (never an HTTP 400 on every call)."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "DEEPGRAM_API_KEY": DEEPGRAM_KEY,
        "DEEPGRAM_MODEL": FLUX,
        "DEEPGRAM_OPTIONS": "smart_format=true&tag=ok",
        "DEEPGRAM_DIARIZE": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'callscribe.sqlite3'}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "serve", "--port", "9", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert stderr.decode().splitlines() == [
        "callscribe cannot start: bad configuration",
        f"  DEEPGRAM_DIARIZE: diarize: Flux ({FLUX}) does not take it: Flux does not separate voices; stream "
        "both_tracks to keep the two sides apart",
        f"  DEEPGRAM_OPTIONS: smart_format: Flux ({FLUX}) does not take it: Flux formats its transcripts itself",
    ]
    assert stdout == b""


async def test_turn_boundaries_of_a_flux_call_reach_the_live_feed_in_order(deepgram: FakeDeepgram) -> None:
    """With DEEPGRAM_EAGER_EOT_THRESHOLD: a turn's start, its eager end, its resumption and its eager end again
    are feed events of their own, each before the turn's final, whose text is the last eager end's."""
    settings = make_settings(deepgram, deepgram_model=FLUX, deepgram_eager_eot_threshold=0.5, api_token=FEED_TOKEN)
    audio = turn_audio(45, 1.5) + SILENCE * 4000 + turn_audio(46, 1.0) + SILENCE * 8000  # pauses 0.5 s, then 1 s
    spec = CallSpec(inbound=audio, speed=0)
    auth = {"Authorization": f"Bearer {FEED_TOKEN}"}
    async with running_service(settings) as service, FeedReader(service.url, auth) as feed:
        await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        await feed.wait_for("call.ended", call_sid=spec.call_sid)

    told = [e for e in feed.events if e.data.get("call_sid") == spec.call_sid]
    turns = [(e.event, e.data["turn_index"]) for e in told if e.event.startswith("turn.")]
    assert turns == [("turn.started", 0), ("turn.eager_end", 0), ("turn.resumed", 0), ("turn.eager_end", 0)]
    [final] = [e for e in told if e.event == "transcript" and e.data["is_final"]]
    last_eager = [e for e in told if e.event == "turn.eager_end"][-1]
    assert told.index(last_eager) < told.index(final)
    assert last_eager.data["text"] == final.data["text"]
    assert final.data["text"].split() == expected_words(audio)
