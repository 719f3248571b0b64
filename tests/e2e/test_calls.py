"""End to end: the real app on Hypercorn, the project's Twilio simulator as the caller, the fake Deepgram.

Deepgram's fake derives each word from the audio it received (tests/helpers/fakes/deepgram_server.py), so a
transcript that lost, repeated, reordered or mixed up audio between calls shows up as the wrong words.
"""

from __future__ import annotations

import asyncio

import pytest

from service.simulator.client import simulate_call
from service.simulator.messages import CallResult, CallSpec, build_messages
from tests.helpers.audio import call_audio
from tests.helpers.connections import Layout, layouts
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines, final_words
from tests.helpers.service import make_settings, running_service
from tests.helpers.twilio_stream import open_media, streaming, token_parameters
from tests.helpers.waiting import eventually


async def place_call(service_url: str, spec: CallSpec) -> CallResult:
    return await simulate_call(service_url, spec, auth_token=TWILIO_TOKEN)


async def test_a_call_becomes_a_live_transcript(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """Deepgram gets exactly the caller's bytes with the right options; every final is logged, in order."""
    audio = call_audio(1, 3.0)
    async with running_service(make_settings(deepgram)) as service:
        spec = CallSpec(inbound=audio, speed=0)
        result = await place_call(service.url, spec)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    assert result.close_code == 1000
    [connection] = deepgram.connections
    assert bytes(connection.audio) == bytes(result.sent["inbound"]) == audio
    assert connection.headers["authorization"] == f"Token {DEEPGRAM_KEY}"
    for name, value in {
        "encoding": "mulaw",
        "sample_rate": "8000",
        "channels": "1",
        "model": "nova-3",
        "language": "en-US",
        "interim_results": "true",
        "smart_format": "true",
        "endpointing": "300",
        "utterance_end_ms": "1000",
    }.items():
        assert connection.option(name) == value, name
    assert connection.control[-1] == {"type": "CloseStream"}

    call_sid = spec.call_sid
    assert final_words(log_lines, call_sid) == expected_words(audio)
    finals = log_lines.events("transcript", call_sid=call_sid, is_final=True)
    assert [line["start"] for line in finals] == sorted(line["start"] for line in finals)
    assert all(line["stream_sid"] == result.stream_sid and line["track"] == "inbound" for line in finals)
    assert {line["speaker"] for line in finals} == {"caller"}
    assert finals[0]["start"] == 0.0
    assert finals[-1]["end"] == 3.0
    assert log_lines.events("transcript", call_sid=call_sid, is_final=False), "interim results are logged too"

    [summary] = log_lines.events("call.ended", call_sid=call_sid)
    assert summary["ended_by"] == "stop"
    assert summary["frames_in"] == 150
    assert summary["audio_s_sent"] == 3.0
    assert summary["finals"] == len(finals)
    assert summary["deepgram_request_ids"] == connection.request_id
    assert (summary["audio_s_spooled"], summary["reconnects"]) == (0, 0)


async def test_twenty_simultaneous_calls_keep_their_own_words(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """Twenty calls at once: each transcript holds exactly its own call's words, and Deepgram saw each once."""
    audios = [call_audio(100 + n, 2.0) for n in range(20)]
    async with running_service(make_settings(deepgram)) as service:
        specs = [CallSpec(inbound=audio, speed=4) for audio in audios]
        results = await asyncio.gather(*(place_call(service.url, spec) for spec in specs))
        for spec in specs:
            await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    assert sorted(bytes(c.audio) for c in deepgram.connections) == sorted(audios)
    for audio, spec, result in zip(audios, specs, results, strict=True):
        assert bytes(result.sent["inbound"]) == audio
        assert final_words(log_lines, spec.call_sid) == expected_words(audio)


async def test_a_call_that_hangs_up_without_stop_still_gets_its_last_words(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """Twilio dropping the socket without `stop` still ends with CloseStream and every final logged."""
    audio = call_audio(7, 2.5)
    async with running_service(make_settings(deepgram)) as service:
        spec = CallSpec(inbound=audio, speed=0, send_stop=False)
        await place_call(service.url, spec)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    [connection] = deepgram.connections
    assert bytes(connection.audio) == audio
    assert connection.control[-1] == {"type": "CloseStream"}
    assert final_words(log_lines, spec.call_sid) == expected_words(audio)
    [summary] = log_lines.events("call.ended", call_sid=spec.call_sid)
    assert summary["ended_by"] == "twilio_disconnected"


async def test_both_tracks_are_transcribed_separately(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """STREAM_TRACK=both_tracks: each track has its own Deepgram connection and its own transcript."""
    caller, agent = call_audio(21, 2.0), call_audio(22, 1.5)
    settings = make_settings(deepgram, stream_track="both_tracks")
    async with running_service(settings) as service:
        spec = CallSpec(inbound=caller, outbound=agent, speed=0)
        await place_call(service.url, spec)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    assert sorted(bytes(c.audio) for c in deepgram.connections) == sorted([caller, agent])
    assert final_words(log_lines, spec.call_sid, "inbound") == expected_words(caller)
    assert final_words(log_lines, spec.call_sid, "outbound") == expected_words(agent)
    speakers = {(line["track"], line["speaker"]) for line in log_lines.events("transcript", call_sid=spec.call_sid)}
    assert speakers == {("inbound", "caller"), ("outbound", "agent")}


@layouts
async def test_keepalive_is_sent_while_no_audio_flows(
    deepgram: FakeDeepgram, log_lines: LogLines, layout: Layout
) -> None:
    """A pause longer than DEEPGRAM_KEEPALIVE_S sends KeepAlive, so Deepgram's 10 s idle close never comes."""
    deepgram.faults.idle_timeout_s = 2.0
    settings = make_settings(deepgram, deepgram_keepalive_s=0.5, **layout.settings())
    async with running_service(settings) as service:
        spec = layout.spec(31, 1.0, speed=0)
        async with streaming(service.url, spec, layout.tracks) as stream:
            await stream.send_media(frames=25 * len(layout.tracks))  # the first half second of each track
            await asyncio.sleep(3.0)  # the point: a pause longer than the fake's idle timeout
            await stream.send_media()
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    [connection] = deepgram.connections
    assert {"type": "KeepAlive"} in connection.control
    assert connection.close_code == 1000
    for track, audio in layout.sent(spec).items():
        assert final_words(log_lines, spec.call_sid, track) == expected_words(audio)


@pytest.mark.parametrize("batch_ms", [100, 400])
async def test_audio_batching_groups_frames_without_changing_the_bytes(
    deepgram: FakeDeepgram, log_lines: LogLines, batch_ms: int
) -> None:
    """AUDIO_BATCH_MS=100 sends 800-byte chunks (five Twilio frames), 400 sends 3200-byte ones (Deepgram's Twilio
    sample's): the same bytes in the same order."""
    audio = call_audio(51, 2.0)
    settings = make_settings(deepgram, audio_batch_ms=batch_ms)
    async with running_service(settings) as service:
        spec = CallSpec(inbound=audio, speed=2)
        await place_call(service.url, spec)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    [connection] = deepgram.connections
    assert bytes(connection.audio) == audio
    sizes = [len(frame) for frame in connection.audio_frames]
    assert max(sizes) == batch_ms * 8
    assert len(sizes) <= len(audio) // (batch_ms * 8) + 2  # at real-time-like pace frames wait for their batch
    assert final_words(log_lines, spec.call_sid) == expected_words(audio)


async def test_a_backlog_goes_to_deepgram_coalesced_and_at_once(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """Audio that queued while Deepgram was slow to answer leaves in 250 ms messages, not one frame at a time."""
    audio = call_audio(52, 3.0)
    deepgram.faults.hold_handshake = asyncio.Event()
    async with running_service(make_settings(deepgram)) as service:
        spec = CallSpec(inbound=audio, speed=0)
        async with streaming(service.url, spec) as stream:
            await stream.send_media()
            [session] = await eventually(lambda: list(service.service.calls.sessions))
            track = await eventually(lambda: session.tracks.get("inbound"))
            await eventually(lambda: track.received_bytes == len(audio))  # all of it waits for Deepgram
            deepgram.faults.hold_handshake.set()
            await eventually(lambda: deepgram.connections and len(deepgram.connections[0].audio) == len(audio))
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)

    [connection] = deepgram.connections
    assert bytes(connection.audio) == audio
    # 24,000 bytes as whole 160-byte frames joined up to 250 ms (2000 bytes): twelve frames a message.
    assert [len(message) for message in connection.audio_frames] == [1920] * 12 + [960]
    assert final_words(log_lines, spec.call_sid) == expected_words(audio)


async def test_twilios_own_gaps_are_counted_in_the_summary(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """Media messages Twilio never delivered show up as missing chunks and sequence numbers in call.ended."""
    spec = CallSpec(inbound=call_audio(71, 1.0), speed=0)
    messages = build_messages(spec, "MZ" + spec.call_sid[2:], ["inbound"], token_parameters(spec))
    delivered = messages[:10] + messages[13:]  # three media messages lost on Twilio's side
    async with running_service(make_settings(deepgram)) as service:
        socket = await open_media(service.url)
        for message in delivered:
            await socket.send(message)
        await socket.wait_closed()
        summary = await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    assert (summary["chunks_missing"], summary["messages_missing"]) == (3, 3)
    assert summary["frames_in"] == 47


async def test_diarization_splits_a_single_track_call_by_voice(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """DEEPGRAM_DIARIZE on a one-track call: finals are split per voice and labelled speaker 1, speaker 2."""
    audio = call_audio(81, 3.0)  # six windows: three per voice
    async with running_service(make_settings(deepgram, deepgram_diarize=True)) as service:
        spec = CallSpec(inbound=audio, speed=0)
        await place_call(service.url, spec)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    assert deepgram.connections[0].option("diarize") == "true"
    finals = log_lines.events("transcript", call_sid=spec.call_sid, is_final=True)
    labelled = [(line["speaker"], line["text"]) for line in finals]
    words = expected_words(audio)
    assert labelled == [
        ("speaker 1", " ".join(words[0:3])),
        ("speaker 2", words[3]),
        ("speaker 2", " ".join(words[4:6])),
    ]


async def test_diarization_is_not_asked_for_when_both_sides_have_their_own_track(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """With both_tracks each track is one side already: no diarize option, speakers are caller and agent."""
    settings = make_settings(deepgram, deepgram_diarize=True, stream_track="both_tracks")
    async with running_service(settings) as service:
        spec = CallSpec(inbound=call_audio(82, 1.0), outbound=call_audio(83, 1.0), speed=0)
        await place_call(service.url, spec)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    assert {c.option("diarize") for c in deepgram.connections} == {None}
    assert {line["speaker"] for line in log_lines.events("transcript", is_final=True)} == {"caller", "agent"}


async def test_a_silent_track_does_not_hold_back_the_other(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """both_tracks with no outbound audio at all: the caller's finals arrive while the call is still going."""
    spec = CallSpec(inbound=call_audio(84, 2.5), speed=0)
    messages = build_messages(
        spec, "MZ" + spec.call_sid[2:], ["inbound", "outbound"], token_parameters(spec, ("inbound", "outbound"))
    )
    async with running_service(make_settings(deepgram, stream_track="both_tracks")) as service:
        socket = await open_media(service.url)
        for message in messages[:-1]:  # everything but stop, and no outbound media ever
            if '"track": "outbound"' not in message and '"track":"outbound"' not in message:
                await socket.send(message)
        first_final = await log_lines.wait_for("transcript", timeout=5, call_sid=spec.call_sid, is_final=True)
        await socket.send(messages[-1])
        await socket.wait_closed()
    assert first_final["track"] == "inbound"
    assert first_final["text"].split() == expected_words(spec.inbound)[:4]
