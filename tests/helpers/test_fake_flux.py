"""Tests of the fake Deepgram's Flux (`/v2/listen`): its turn sequence rules, pure and through the real SDK's
`listen.v2` client, its refusals and its faults (the v1 ones, and the stall)."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.listen.v2 import ListenV2Connected, ListenV2FatalError, ListenV2TurnInfo
from deepgram.listen.v2.socket_client import AsyncV2SocketClient
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosedError

from tests.helpers.fakes.deepgram_server import BadRequestError, FakeDeepgram, FluxOptions, FluxSession, expected_words
from tests.helpers.test_fake_deepgram import KEY, SILENCE, WINDOW, speech

FLUX = {"model": "flux-general-en", "encoding": "mulaw", "sample_rate": 8000}


@asynccontextmanager
async def flux(fake: FakeDeepgram, **options: Any) -> AsyncIterator[AsyncV2SocketClient]:
    client = AsyncDeepgramClient(api_key=KEY, environment=fake.environment())
    async with client.listen.v2.connect(**{**FLUX, **options}) as conn:
        yield conn


def turns_of(voiced: list[bool]) -> bytes:
    return b"".join(speech(WINDOW, str(i)) if v else SILENCE * WINDOW for i, v in enumerate(voiced))


def fed(session: FluxSession, audio: bytes, cuts: list[int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    at = 0
    for cut in [*sorted(c % (len(audio) + 1) for c in cuts), len(audio)]:
        out += session.feed(audio[at:cut]) if cut > at else []
        at = max(at, cut)
    return out + session.close_stream()


def check_sequence_rules(messages: list[dict[str, Any]]) -> None:
    """Flux's rules: TurnResumed only after EagerEndOfTurn; an EndOfTurn's transcript equals an unresumed
    EagerEndOfTurn's before it; turn_index grows by one after each EndOfTurn; sequence ids count every message."""
    eager: str | None = None
    index = 0
    for message in messages:
        event = message["event"]
        assert message["turn_index"] == index
        if event == "EagerEndOfTurn":
            eager = message["transcript"]
        elif event == "TurnResumed":
            assert eager is not None
            eager = None
        elif event == "EndOfTurn":
            assert eager is None or message["transcript"] == eager
            eager, index = None, index + 1
    assert [m["sequence_id"] for m in messages] == list(range(1, len(messages) + 1))


@settings(max_examples=60, deadline=None)
@given(
    voiced=st.lists(st.booleans(), max_size=12),
    tail=st.integers(0, WINDOW - 1),
    cuts=st.lists(st.integers(0, 60_000), max_size=6),
    eager=st.booleans(),
)
def test_turns_hold_every_word_once_and_keep_the_sequence_rules(
    voiced: list[bool], tail: int, cuts: list[int], eager: bool
) -> None:
    """For any speech, split and eagerness: the EndOfTurn words are expected_words, and Flux's rules hold."""
    audio = turns_of(voiced) + speech(tail, "tail")
    session = FluxSession(FluxOptions(eager_eot_threshold=0.5 if eager else None), request_id="r")
    assert session.connected()["sequence_id"] == 0
    messages = fed(session, audio, cuts)
    check_sequence_rules(messages)
    ends = [m for m in messages if m["event"] == "EndOfTurn"]
    assert [w["word"] for m in ends for w in m["words"]] == expected_words(audio)
    assert all(m["trigger"] == "model" for m in ends)
    assert session.bytes_heard == len(audio)
    if not eager:
        assert not [m for m in messages if m["event"] in {"EagerEndOfTurn", "TurnResumed"}]


def test_an_update_every_quarter_second_reports_only_decided_audio() -> None:
    """Updates come every 0.25 s with nothing else to say; their window ends at the last whole window."""
    session = FluxSession(FluxOptions(), request_id="r")
    messages = session.feed(SILENCE * 6000)
    assert [(m["event"], m["audio_window_end"], m["transcript"]) for m in messages] == [
        ("Update", 0.0, ""), ("Update", 0.5, ""), ("Update", 0.5, ""),
    ]  # fmt: skip


def test_a_silent_window_ends_the_turn_or_first_ends_it_eagerly() -> None:
    """Without eagerness a silent window is the EndOfTurn; with it, an EagerEndOfTurn, and the next its end."""
    audio = turns_of([True, False, False])
    plain = [m["event"] for m in FluxSession(FluxOptions(), request_id="r").feed(audio)]
    assert plain == ["Update", "StartOfTurn", "Update", "EndOfTurn", "Update", "Update"]
    eager = [m["event"] for m in FluxSession(FluxOptions(eager_eot_threshold=0.4), request_id="r").feed(audio)]
    assert eager == ["Update", "StartOfTurn", "Update", "EagerEndOfTurn", "Update", "EndOfTurn"]


def test_the_multilingual_model_says_languages_most_words_first() -> None:
    """flux-general-multi: each turn with words carries `languages`, by descending count; English has none."""
    audio = turns_of([True, True, True, False])
    multi = FluxSession(FluxOptions(model="flux-general-multi"), request_id="r").feed(audio)
    [end] = [m for m in multi if m["event"] == "EndOfTurn"]
    assert end["languages"]
    assert set(end["languages"]) <= {"en", "es"}
    english = FluxSession(FluxOptions(), request_id="r").feed(audio)
    assert not [m for m in english if "languages" in m]


@pytest.mark.parametrize(
    "query",
    [
        "model=flux-general-en&smart_format=true",
        "model=flux-general-en&diarize=true",
        "model=flux-general-en&interim_results=true",
        "model=nova-3",
        "model=flux-general-en&redact=pci",
        "model=flux-general-en&language_hint=es",
        "model=flux-general-en&eot_threshold=0.2",
        "model=flux-general-en&eot_threshold=x",
        "model=flux-general-en&eager_eot_threshold=0.95",
        "model=flux-general-en&eot_timeout_ms=100",
        "model=flux-general-en&encoding=mulaw",
    ],
)
def test_what_flux_refuses_is_http_400(query: str) -> None:
    """Unknown or v1-only options, other redaction, hints on English, out-of-range values: a 400 each."""
    with pytest.raises(BadRequestError):
        FluxOptions.from_query(urllib.parse.parse_qs(query))


async def test_through_the_sdk_connected_then_turns_then_close_1000() -> None:
    """Connected first, TurnInfo as the audio goes, and on CloseStream the last turn and a close 1000."""
    audio = turns_of([True, True, False, True])
    async with FakeDeepgram(api_key=KEY) as fake, flux(fake, redact="numbers", tag="t") as conn:
        await conn.send_media(audio)
        await conn.send_close_stream()
        messages = [message async for message in conn]
        record = fake.connections[0]
        await record.closed.wait()
    assert isinstance(messages[0], ListenV2Connected)
    assert messages[0].request_id == record.request_id
    turns = [m for m in messages if isinstance(m, ListenV2TurnInfo)]
    assert [t.event for t in turns if t.event != "Update"] == ["StartOfTurn", "EndOfTurn", "StartOfTurn", "EndOfTurn"]
    assert record.final_words() == expected_words(audio)
    assert record.close_code == 1000


async def test_keepalive_is_an_unparsable_message_and_closes() -> None:
    """Flux has no KeepAlive: the fake answers an Error and closes, as Flux does for any unknown client message."""
    async with FakeDeepgram(api_key=KEY) as fake, flux(fake) as conn:
        await conn._send(json.dumps({"type": "KeepAlive"}))
        with pytest.raises(ConnectionClosedError):
            async with asyncio.timeout(3):
                async for _ in conn:
                    pass
        record = fake.connections[0]
    assert record.messages("Error")[0]["code"] == "UNPARSABLE_CLIENT_MESSAGE"
    assert record.close_code == 1008


async def test_a_refused_option_through_the_sdk_is_api_error_400() -> None:
    """The SDK sees Flux's 400 as ApiError(400), before any socket opens."""
    async with FakeDeepgram(api_key=KEY) as fake:
        with pytest.raises(ApiError) as caught:
            async with flux(fake, request_options={"additional_query_parameters": {"punctuate": "true"}}):
                pass
    assert caught.value.status_code == 400


async def test_the_stall_sends_nothing_more_while_audio_flows() -> None:
    """stall_after_bytes: the socket stays open and takes audio, but no TurnInfo comes, and CloseStream is ignored."""
    async with FakeDeepgram(api_key=KEY) as fake:
        fake.faults.stall_after_bytes = 6000
        async with flux(fake) as conn:
            await conn.send_media(turns_of([True, True, True, True]))
            await conn.send_close_stream()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    async for _ in conn:
                        pass
            record = fake.connections[0]
            assert len(record.audio) == 4 * WINDOW
            assert max(t["audio_window_end"] for t in record.turn_events()) <= 6000 / 8000
            assert not record.closed.is_set()


async def test_a_fatal_error_fault_is_an_error_then_close() -> None:
    """flux_error: Flux's Error message right after Connected, then close 1011."""
    async with FakeDeepgram(api_key=KEY) as fake:
        fake.faults.flux_error = "INTERNAL_SERVER_ERROR"
        async with flux(fake) as conn:
            messages: list[Any] = []
            with pytest.raises(ConnectionClosedError):
                async for message in conn:
                    messages.append(message)
    assert isinstance(messages[-1], ListenV2FatalError)
    assert messages[-1].code == "INTERNAL_SERVER_ERROR"
