"""Bad input on /media gets a specific close code, reason and log line, and never disturbs another call."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from service.calls.stream.session import CallSession
from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec, build_messages, twilio_signature
from service.spool.directory import Spool
from service.spool.wav import read_mulaw_wav
from tests.helpers.audio import call_audio
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines, final_words
from tests.helpers.service import make_settings, running_service
from tests.helpers.twilio_stream import open_media, token_parameters

SPEC = CallSpec(inbound=call_audio(5, 1.0), speed=0)
STREAM_SID = "MZ" + "5" * 32


def opening() -> tuple[str, str, str]:
    """connected, start and the first media of SPEC's stream, its token issued now: a token made at import would
    expire (STREAM_TOKEN_TTL_S) before a late test in a long run uses it."""
    connected, start, first_media, *_ = build_messages(SPEC, STREAM_SID, ["inbound"], token_parameters(SPEC))
    return connected, start, first_media


def _edit(message: str, *path: str, value: Any) -> str:
    data = json.loads(message)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(data)


# Each bad stream as the messages it sends, from a fresh (connected, start, first media).
BAD_STREAMS: dict[str, tuple[Callable[[str, str, str], list[str]], int, str]] = {
    "malformed JSON": (lambda c, s, m: [c, s, '{"event": "media", '], 1007, "malformed JSON"),
    "media before start": (lambda c, s, m: [c, m], 1008, "media before start"),
    "a second start": (lambda c, s, m: [c, s, m, s], 1008, "a second start"),
    "bad base64": (lambda c, s, m: [c, s, _edit(m, "media", "payload", value="@@@=")], 1007, "base64"),
    "an oversized message": (lambda c, s, m: [c, s, "x" * 70_000], 1009, "MAX_MESSAGE_BYTES"),
    "a-law audio": (
        lambda c, s, m: [c, _edit(s, "start", "mediaFormat", "encoding", value="audio/x-alaw")],
        1003,
        "not audio/x-mulaw 8000 Hz mono",
    ),
    "16 kHz audio": (
        lambda c, s, m: [c, _edit(s, "start", "mediaFormat", "sampleRate", value=16000)],
        1003,
        "16000 Hz",
    ),
    "media on a track not started": (
        lambda c, s, m: [c, s, _edit(m, "media", "track", value="outbound")],
        1008,
        "track 'outbound'",
    ),
    "a counter that is not a number": (
        lambda c, s, m: [c, s, _edit(m, "sequenceNumber", value="x")],
        1007,
        "'sequenceNumber'",
    ),
}


@pytest.fixture
async def service_with_bystander(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> AsyncIterator[tuple[str, asyncio.Task[Any], CallSpec]]:
    """A running service with a good call in flight next to whatever the test does."""
    async with running_service(make_settings(deepgram)) as service:
        spec = CallSpec(inbound=call_audio(77, 2.0), speed=4)
        bystander = asyncio.create_task(simulate_call(service.url, spec, auth_token=TWILIO_TOKEN))
        await deepgram.wait_for_connections(1)
        yield service.url, bystander, spec


async def _assert_bystander_unharmed(bystander: asyncio.Task[Any], spec: CallSpec, log_lines: LogLines) -> None:
    result = await bystander
    assert result.close_code == 1000
    await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    assert final_words(log_lines, spec.call_sid) == expected_words(spec.inbound)


@pytest.mark.parametrize("case", sorted(BAD_STREAMS))
async def test_bad_stream_is_closed_with_a_reason(
    case: str, service_with_bystander: tuple[str, asyncio.Task[Any], CallSpec], log_lines: LogLines
) -> None:
    """Each bad input closes only its own stream, with a specific code and reason and one log line."""
    url, bystander, spec = service_with_bystander
    build, code, reason = BAD_STREAMS[case]
    messages = build(*opening())
    socket = await open_media(url)
    with pytest.raises(ConnectionClosed):
        for message in messages:
            await socket.send(message)
        await asyncio.wait_for(socket.recv(), timeout=5)
    assert socket.close_code == code
    assert reason in (socket.close_reason or "")
    [rejected] = log_lines.events("twilio.rejected")
    assert rejected["close_code"] == code
    assert reason in rejected["why"]
    await _assert_bystander_unharmed(bystander, spec, log_lines)


async def test_unknown_events_are_logged_once_and_ignored(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """An event Twilio may add later is logged once per call and the call goes on."""
    spec = CallSpec(inbound=call_audio(9, 1.0), speed=0)
    messages = build_messages(spec, STREAM_SID, ["inbound"], token_parameters(spec))
    unknown = json.dumps({"event": "transcription", "sequenceNumber": "99", "streamSid": STREAM_SID})
    async with running_service(make_settings(deepgram)) as service:
        socket = await open_media(service.url)
        for message in [*messages[:3], unknown, unknown, *messages[3:]]:
            await socket.send(message)
        await socket.wait_closed()
        await log_lines.wait_for("call.ended")
    assert socket.close_code == 1000
    [warning] = log_lines.events("twilio.unknown_event")
    assert warning["twilio_event"] == "transcription"
    assert final_words(log_lines, spec.call_sid) == expected_words(spec.inbound)


async def test_max_calls_refuses_extra_streams_and_voice_skips_the_stream(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """At MAX_CALLS a new stream closes 1013 and /voice answers TwiML that lets the call go on unstreamed."""
    async with running_service(make_settings(deepgram, max_calls=1)) as service:
        connected, start, _ = opening()
        first = await open_media(service.url)
        await first.send(connected)
        await first.send(start)
        await deepgram.wait_for_connections(1)

        second = await open_media(service.url)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(second.recv(), timeout=5)
        assert second.close_code == 1013
        assert "MAX_CALLS (1)" in (second.close_reason or "")

        form = {"CallSid": "CA2", "From": "+15005550006"}
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{service.url}/voice",
                data=form,
                headers={"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, f"{service.url}/voice", form)},
            )
        assert answer.status_code == 200
        assert "<Stream" not in answer.text
        assert "<Pause" in answer.text
        assert log_lines.events("voice.not_streaming", call_sid="CA2")
        await first.close()
    assert len(deepgram.connections) == 1


async def test_a_missing_deepgram_key_is_said_once_and_the_call_spooled(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Any
) -> None:
    """No DEEPGRAM_API_KEY: said once per call, Deepgram never called, both tracks wait whole in the spool."""
    settings = make_settings(deepgram, deepgram_api_key=None, stream_track="both_tracks", spool_dir=tmp_path)
    spec = CallSpec(inbound=call_audio(3, 1.0), outbound=call_audio(4, 1.0), speed=0)
    async with running_service(settings) as service:
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    assert result.close_code == 1000
    [failure] = log_lines.events("deepgram.failed")
    assert failure["why"] == "DEEPGRAM_API_KEY is not set"
    assert deepgram.upgrade_attempts == 0
    spooled = {entry.track: entry for entry in Spool(tmp_path).entries()}
    assert sorted(spooled) == ["inbound", "outbound"]
    assert read_mulaw_wav(spooled["inbound"].wav_path.read_bytes()) == spec.inbound
    [summary] = log_lines.events("call.ended", call_sid=spec.call_sid)
    assert summary["deepgram_error"] == "DEEPGRAM_API_KEY is not set"
    assert summary["audio_s_spooled"] == 2.0


async def test_secrets_never_reach_the_logs(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """A whole call at DEBUG level writes neither the Deepgram key nor the Twilio token nor a signature."""
    spec = CallSpec(inbound=call_audio(12, 1.0), speed=0)
    async with running_service(make_settings(deepgram)) as service:
        await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    text = log_lines.text()
    signature = twilio_signature(TWILIO_TOKEN, service.url.replace("http", "wss") + "/media", {})
    assert "test-key" not in text  # the Deepgram key
    assert TWILIO_TOKEN not in text
    assert signature not in text
    assert base64.b64encode(spec.inbound[:160]).decode() not in text


async def test_a_bug_in_one_stream_closes_it_1011_and_spares_the_others(
    service_with_bystander: tuple[str, asyncio.Task[Any], CallSpec],
    log_lines: LogLines,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception escaping a stream's handling is logged with its traceback and closes only that stream, 1011."""
    url, bystander, spec = service_with_bystander
    on_message = CallSession.on_message

    def buggy_on_message(session: CallSession, data: str | bytes) -> Any:
        if "bug-trigger" in str(data):  # only this test's stream: the bystander's messages never carry it
            raise RuntimeError("a bug")
        return on_message(session, data)

    monkeypatch.setattr(CallSession, "on_message", buggy_on_message)
    socket = await open_media(url)
    with pytest.raises(ConnectionClosed):
        await socket.send(opening()[0])
        await socket.send(json.dumps({"event": "bug-trigger", "streamSid": STREAM_SID}))
        await asyncio.wait_for(socket.recv(), timeout=5)
    assert socket.close_code == 1011
    [error] = log_lines.events("media.internal_error")
    assert "RuntimeError: a bug" in error["exception"]
    await _assert_bystander_unharmed(bystander, spec, log_lines)
