"""DEEPGRAM_CONNECTIONS=per_call: both tracks of a call over one multichannel Deepgram connection.

The fake Deepgram transcribes each channel of `multichannel=true&channels=2` on its own, so each track's words
can be predicted from what the caller sent on that track, and checked against the track and speaker they
came back under.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec, build_messages
from service.spool.directory import Spool
from service.spool.wav import read_mulaw_wav
from tests.helpers.audio import call_audio
from tests.helpers.connections import interleaved
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines, final_words
from tests.helpers.service import make_settings, running_service
from tests.helpers.twilio_stream import open_media, token_parameters

SECOND = 8000
SILENCE = b"\xff"


def at(message: str) -> int:
    """Where a message of the stream is on its clock: a media message's timestamp (ms); stop after them all."""
    media = json.loads(message)
    if media.get("event") == "media":
        return int(media["media"]["timestamp"])
    return 10**9 if media.get("event") == "stop" else -1


def per_call(deepgram: FakeDeepgram, **values: Any) -> Any:
    return make_settings(deepgram, stream_track="both_tracks", deepgram_connections="per_call", **values)


def assert_tracks_heard(log_lines: LogLines, call_sid: str, inbound: bytes, outbound: bytes) -> None:
    assert final_words(log_lines, call_sid, "inbound") == expected_words(inbound)
    assert final_words(log_lines, call_sid, "outbound") == expected_words(outbound)
    speakers = {(line["track"], line["speaker"]) for line in log_lines.events("transcript", call_sid=call_sid)}
    assert speakers == {("inbound", "caller"), ("outbound", "agent")}


async def test_both_tracks_go_over_one_connection_and_come_back_to_their_track(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """One multichannel connection carries both tracks interleaved; each track's words come back as its own."""
    caller, agent = call_audio(301, 2.0), call_audio(302, 1.5)
    async with running_service(per_call(deepgram)) as service:
        spec = CallSpec(inbound=caller, outbound=agent, speed=0)
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        summary = await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    assert result.close_code == 1000
    [connection] = deepgram.connections
    assert (connection.option("multichannel"), connection.option("channels")) == ("true", "2")
    # The shorter track is padded with silence at the end, so the channels stay aligned.
    assert bytes(connection.audio) == interleaved(caller, agent + SILENCE * (len(caller) - len(agent)))
    assert connection.control[-1] == {"type": "CloseStream"}
    assert_tracks_heard(log_lines, spec.call_sid, caller, agent)
    assert summary["deepgram_request_ids"] == connection.request_id
    assert (summary["frames_in"], summary["audio_s_lost"], summary["audio_s_spooled"]) == (175, 0, 0)


async def test_a_ringing_track_does_not_hold_back_the_other(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """The outbound track silent for its first 3 s (a <Dial> ringing): the caller's finals come meanwhile,
    and when the agent starts, nothing of either track is lost."""
    caller, agent = call_audio(303, 5.0), call_audio(304, 2.0)
    spec = CallSpec(inbound=caller, outbound=SILENCE * 3 * SECOND + agent, speed=0)
    tracks = ("inbound", "outbound")
    messages = build_messages(spec, "MZ" + spec.call_sid[2:], list(tracks), token_parameters(spec, tracks))

    def ringing(message: str) -> bool:
        media = json.loads(message)
        if media.get("event") != "media":
            return False
        return media["media"]["track"] == "outbound" and int(media["media"]["timestamp"]) < 3000

    sent = [message for message in messages if not ringing(message)]
    before, after = [m for m in sent if at(m) < 3000], [m for m in sent if at(m) >= 3000]
    async with running_service(per_call(deepgram)) as service:
        socket = await open_media(service.url)
        for message in before:  # connected, start, and the caller's first 3 s: no outbound frame at all
            await socket.send(message)
        first_final = await log_lines.wait_for("transcript", timeout=5, call_sid=spec.call_sid, is_final=True)
        for message in after:
            await socket.send(message)
        await socket.wait_closed()
        summary = await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    assert (first_final["track"], first_final["text"].split()) == ("inbound", expected_words(caller)[:4])
    assert len(deepgram.connections) == 1
    assert_tracks_heard(log_lines, spec.call_sid, caller, agent)
    assert summary["audio_s_lost"] == 0


async def test_a_reconnect_mid_call_replays_both_tracks_from_the_last_final(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """Deepgram closing 1011 mid-call: one reconnect replays the interleaved audio from where both channels'
    finals reached, and every word of both tracks comes once, in order."""
    deepgram.faults.close_after_bytes = 44_000  # interleaved: 2.75 s, after each channel's first final (2 s)
    deepgram.faults.fault_connections = 1
    caller, agent = call_audio(305, 6.0), call_audio(306, 6.0)
    async with running_service(per_call(deepgram, deepgram_backoff_initial_s=0.05)) as service:
        spec = CallSpec(inbound=caller, outbound=agent, speed=4)
        await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        summary = await log_lines.wait_for("call.ended", timeout=30, call_sid=spec.call_sid)

    first, second = deepgram.connections
    assert first.close_code == 1011
    assert bytes(second.audio) == interleaved(caller, agent)[2 * 2 * SECOND :]
    assert_tracks_heard(log_lines, spec.call_sid, caller, agent)
    for track in ("inbound", "outbound"):
        ends = [
            line["end"] for line in log_lines.events("transcript", call_sid=spec.call_sid, is_final=True, track=track)
        ]
        assert ends == sorted(ends)
    assert (summary["reconnects"], summary["audio_s_spooled"], summary["audio_s_lost"]) == (1, 0, 0)


async def test_a_refused_connection_spools_each_track_and_batch_brings_them_back(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path
) -> None:
    """Deepgram refusing the key (403): both tracks are spooled, each as its own entry, and batch transcribes
    them into the right tracks."""
    deepgram.faults.reject_status = 403
    caller, agent = call_audio(307, 2.0), call_audio(308, 1.0)
    spec = CallSpec(inbound=caller, outbound=agent, speed=0)
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as batch:
        batch.fail_status = 503  # first see what waits in the spool
        settings = per_call(deepgram, spool_dir=tmp_path, deepgram_batch_url=batch.url, spool_retry_s=0.2)
        async with running_service(settings) as service:
            await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
            summary = await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
            entries = {entry.track: entry for entry in Spool(tmp_path).entries()}
            assert {track: read_mulaw_wav(entry.wav_path.read_bytes()) for track, entry in entries.items()} == {
                "inbound": caller,
                "outbound": agent + SILENCE * SECOND,
            }
            assert {entry.start_s for entry in entries.values()} == {0.0}
            batch.fail_status = None
            await log_lines.wait_for("batch.delivered", timeout=10, track="inbound")
            await log_lines.wait_for("batch.delivered", timeout=10, track="outbound")
            await asyncio.sleep(0)

    assert summary["audio_s_spooled"] == 4.0  # two tracks of 2 s (the agent's padded at its end)
    assert all(line["batch"] for line in log_lines.events("transcript", call_sid=spec.call_sid, is_final=True))
    assert_tracks_heard(log_lines, spec.call_sid, caller, agent)


async def test_channel_options_in_deepgram_options_cannot_undo_the_multichannel_connection(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """DEEPGRAM_OPTIONS asking for multichannel=false&channels=1 is dropped with a warning that names
    DEEPGRAM_CONNECTIONS: the connection still carries both tracks as two channels, each heard as its own."""
    caller, agent = call_audio(309, 1.0), call_audio(310, 1.0)
    settings = per_call(deepgram, deepgram_options="multichannel=false&channels=1&tag=support")
    async with running_service(settings) as service:
        spec = CallSpec(inbound=caller, outbound=agent, speed=0)
        await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    [connection] = deepgram.connections
    assert {name: connection.query[name] for name in ("multichannel", "channels", "tag")} == {
        "multichannel": ["true"], "channels": ["2"], "tag": ["support"],
    }  # fmt: skip
    warnings = {line["option"]: line["why"] for line in log_lines.events("settings.option_ignored")}
    assert set(warnings) == {"channels", "multichannel"}
    assert all("DEEPGRAM_CONNECTIONS" in why for why in warnings.values())
    assert_tracks_heard(log_lines, spec.call_sid, caller, agent)


async def test_a_start_listing_the_outbound_track_first_still_maps_each_channel_to_its_track(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path
) -> None:
    """Twilio's `start.tracks` as ["outbound", "inbound"] (the order is not promised): channel 0 is still the
    caller, and the words and the spool entries of each track come back under that track and speaker."""
    caller, agent = call_audio(311, 4.0), call_audio(312, 4.0)
    spec = CallSpec(inbound=caller, outbound=agent, speed=0)
    parameters = token_parameters(spec, ("inbound", "outbound"))
    messages = build_messages(spec, "MZ" + spec.call_sid[2:], ["outbound", "inbound"], parameters)
    assert json.loads(messages[1])["start"]["tracks"] == ["outbound", "inbound"]
    deepgram.faults.close_after_bytes = 40_000  # 2.5 s of each track: one final (2 s) each, then Deepgram is gone
    deepgram.faults.close_code = 1008  # fatal: the rest of each track goes to the spool
    async with running_service(per_call(deepgram, spool_dir=tmp_path)) as service:
        socket = await open_media(service.url)
        for message in messages:
            await socket.send(message)
        await socket.wait_closed()
        summary = await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    [connection] = deepgram.connections
    assert bytes(connection.audio) == interleaved(caller, agent)[:40_000]
    assert final_words(log_lines, spec.call_sid, "inbound") == expected_words(caller[:16_000])
    assert final_words(log_lines, spec.call_sid, "outbound") == expected_words(agent[:16_000])
    speakers = {(line["track"], line["speaker"]) for line in log_lines.events("transcript", call_sid=spec.call_sid)}
    assert speakers == {("inbound", "caller"), ("outbound", "agent")}
    entries = {entry.track: entry for entry in Spool(tmp_path).entries()}
    assert {track: read_mulaw_wav(entry.wav_path.read_bytes()) for track, entry in entries.items()} == {
        "inbound": caller[16_000:],
        "outbound": agent[16_000:],
    }
    assert summary["audio_s_spooled"] == 4.0


async def test_frames_later_than_the_lag_bound_are_cut_counted_and_said(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """The agent's first second arrives only after the caller's: what lies more than DEEPGRAM_CHANNEL_LAG_MS
    behind had been filled with silence, so it is cut, counted in audio_s_lost and said once; the rest is heard."""
    caller, agent = call_audio(313, 2.0), call_audio(314, 2.0)
    spec = CallSpec(inbound=caller, outbound=agent, speed=0)
    tracks = ("inbound", "outbound")
    messages = build_messages(spec, "MZ" + spec.call_sid[2:], list(tracks), token_parameters(spec, tracks))

    def held(message: str) -> bool:  # the agent's first second, which Twilio delivers late
        return 0 <= at(message) < 1000 and json.loads(message)["media"]["track"] == "outbound"

    first_second = [m for m in messages[2:] if not held(m) and at(m) < 1000]
    rest = [m for m in messages[2:] if at(m) >= 1000]
    async with running_service(per_call(deepgram, deepgram_channel_lag_ms=200)) as service:
        socket = await open_media(service.url)
        for message in [*messages[:2], *first_second, *filter(held, messages), *rest]:
            await socket.send(message)
        await socket.wait_closed()
        summary = await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    # The outbound was padded to 200 ms behind the caller's 1 s: its first 800 ms are silence, and cut.
    heard_agent = SILENCE * (8 * SECOND // 10) + agent[8 * SECOND // 10 :]
    [connection] = deepgram.connections
    assert bytes(connection.audio) == interleaved(caller, heard_agent)
    assert_tracks_heard(log_lines, spec.call_sid, caller, heard_agent)
    assert summary["audio_s_lost"] == 0.8
    [lost] = log_lines.events("audio.lost", call_sid=spec.call_sid)
    assert (lost["track"], lost["lost_s"]) == ("outbound", 0.8)
    assert "DEEPGRAM_CHANNEL_LAG_MS (200 ms)" in lost["why"]
