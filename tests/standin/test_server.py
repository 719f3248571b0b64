"""The stand-in on one port (`service/standin/server.py`): the real deepgram-sdk, pointed at it the way the service
points it (DEEPGRAM_URL), gets live v1, Flux v2, pre-recorded, text intelligence and the key check from the one
port, with readable words; the router's head parsing, pure."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import pytest
from deepgram import AsyncDeepgramClient
from deepgram.listen.v1 import ListenV1Results
from deepgram.listen.v2 import ListenV2TurnInfo

from service.deepgram import keys
from service.deepgram.environment import primary_address
from service.deepgram.keys import ask_about_key
from service.deepgram.prerecorded import PrerecordedClient
from service.deepgram.text import DeepgramText
from service.settings import Settings
from service.spool.wav import mulaw_wav
from service.standin.server import PLACEHOLDER_NOTE, STANDIN_HEADER, StandIn, is_websocket_upgrade, request_line
from service.standin.words import WORDS, hashed_word, readable_word
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.service import make_settings, running_service

WINDOW = 4000


def speech(windows: int, seed: str = "call") -> bytes:
    """Deterministic non-silent mu-law audio, `windows` half seconds of it."""
    blocks = (hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(windows * WINDOW // 32))
    return b"".join(blocks)


def settings_for(standin: StandIn, **overrides: Any) -> Settings:
    """The service's settings with DEEPGRAM_URL at the stand-in, and any key (it takes every one)."""
    return make_settings(None, deepgram_url=standin.url, deepgram_api_key="any-key-at-all", **overrides)


def sdk(settings: Settings) -> AsyncDeepgramClient:
    address = primary_address(settings)
    assert address.api_key is not None
    return AsyncDeepgramClient(api_key=address.api_key.get_secret_value(), environment=address.environment())


@pytest.mark.parametrize(
    ("head", "upgrade"),
    [
        (b"GET /v1/listen?model=nova-3 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", True),
        (b"GET /v2/listen HTTP/1.1\r\nupgrade:   WebSocket  \r\n\r\n", True),
        (b"POST /v1/listen HTTP/1.1\r\nContent-Length: 3\r\n\r\n", False),
        (b"GET /v1/projects HTTP/1.1\r\nX-Upgrade: websocket\r\n\r\n", False),
        (b"GET /upgrade:websocket HTTP/1.1\r\n\r\n", False),  # the request line is no header
        (b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n", False),
    ],
)
def test_a_request_head_is_routed_by_its_upgrade_header(head: bytes, upgrade: bool) -> None:
    """Only an `Upgrade: websocket` header (any case, any spacing) goes to the live server."""
    assert is_websocket_upgrade(head) is upgrade


@pytest.mark.parametrize(
    ("head", "line"),
    [
        (b"POST /v1/listen?model=nova-3&utterances=true HTTP/1.1\r\n\r\n", "POST /v1/listen"),
        (b"GET /v1/projects HTTP/1.1\r\n\r\n", "GET /v1/projects"),
        (b"GARBAGE\r\n\r\n", "GARBAGE "),
    ],
)
def test_the_logged_request_line_leaves_the_query_out(head: bytes, line: str) -> None:
    assert request_line(head) == line


async def test_live_v1_through_the_one_port_hears_readable_words() -> None:
    """The SDK's live v1 socket at DEEPGRAM_URL's host: finals whose words are the readable ones for the audio."""
    audio = speech(6)
    async with StandIn() as standin:
        async with sdk(settings_for(standin)).listen.v1.connect(
            model="nova-3", encoding="mulaw", sample_rate=8000
        ) as conn:
            await conn.send_media(audio)
            await conn.send_close_stream()
            async with asyncio.timeout(5):
                messages = [message async for message in conn]
        assert list(standin.requests) == ["GET /v1/listen"]
    words = [
        w.word
        for m in messages
        if isinstance(m, ListenV1Results) and m.is_final
        for w in m.channel.alternatives[0].words
    ]
    assert words == expected_words(audio, words=readable_word)
    assert all(word in WORDS for word in words)
    assert words != expected_words(audio), "not the tests' hashed words"


async def test_flux_v2_through_the_one_port() -> None:
    """Flux's `/v2/listen` upgrade is routed to the live server too: its turns carry the readable words."""
    audio = speech(3) + b"\xff" * WINDOW * 4
    async with (
        StandIn() as standin,
        sdk(settings_for(standin)).listen.v2.connect(
            model="flux-general-en", encoding="mulaw", sample_rate=8000
        ) as conn,
    ):
        await conn.send_media(audio)
        await conn.send_close_stream()
        async with asyncio.timeout(5):
            messages = [message async for message in conn]
    ends = [m for m in messages if isinstance(m, ListenV2TurnInfo) and m.event == "EndOfTurn"]
    assert [w.word for end in ends for w in end.words] == expected_words(audio, words=readable_word)


async def test_prerecorded_text_intelligence_and_the_key_check_through_the_one_port() -> None:
    """The REST side at the same port: a WAV's transcript in readable words, a summary, and the key check's
    project named as the stand-in, every answer carrying the header `demo` looks for."""
    audio = speech(4) + b"\xff" * WINDOW + speech(2, "other")
    async with StandIn() as standin:
        settings = settings_for(standin)
        answer = await PrerecordedClient(settings).transcribe(mulaw_wav(audio))
        analysis = await DeepgramText(settings).analyze("I would like to cancel my account", ("summary",))
        key = await asyncio.to_thread(ask_about_key, standin.url, "any-key-at-all")
        async with httpx.AsyncClient() as client:
            projects = await client.get(f"{standin.url}/v1/projects", headers={"Authorization": "Token k"})
            unauthorised = await client.get(f"{standin.url}/v1/projects")
        routed = list(standin.requests)
    heard = [word.word for utterance in answer.utterances for word in utterance.words]
    assert heard == expected_words(audio, words=readable_word)
    assert analysis.summary
    assert key.accepted
    assert projects.json()["projects"][0]["name"] == "callscribe stand-in"
    assert projects.headers[STANDIN_HEADER] == PLACEHOLDER_NOTE
    assert unauthorised.status_code == 401, "a key is still asked for, as Deepgram asks"
    assert unauthorised.headers[STANDIN_HEADER] == PLACEHOLDER_NOTE
    assert routed == ["POST /v1/listen", "POST /v1/read", "GET /v1/projects", "GET /v1/projects", "GET /v1/projects"]


async def test_hashed_words_on_request_and_a_busy_port_refused() -> None:
    """`words=hashed_word` serves the tests' words; a second stand-in on the same port fails to start (OSError)
    and leaves nothing listening of its own."""
    audio = speech(2)
    async with StandIn(words=hashed_word) as standin:
        answer = await PrerecordedClient(settings_for(standin)).transcribe(mulaw_wav(audio))
        with pytest.raises(OSError, match="address already in use"):
            async with StandIn(port=standin.port):
                pass
    assert [w.word for u in answer.utterances for w in u.words] == expected_words(audio)


async def test_a_client_that_goes_mid_head_and_an_oversized_head() -> None:
    """A connection closed before its head ends is dropped quietly; a head over 64 KiB gets 431; the stand-in
    still answers after both."""
    async with StandIn() as standin:
        reader, writer = await asyncio.open_connection("127.0.0.1", standin.port)
        writer.write(b"GET /v1/projects HTTP/1.1\r\n")
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", standin.port)
        writer.write(b"GET /v1/projects HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        async with httpx.AsyncClient() as client:
            after = await client.get(f"{standin.url}/v1/projects", headers={"Authorization": "Token k"})
    assert status.startswith(b"HTTP/1.1 431")
    assert after.status_code == 200


async def test_the_service_tells_the_stand_in_from_deepgram() -> None:
    """`deepgram/keys.py` asks DEEPGRAM_URL with no key: the stand-in's header (the one it sends, named alike on
    both sides) says what its transcripts are; any other answer, or none, is Deepgram's."""
    assert keys.STANDIN_HEADER == STANDIN_HEADER
    async with StandIn() as standin:
        assert await keys.standin_note(standin.url) == PLACEHOLDER_NOTE
    async with FakeDeepgram(api_key="k") as live_only:  # a Deepgram that is no stand-in (it answers HTTP 426)
        assert await keys.standin_note(live_only.url.replace("ws://", "http://")) is None
    assert await keys.standin_note("http://127.0.0.1:9", timeout_s=0.5) is None  # nothing listening


async def test_every_page_says_when_its_transcripts_are_the_stand_ins() -> None:
    """With DEEPGRAM_URL at the stand-in, the page (its login included) carries the banner, and the log one line;
    at a Deepgram that is no stand-in, neither."""
    async with StandIn() as standin:
        settings = settings_for(standin, dashboard_password="page-passw0rd")
        async with running_service(settings) as service, httpx.AsyncClient() as client:
            page = (await client.get(f"{service.url}/login")).text
    assert 'id="standin"' in page
    assert PLACEHOLDER_NOTE in page
    async with FakeDeepgram(api_key="k") as deepgram:
        settings = make_settings(deepgram, dashboard_password="page-passw0rd")
        async with running_service(settings) as service, httpx.AsyncClient() as client:
            page = (await client.get(f"{service.url}/login")).text
    assert 'id="standin"' not in page
