"""The Twilio call simulator and its audio helpers: pure parts, then calls against a throwaway Quart app."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import math
import socket
import struct
import time
import warnings
import wave
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypothesis import given
from hypothesis import strategies as st
from quart import Quart, request, websocket
from twilio.request_validator import RequestValidator

from service.cli.simulate import add_arguments, run
from service.mulaw import FRAME_BYTES
from service.mulaw import SAMPLE_RATE as MULAW_SAMPLE_RATE
from service.simulator.audio import AudioFormatError, frames, mulaw_silence, wav_to_mulaw
from service.simulator.client import simulate_call
from service.simulator.messages import (
    CallResult,
    CallSpec,
    TwimlError,
    build_messages,
    connect_url,
    parse_twiml,
    twilio_signature,
    with_headers,
)
from service.simulator.report import failure_reason
from tests.helpers.paths import SAMPLES

with warnings.catch_warnings():
    # As in service/simulator/audio.py: the stdlib's audioop warns on import on 3.11/3.12 (audioop-lts from 3.13).
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import audioop

TOKEN = "simulator-test-token"
STREAM_SID = "MZ" + "a" * 32
PUBLIC_WSS = "wss://calls.example.test/media"  # the TwiML's URL: signed, but never connected to


def _audio(n_bytes: int, seed: int = 0) -> bytes:
    """Distinct, non-silent μ-law bytes (never 0xFF, so padding is recognisable)."""
    return bytes((seed + i * 7) % 0x7F for i in range(n_bytes))


def _events(messages: list[str]) -> list[dict[str, Any]]:
    return [json.loads(message) for message in messages]


# --- build_messages: the wire format of https://www.twilio.com/docs/voice/media-streams/websocket-messages ---


def test_messages_match_twilios_format_field_for_field() -> None:
    """connected, start, media and stop carry exactly Twilio's fields, with string counters."""
    spec = CallSpec(inbound=_audio(320), call_sid="CA" + "1" * 32, account_sid="AC" + "2" * 32)
    connected, start, first, second, stop = _events(build_messages(spec, STREAM_SID, ["inbound"], {"k": "v"}))
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start == {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": STREAM_SID,
        "start": {
            "accountSid": spec.account_sid,
            "streamSid": STREAM_SID,
            "callSid": spec.call_sid,
            "tracks": ["inbound"],
            "customParameters": {"k": "v"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    assert first == {
        "event": "media",
        "sequenceNumber": "2",
        "streamSid": STREAM_SID,
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "0",
            "payload": base64.b64encode(spec.inbound[:160]).decode(),
        },
    }
    assert second["media"]["chunk"] == "2"
    assert second["media"]["timestamp"] == "20"
    assert stop == {
        "event": "stop",
        "sequenceNumber": "4",
        "streamSid": STREAM_SID,
        "stop": {"accountSid": spec.account_sid, "callSid": spec.call_sid},
    }


def test_both_tracks_interleave_with_own_chunks_and_shared_timestamps() -> None:
    """both_tracks: one frame per track per 20 ms slot, own chunk counts; the shorter track just ends."""
    spec = CallSpec(inbound=_audio(3 * 160, 1), outbound=_audio(2 * 160, 2))
    events = _events(build_messages(spec, STREAM_SID, ["inbound", "outbound"], {}))
    assert events[1]["start"]["tracks"] == ["inbound", "outbound"]
    media = [(e["media"]["track"], e["media"]["chunk"], e["media"]["timestamp"]) for e in events[2:-1]]
    assert media == [
        ("inbound", "1", "0"),
        ("outbound", "1", "0"),
        ("inbound", "2", "20"),
        ("outbound", "2", "20"),
        ("inbound", "3", "40"),
    ]
    assert [e["sequenceNumber"] for e in events[1:]] == [str(n) for n in range(1, 8)]
    assert "sequenceNumber" not in events[0]


@given(audio=st.binary(max_size=2000))
def test_payloads_decode_to_the_audio_padded_with_silence(audio: bytes) -> None:
    """The base64 payloads, decoded and joined, are the audio then μ-law silence up to a whole frame."""
    events = _events(build_messages(CallSpec(inbound=audio), STREAM_SID, ["inbound"], {}))
    payloads = [base64.b64decode(e["media"]["payload"]) for e in events if e["event"] == "media"]
    assert all(len(payload) == FRAME_BYTES for payload in payloads)
    assert len(payloads) == math.ceil(len(audio) / FRAME_BYTES)
    joined = b"".join(payloads)
    assert joined[: len(audio)] == audio
    assert set(joined[len(audio) :]) <= {0xFF}
    assert [e["event"] for e in events][-1] == "stop"


def test_no_stop_message_when_the_call_drops() -> None:
    """send_stop=False: the sequence ends with the last media message."""
    events = _events(build_messages(CallSpec(inbound=_audio(160), send_stop=False), STREAM_SID, ["inbound"], {}))
    assert [e["event"] for e in events] == ["connected", "start", "media"]


def test_outbound_track_without_outbound_audio_is_silence_as_long_as_the_call() -> None:
    """Twilio streams the outbound track for the whole call; with nothing played it is silence."""
    events = _events(build_messages(CallSpec(inbound=_audio(480)), STREAM_SID, ["outbound"], {}))
    payloads = [base64.b64decode(e["media"]["payload"]) for e in events if e["event"] == "media"]
    assert {e["media"]["track"] for e in events if e["event"] == "media"} == {"outbound"}
    assert b"".join(payloads) == mulaw_silence(0.06)


# --- the other pure parts ---------------------------------------------------------------------------------


def test_signature_is_what_twilios_validator_accepts() -> None:
    """twilio_signature over a URL and form validates with twilio's RequestValidator."""
    form = {"CallSid": "CA1", "From": "+15005550006"}
    signature = twilio_signature(TOKEN, "https://example.test/voice", form)
    assert RequestValidator(TOKEN).validate("https://example.test/voice", form, signature)
    assert not RequestValidator(TOKEN).validate("https://example.test/other", form, signature)


def test_twiml_stream_url_track_and_parameters_are_read() -> None:
    """The reference's TwiML gives its wss URL, track attribute and parameters; no <Stream> gives None."""
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Start><Stream name="stt" track="inbound_track" '
        'url="wss://bridge.example.com/media"><Parameter name="token" value="abc" /></Stream></Start>'
        '<Pause length="3600" /></Response>'
    )
    stream = parse_twiml(twiml)
    assert stream is not None
    assert (stream.url, stream.track_setting, stream.params) == (
        "wss://bridge.example.com/media",
        "inbound_track",
        {"token": "abc"},
    )
    assert stream.tracks == ("inbound",)
    assert parse_twiml("<Response><Dial>+15005550006</Dial></Response>") is None


@pytest.mark.parametrize(
    "twiml",
    [
        "not xml",
        "<Say>hi</Say>",
        '<Response><Start><Stream url="ws://insecure.example/media" /></Start></Response>',
        '<Response><Start><Stream url="wss://x.example/media" track="both" /></Start></Response>',
    ],
)
def test_twiml_twilio_would_reject_raises(twiml: str) -> None:
    """Non-XML, a non-Response root, a ws:// URL or an unknown track raise TwimlError."""
    with pytest.raises(TwimlError):
        parse_twiml(twiml)


def test_connect_url_keeps_the_path_and_maps_the_scheme() -> None:
    """The TwiML's path on base_url's host: http becomes ws, https becomes wss."""
    assert connect_url("http://127.0.0.1:5001", "wss://public.example/media") == "ws://127.0.0.1:5001/media"
    assert connect_url("https://app.example", "wss://public.example/media") == "wss://app.example/media"


def test_extra_headers_replace_computed_ones_case_insensitively() -> None:
    """A caller's header overrides ours whatever its capitalisation, and is sent once."""
    merged = with_headers({"x-twilio-signature": "computed"}, {"X-Twilio-Signature": "mine", "X-Other": "1"})
    assert merged == {"X-Twilio-Signature": "mine", "X-Other": "1"}


# --- audio --------------------------------------------------------------------------------------------------


def _sample_bytes(value: float, width: int) -> bytes:
    """One sample in WAV's encoding: unsigned for 8-bit, signed little-endian otherwise."""
    if width == 1:
        return bytes([round(value * 127) + 128])
    return round(value * ((1 << (8 * width - 1)) - 1)).to_bytes(width, "little", signed=True)


def _wav(channels_of: list[list[float]], *, width: int, rate: int) -> bytes:
    """A PCM WAV of the given per-channel samples (-1.0..1.0)."""
    data = b"".join(
        b"".join(_sample_bytes(channel[n], width) for channel in channels_of) for n in range(len(channels_of[0]))
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(len(channels_of))
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(data)
    return buffer.getvalue()


def _sine(rate: int, seconds: float, hz: float = 440.0, amplitude: float = 0.5) -> list[float]:
    return [amplitude * math.sin(2 * math.pi * hz * n / rate) for n in range(round(rate * seconds))]


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_becomes_8khz_mulaw_close_to_the_original(width: int, rate: int, channels: int) -> None:
    """Any width, rate and channel count gives 8 kHz μ-law of the right length, decoding near the source."""
    wav = _wav([_sine(rate, 0.5)] * channels, width=width, rate=rate)
    mulaw = wav_to_mulaw(wav)
    assert abs(len(mulaw) - 4000) <= 1
    decoded = array("h", audioop.ulaw2lin(mulaw, 2))
    expected = _sine(MULAW_SAMPLE_RATE, 0.5)
    errors = [decoded[n] / 32767 - expected[n] for n in range(8, min(len(decoded), len(expected)))]
    rms_error = math.sqrt(sum(e * e for e in errors) / len(errors))
    assert rms_error < 0.05 * 0.5, f"RMS error {rms_error:.4f} against amplitude 0.5"


def test_stereo_is_mixed_down_evenly() -> None:
    """Left at 0.5 and right silent mix to a mono signal at half the amplitude."""
    wav = _wav([_sine(8000, 0.1), [0.0] * 800], width=2, rate=8000)
    peak = max(abs(s) for s in array("h", audioop.ulaw2lin(wav_to_mulaw(wav), 2))) / 32767
    assert 0.23 < peak < 0.27


def test_extensible_pcm_header_is_read_like_plain_pcm() -> None:
    """WAVE_FORMAT_EXTENSIBLE with the PCM sub-format (as sox writes 24-bit) converts like plain PCM."""
    plain = _wav([_sine(16000, 0.1)], width=3, rate=16000)
    fmt = struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 48000, 3, 24)
    extension = struct.pack("<HHI", 22, 24, 4) + struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")
    data = plain[plain.index(b"data") :]
    body = b"WAVE" + b"fmt " + struct.pack("<I", 40) + fmt + extension + data
    assert wav_to_mulaw(b"RIFF" + struct.pack("<I", len(body)) + body) == wav_to_mulaw(plain)


def test_the_shipped_samples_convert() -> None:
    """service/samples/*.wav are 8 kHz 16-bit mono speech of a few seconds."""
    hello, agent = (wav_to_mulaw((SAMPLES / name).read_bytes()) for name in ("hello.wav", "agent.wav"))
    assert 4 * 8000 <= len(hello) <= 8 * 8000
    assert 1 * 8000 <= len(agent) < len(hello)


def _with_format_tag(wav: bytes, tag: int) -> bytes:
    return wav[:20] + struct.pack("<H", tag) + wav[22:]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"RIFF",
        b"ID3\x03\x00\x00\x00\x00\x00\x00 an mp3",
        _with_format_tag(_wav([[0.0] * 10], width=4, rate=8000), 3),  # IEEE float
        _with_format_tag(_wav([[0.0] * 10], width=1, rate=8000), 7),  # G.711 μ-law WAV
        _wav([[0.0] * 10] * 3, width=2, rate=8000),  # three channels
        _wav([[0.0] * 10], width=2, rate=8000).replace(struct.pack("<I", 8000), struct.pack("<I", 1), 1),
    ],
    ids=["empty", "truncated", "mp3", "float", "mulaw-wav", "3 channels", "1 Hz"],
)
def test_non_pcm_or_garbled_input_raises_audio_format_error(data: bytes) -> None:
    """Anything but an integer PCM WAV of one or two channels raises AudioFormatError."""
    with pytest.raises(AudioFormatError):
        wav_to_mulaw(data)


SMALL_WAV = _wav([_sine(16000, 0.01)] * 2, width=2, rate=16000)


@given(position=st.integers(0, len(SMALL_WAV) - 1), value=st.integers(0, 255), cut=st.integers(0, len(SMALL_WAV)))
def test_only_audio_format_error_escapes_on_corrupted_wavs(position: int, value: int, cut: int) -> None:
    """A WAV with any byte changed, cut short anywhere, converts or raises AudioFormatError; nothing else."""
    corrupted = (SMALL_WAV[:position] + bytes([value]) + SMALL_WAV[position + 1 :])[:cut]
    with contextlib.suppress(AudioFormatError):
        wav_to_mulaw(corrupted)


def test_frames_are_all_160_bytes_with_the_last_padded_with_silence() -> None:
    """170 bytes make two frames, the second holding 10 bytes then 150 of 0xFF; no audio makes none."""
    first, second = frames(b"\x01" * 170)
    assert first == b"\x01" * 160
    assert second == b"\x01" * 10 + b"\xff" * 150
    assert frames(b"") == []
    assert mulaw_silence(0.02) == b"\xff" * 160


# --- calls against a throwaway Quart app on Hypercorn -------------------------------------------------------


@dataclass
class FakeService:
    """What the throwaway app answers, and what it saw."""

    track: str = "both_tracks"
    stream: bool = True
    close_after: int | None = None  # close 1008 after this many messages
    forms: list[dict[str, str]] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each received message
    upgrades: int = 0

    def twiml(self) -> str:
        start = (
            f'<Start><Stream name="stt" track="{self.track}" url="{PUBLIC_WSS}">'
            '<Parameter name="token" value="abc" /></Stream></Start>'
        )
        prolog = '<?xml version="1.0" encoding="UTF-8"?>'
        return f'{prolog}<Response>{start if self.stream else ""}<Pause length="60" /></Response>'


def fake_app(fake: FakeService) -> Quart:
    """/voice checks the signature, answers fixed TwiML; /media checks the upgrade's, records, closes."""
    app = Quart("fake-callscribe")
    validator = RequestValidator(TOKEN)

    @app.post("/voice")
    async def voice() -> tuple[str, int, dict[str, str]]:
        form = dict((await request.form).items())
        fake.forms.append(form)
        if not validator.validate(request.url, form, request.headers.get("X-Twilio-Signature", "")):
            return "forbidden", 403, {}
        return fake.twiml(), 200, {"Content-Type": "text/xml"}

    @app.websocket("/media")
    async def media() -> tuple[str, int] | None:
        fake.upgrades += 1
        if not validator.validate(PUBLIC_WSS, {}, websocket.headers.get("x-twilio-signature", "")):
            return "forbidden", 403  # before accept(): the upgrade is refused
        await websocket.accept()
        while True:
            message = await websocket.receive()
            assert isinstance(message, str)
            fake.received.append(message)
            fake.arrivals.append(time.monotonic())
            if len(fake.received) == fake.close_after:
                await websocket.close(1008, "not today")
                return None
            if json.loads(message)["event"] == "stop":
                return None  # Quart closes 1000

    return app


@contextlib.asynccontextmanager
async def serving(app: Quart) -> AsyncIterator[str]:
    """`app` on Hypercorn at 127.0.0.1 on a port the OS picked; yields its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # connections queue from now on, so no wait for Hypercorn to start
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]  # Hypercorn owns (and closes) the socket from here
    config.accesslog = None
    config.graceful_timeout = 2
    stop = asyncio.Event()
    server = asyncio.ensure_future(serve(app, config, shutdown_trigger=stop.wait))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=10)


async def _call(fake: FakeService, spec: CallSpec, **kwargs: Any) -> CallResult:
    async with serving(fake_app(fake)) as url:
        return await simulate_call(url, spec, auth_token=kwargs.pop("auth_token", TOKEN), **kwargs)


async def test_a_call_streams_both_tracks_signed_as_twilio_does() -> None:
    """Signed webhook and upgrade (over the TwiML's wss URL); the app gets exactly build_messages' output."""
    fake = FakeService()
    spec = CallSpec(inbound=_audio(800, 1), outbound=_audio(500, 2), speed=0, extra_form={"CallerName": "Ada"})
    result = await _call(fake, spec)

    [form] = fake.forms
    assert form["CallSid"] == spec.call_sid == result.spec_call_sid
    assert (form["From"], form["To"], form["Direction"], form["CallStatus"]) == (
        spec.from_number,
        spec.to_number,
        "inbound",
        "ringing",
    )
    assert form["CallerName"] == "Ada"
    assert result.voice_status == 200
    assert (result.stream_url, result.track_setting, result.stream_params) == (
        PUBLIC_WSS,
        "both_tracks",
        {"token": "abc"},
    )
    assert result.stream_sid is not None
    assert result.stream_sid.startswith("MZ")
    assert len(result.stream_sid) == 34
    assert fake.received == build_messages(spec, result.stream_sid, ["inbound", "outbound"], {"token": "abc"})
    assert bytes(result.sent["inbound"]) == spec.inbound
    assert bytes(result.sent["outbound"]) == _audio(500, 2) + b"\xff" * 140
    assert result.frames_sent == {"inbound": 5, "outbound": 4}
    assert (result.close_code, result.closed_by, result.all_sent) == (1000, "server", True)
    assert failure_reason(result) is None


async def test_frames_are_paced_by_speed() -> None:
    """At speed 2, frame n goes out n * 10 ms after the first: 0.4 s of audio spans at least 190 ms."""
    fake = FakeService(track="inbound_track")
    result = await _call(fake, CallSpec(inbound=_audio(3200), speed=2))
    assert result.frames_sent == {"inbound": 20}
    first_media, last_media = fake.arrivals[2], fake.arrivals[-2]  # after connected, start; before stop
    assert last_media - first_media >= 0.19 - 0.005  # less only by clock granularity, never by skipped pacing
    assert fake.arrivals[-1] - first_media >= 0.2 - 0.005  # stop comes when the audio has been played


async def test_an_early_close_stops_the_sending_and_is_recorded() -> None:
    """The server closing 1008 after the first media message ends the call at once, as the server said."""
    fake = FakeService(track="inbound_track", close_after=3)
    started = time.monotonic()
    result = await _call(fake, CallSpec(inbound=_audio(8000 * 5), speed=1))
    assert time.monotonic() - started < 2
    assert (result.close_code, result.close_reason, result.closed_by) == (1008, "not today", "server")
    assert not result.all_sent
    assert result.frames_sent["inbound"] < 10
    assert failure_reason(result) == "the server closed the stream early: 1008 not today"


async def test_a_dropped_call_closes_without_stop() -> None:
    """send_stop=False: all media, no stop, and the simulator closes the socket normally."""
    fake = FakeService(track="inbound_track")
    result = await _call(fake, CallSpec(inbound=_audio(480), speed=0, send_stop=False))
    assert [json.loads(m)["event"] for m in fake.received] == [
        "connected",
        "start",
        "media",
        "media",
        "media",
    ]
    assert (result.close_code, result.closed_by, result.all_sent) == (1000, "simulator", True)


async def test_refusals_are_recorded_not_raised() -> None:
    """A 403 from /voice stops before any stream; a refused upgrade records its HTTP status."""
    fake = FakeService()
    refused_voice = await _call(fake, CallSpec(inbound=_audio(160), speed=0), auth_token="wrong-token")
    assert (refused_voice.voice_status, refused_voice.stream_url, refused_voice.sent) == (403, None, {})
    assert fake.upgrades == 0
    assert failure_reason(refused_voice) == "POST /voice answered HTTP 403"

    bad_upgrade = await _call(fake, CallSpec(inbound=_audio(160), speed=0), ws_headers={"X-Twilio-Signature": "x"})
    assert (bad_upgrade.voice_status, bad_upgrade.upgrade_status, bad_upgrade.closed_by) == (200, 403, None)
    assert fake.received == []


async def test_twiml_without_a_stream_opens_no_socket() -> None:
    """TwiML with no <Start><Stream> ends the simulated call after the webhook."""
    fake = FakeService(stream=False)
    result = await _call(fake, CallSpec(inbound=_audio(160), speed=0))
    assert (result.voice_status, result.stream_url, result.stream_sid, result.close_code) == (
        200,
        None,
        None,
        None,
    )
    assert fake.upgrades == 0


async def test_cli_places_a_call_with_the_sample_and_reports_it(capsys: pytest.CaptureFixture[str]) -> None:
    """`simulate hello.wav` exits 0 printing the call and frame counts; a bad token exits 1 saying 403."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    fake = FakeService(track="inbound_track")
    async with serving(fake_app(fake)) as url:
        argv = [str(SAMPLES / "hello.wav"), "--url", url, "--speed", "0"]
        ok = await asyncio.to_thread(run, parser.parse_args([*argv, "--auth-token", TOKEN]))
        out = capsys.readouterr().out
        refused = await asyncio.to_thread(run, parser.parse_args([*argv, "--auth-token", "wrong"]))
        err = capsys.readouterr().err
    assert ok == 0
    assert fake.forms[0]["CallSid"] in out
    assert "inbound: 253 frames" in out
    assert "by the server, code 1000" in out
    assert refused == 1
    assert "403" in err
