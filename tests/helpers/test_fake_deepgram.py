"""Tests of the fake Deepgram server, driven through the real `deepgram-sdk` async client over a real socket.

Each test shows one behaviour or fault of `tests/helpers/fakes/deepgram_server.py` as the SDK (or, for the handshake
faults the SDK cannot time out quickly, a plain websockets client) observes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from deepgram.listen.v1 import (
    ListenV1Configure,
    ListenV1Error,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from deepgram.listen.v1.socket_client import AsyncV1SocketClient
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from tests.helpers.connections import interleaved
from tests.helpers.fakes.deepgram_server import (
    FakeDeepgram,
    Faults,
    ListenOptions,
    MultichannelSession,
    TranscriptionSession,
    expected_words,
    is_silence,
    said,
    word_for,
)

KEY = "test-key"
WINDOW = 4000  # the fake's default window: 0.5 s of 8 kHz mu-law
SILENCE = b"\xff"
MULAW = {"model": "nova-3", "encoding": "mulaw", "sample_rate": 8000, "channels": 1}


def speech(n_bytes: int, seed: str = "call") -> bytes:
    """Deterministic non-silent audio bytes."""
    blocks = (hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(n_bytes // 32 + 1))
    return b"".join(blocks)[:n_bytes]


def frames(audio: bytes, size: int) -> list[bytes]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


@asynccontextmanager
async def listen(fake: FakeDeepgram, api_key: str = KEY, **options: Any) -> AsyncIterator[AsyncV1SocketClient]:
    client = AsyncDeepgramClient(api_key=api_key, environment=fake.environment())
    async with client.listen.v1.connect(**{**MULAW, **options}) as conn:
        yield conn


async def send_all(conn: AsyncV1SocketClient, chunks: Sequence[bytes]) -> None:
    for chunk in chunks:
        await conn.send_media(chunk)


async def read_to_end(conn: AsyncV1SocketClient, into: list[Any] | None = None) -> list[Any]:
    """Every message until the socket ends quietly (close 1000/1001); unknown types are kept as None."""
    seen = into if into is not None else []
    async with asyncio.timeout(3):
        async for message in conn:
            seen.append(message)
    return seen


async def recv_until(conn: AsyncV1SocketClient, predicate: Any) -> list[Any]:
    """Messages up to and including the first that satisfies `predicate`."""
    seen: list[Any] = []
    async with asyncio.timeout(3):
        while not seen or not predicate(seen[-1]):
            seen.append(await conn.recv())
    return seen


async def keep_alive(conn: AsyncV1SocketClient, times: int, every_s: float = 0.1) -> None:
    for _ in range(times):
        await asyncio.sleep(every_s)  # paced as a client's KeepAlive timer sends them
        await conn.send_keep_alive()


def is_final(message: Any) -> bool:
    return isinstance(message, ListenV1Results) and bool(message.is_final)


def words_of(messages: Sequence[Any]) -> list[str]:
    return [w.word for m in messages if is_final(m) for w in m.channel.alternatives[0].words]


# ----------------------------------------------------------------------------------------------------------
# Pure parts
# ----------------------------------------------------------------------------------------------------------


def test_word_for_is_a_short_hash_of_the_window() -> None:
    """A window's word is "w" plus the first 8 hex digits of its SHA-256."""
    window = speech(WINDOW)
    assert word_for(window) == "w" + hashlib.sha256(window).hexdigest()[:8]
    assert is_silence(SILENCE * 10 + b"\x7f" * 10)
    assert not is_silence(window)


def test_expected_words_skip_silence_and_count_the_partial_window() -> None:
    """expected_words has one word per voiced window, the trailing partial window included."""
    audio = speech(WINDOW, "a") + SILENCE * WINDOW + speech(1000, "b")
    assert expected_words(audio) == [word_for(speech(WINDOW, "a")), word_for(speech(1000, "b"))]


def fed_in_pieces(session: TranscriptionSession | MultichannelSession, audio: bytes, cuts: list[int]) -> list[Any]:
    """Everything the session sends for `audio` fed in pieces of `cuts` bytes (the rest in one), then CloseStream."""
    sent: list[dict[str, Any]] = []
    offset = 0
    for cut in [*cuts, len(audio)]:
        sent += session.feed(audio[offset : offset + cut])
        offset += cut
    return sent + session.close_stream()


@settings(max_examples=60, deadline=None)
@given(
    voiced=st.lists(st.booleans(), min_size=1, max_size=12),
    tail=st.integers(0, WINDOW - 1),
    cuts=st.lists(st.integers(1, 9000), max_size=30),
)
def test_session_finals_equal_expected_words_for_any_split(voiced: list[bool], tail: int, cuts: list[int]) -> None:
    """However the audio is split into frames, the finals after CloseStream hold exactly expected_words."""
    audio = b"".join(speech(WINDOW, str(i)) if v else SILENCE * WINDOW for i, v in enumerate(voiced))
    audio += speech(tail, "tail")
    session = TranscriptionSession(ListenOptions(interim_results=True), request_id="r", words_per_final=3)
    sent = fed_in_pieces(session, audio, cuts)
    finals = [m for m in sent if m["type"] == "Results" and m["is_final"]]
    assert [w["word"] for m in finals for w in m["channel"]["alternatives"][0]["words"]] == expected_words(audio)
    assert sent[-1]["type"] == "Metadata"


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, 3001), max_size=20))
def test_multichannel_session_transcribes_each_channel_on_its_own(cuts: list[int]) -> None:
    """multichannel=true: however the interleaved audio is framed (odd cuts too), each channel's finals hold
    that channel's words and say so in channel_index [c, 2]."""
    first = speech(WINDOW, "a") + SILENCE * WINDOW + speech(700, "b")
    second = SILENCE * WINDOW + speech(WINDOW + 700, "c")
    audio = interleaved(first, second)
    options = ListenOptions(channels=2, multichannel=True, encoding="mulaw", sample_rate=8000)
    sent = fed_in_pieces(MultichannelSession(options, request_id="r"), audio, cuts)
    finals = [m for m in sent if m["type"] == "Results" and m["is_final"]]
    for channel, track in enumerate((first, second)):
        mine = [m for m in finals if m["channel_index"] == [channel, 2]]
        assert [w["word"] for m in mine for w in m["channel"]["alternatives"][0]["words"]] == expected_words(track)
    assert {tuple(m["channel_index"]) for m in finals} == {(0, 2), (1, 2)}
    (metadata,) = [m for m in sent if m["type"] == "Metadata"]
    assert (metadata["duration"], metadata["channels"]) == (len(first) / 8000, 2)
    assert metadata["sha256"] == hashlib.sha256(audio).hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Recording
# ----------------------------------------------------------------------------------------------------------


async def test_options_and_headers_are_recorded() -> None:
    """The fake records the parsed query (bools as true/false, lists as repeats) and the auth header."""
    async with FakeDeepgram() as fake:
        async with listen(fake, interim_results=True, smart_format=False, keyterm=["Acme", "refund"]) as conn:
            await conn.send_close_stream()
            await read_to_end(conn)
        (rec,) = fake.connections
    assert rec.option("model") == "nova-3"
    assert rec.option("encoding") == "mulaw"
    assert rec.option("sample_rate") == "8000"
    assert rec.option("interim_results") == "true"
    assert rec.option("smart_format") == "false"
    assert rec.query["keyterm"] == ["Acme", "refund"]
    assert rec.option("vad_events") is None
    assert rec.headers["authorization"] == "Token test-key"
    assert uuid.UUID(rec.request_id).version == 4
    assert fake.upgrade_attempts == 1


async def test_audio_is_recorded_byte_exact_in_order() -> None:
    """Binary frames are recorded one by one and concatenated in arrival order."""
    chunks = [speech(160, "a"), speech(1, "b"), speech(7000, "c"), SILENCE * 800, speech(333, "d")]
    async with FakeDeepgram() as fake:
        async with listen(fake) as conn:
            await send_all(conn, chunks)
            await conn.send_keep_alive()
            await conn.send_close_stream()
            await read_to_end(conn)
        rec = fake.connections[0]
    assert rec.audio_frames == chunks
    assert rec.audio == b"".join(chunks)
    assert rec.control == [{"type": "KeepAlive"}, {"type": "CloseStream"}]


# ----------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------


async def test_interim_results_then_a_final_with_byte_count_timing() -> None:
    """Each window gives an interim of the unfinalized words; every words_per_final windows give a final."""
    audio = speech(2 * WINDOW)
    async with FakeDeepgram(words_per_final=2) as fake, listen(fake, interim_results=True) as conn:
        await send_all(conn, frames(audio, 160))
        first, second, final = await recv_until(conn, is_final)
        rec = fake.connections[0]
    w1, w2 = word_for(audio[:WINDOW]), word_for(audio[WINDOW:])
    assert (first.is_final, first.speech_final, first.start, first.duration) == (False, False, 0.0, 0.5)
    assert first.channel.alternatives[0].transcript == w1
    assert (second.start, second.duration, second.channel.alternatives[0].transcript) == (
        0.0,
        1.0,
        f"{w1} {w2}",
    )
    assert (final.is_final, final.speech_final, final.from_finalize) == (True, True, False)
    assert (final.start, final.duration, final.channel_index) == (0.0, 1.0, [0, 1])
    words = final.channel.alternatives[0].words
    assert [(w.word, w.start, w.end, w.confidence, w.punctuated_word) for w in words] == [
        (w1, 0.0, 0.5, 0.99, w1),
        (w2, 0.5, 1.0, 0.99, w2),
    ]
    assert final.metadata.request_id == rec.request_id
    assert final.metadata.model_info.arch == "nova-3"
    assert rec.sent[2]["type"] == "Results"
    assert rec.sent[2]["is_final"] is True


async def test_no_interims_unless_asked() -> None:
    """Without interim_results only finals are sent."""
    async with FakeDeepgram(words_per_final=1) as fake, listen(fake) as conn:
        await send_all(conn, frames(speech(2 * WINDOW), 800))
        await conn.send_close_stream()
        messages = await read_to_end(conn)
    results = [m for m in messages if isinstance(m, ListenV1Results)]
    assert [m.is_final for m in results] == [True, True]
    assert [m.start for m in results] == [0.0, 0.5]


@pytest.mark.parametrize("frame_size", [1, 160, 999, 4000, 20_000])
async def test_finals_hold_expected_words_for_any_frame_size(frame_size: int) -> None:
    """After CloseStream the SDK has seen every expected word exactly once, in order, for any framing."""
    audio = speech(2 * WINDOW, "x") + SILENCE * WINDOW + speech(5500, "y")
    async with FakeDeepgram() as fake:
        async with listen(fake, interim_results=True) as conn:
            await send_all(conn, frames(audio, frame_size))
            await conn.send_close_stream()
            messages = await read_to_end(conn)
        rec = fake.connections[0]
    assert words_of(messages) == expected_words(audio)
    assert rec.final_words() == expected_words(audio)
    assert len(expected_words(audio)) == 4  # 3 voiced windows and the partial one; the silent one is dropped


async def test_multichannel_results_name_their_channel_through_the_sdk() -> None:
    """Over the real SDK, multichannel=true&channels=2 gets each channel's words with its channel_index."""
    first, second = speech(2 * WINDOW, "in"), speech(WINDOW, "out") + SILENCE * WINDOW
    async with FakeDeepgram() as fake:
        async with listen(fake, channels=2, multichannel=True) as conn:
            await send_all(conn, frames(interleaved(first, second), 320))
            await conn.send_close_stream()
            messages = await read_to_end(conn)
        rec = fake.connections[0]
    finals = [m for m in messages if is_final(m)]
    for channel, track in enumerate((first, second)):
        assert words_of([m for m in finals if m.channel_index == [channel, 2]]) == expected_words(track)
        assert rec.final_words(channel) == expected_words(track)
    assert messages[-1].duration == 2 * WINDOW / 8000


async def test_finalize_flushes_the_partial_window() -> None:
    """Finalize returns pending words and the partial window as a final marked from_finalize."""
    audio = speech(WINDOW + 1000)
    async with FakeDeepgram() as fake, listen(fake) as conn:
        await send_all(conn, frames(audio, 500))
        await conn.send_finalize()
        (flushed,) = await recv_until(conn, is_final)
        await conn.send_finalize()
        (empty,) = await recv_until(conn, is_final)
        await conn.send_close_stream()
        rest = await read_to_end(conn)
    assert (flushed.is_final, flushed.from_finalize, flushed.speech_final) == (True, True, False)
    assert [w.word for w in flushed.channel.alternatives[0].words] == [
        word_for(audio[:WINDOW]),
        word_for(audio[WINDOW:]),
    ]
    assert (flushed.start, flushed.duration) == (0.0, (WINDOW + 1000) / 8000)
    assert (empty.from_finalize, empty.channel.alternatives[0].transcript, empty.start) == (True, "", 0.625)
    assert [type(m) for m in rest] == [ListenV1Metadata]  # nothing pending, so no final before Metadata


async def test_close_stream_sends_metadata_then_closes_1000() -> None:
    """CloseStream flushes a final, then Metadata, then a clean close the SDK ends on quietly."""
    audio = speech(3 * WINDOW + 10)
    async with FakeDeepgram() as fake:
        async with listen(fake) as conn:
            await send_all(conn, frames(audio, 800))
            await conn.send_close_stream()
            messages = await read_to_end(conn)
        rec = fake.connections[0]
        await asyncio.wait_for(rec.closed.wait(), 1)
    final, metadata = messages
    assert (final.is_final, final.speech_final, final.from_finalize) == (True, True, False)
    assert isinstance(metadata, ListenV1Metadata)
    assert metadata.request_id == rec.request_id
    assert metadata.sha256 == hashlib.sha256(audio).hexdigest()
    assert metadata.duration == len(audio) / 8000
    assert (metadata.channels, metadata.transaction_key) == (1, "deprecated")
    assert metadata.created.endswith("Z")
    assert rec.close_code == 1000


async def test_empty_binary_frame_closes_like_close_stream() -> None:
    """An empty binary frame (Deepgram's deprecated close signal) flushes, sends Metadata and closes 1000."""
    async with FakeDeepgram() as fake:
        async with listen(fake) as conn:
            await conn.send_media(speech(1000))
            await conn.send_media(b"")
            messages = await read_to_end(conn)
        rec = fake.connections[0]
    assert [type(m) for m in messages] == [ListenV1Results, ListenV1Metadata]
    assert rec.audio_frames[-1] == b""
    assert rec.close_code == 1000


async def test_vad_and_utterance_end_events() -> None:
    """vad_events gives SpeechStarted at a segment's first voiced window; utterance_end_ms an UtteranceEnd."""
    audio = SILENCE * WINDOW + speech(WINDOW)
    options: dict[str, Any] = {"vad_events": True, "utterance_end_ms": 1000, "interim_results": True}
    async with FakeDeepgram(words_per_final=2) as fake, listen(fake, **options) as conn:
        await send_all(conn, frames(audio, 800))
        messages = await recv_until(conn, lambda m: isinstance(m, ListenV1UtteranceEnd))
    kinds = [type(m) for m in messages]
    interim, started, final, end = (
        ListenV1Results,
        ListenV1SpeechStarted,
        ListenV1Results,
        ListenV1UtteranceEnd,
    )
    assert kinds == [interim, started, interim, final, end]
    started, end = messages[1], messages[-1]
    assert isinstance(started, ListenV1SpeechStarted)
    assert (started.timestamp, started.channel) == (0.5, [0])
    assert (end.last_word_end, end.channel) == (1.0, [0, 1])
    assert messages[0].channel.alternatives[0].words == []  # the silent window's interim


async def test_concurrent_connections_do_not_cross_talk() -> None:
    """Two simultaneous streams each get the words of their own audio and their own request id."""
    a, b = speech(2 * WINDOW, "a"), speech(2 * WINDOW, "b")
    async with FakeDeepgram() as fake:
        async with listen(fake) as one, listen(fake) as two:
            await asyncio.gather(send_all(one, frames(a, 160)), send_all(two, frames(b, 160)))
            await asyncio.gather(one.send_close_stream(), two.send_close_stream())
            got_a, got_b = await asyncio.gather(read_to_end(one), read_to_end(two))
        await fake.wait_for_connections(2)
    assert words_of(got_a) == expected_words(a)
    assert words_of(got_b) == expected_words(b)
    assert fake.connections[0].request_id != fake.connections[1].request_id


# ----------------------------------------------------------------------------------------------------------
# Handshake answers and faults
# ----------------------------------------------------------------------------------------------------------


async def test_wrong_key_is_rejected_with_401() -> None:
    """A wrong API key gets HTTP 401 with a dg-request-id header; the SDK raises ApiError(401)."""
    async with FakeDeepgram() as fake:
        with pytest.raises(ApiError) as info:
            async with listen(fake, api_key="wrong-key"):
                pass
        assert fake.connections == []
        assert fake.upgrade_attempts == 1
    assert info.value.status_code == 401
    assert "dg-request-id" in info.value.__context__.headers  # type: ignore[union-attr]


async def test_bearer_scheme_is_accepted_case_insensitively() -> None:
    """`bearer <key>` authenticates like `Token <key>`."""
    async with FakeDeepgram() as fake:
        async with listen(fake, authorization=f"bearer {KEY}") as conn:
            await conn.send_close_stream()
            await read_to_end(conn)
        assert fake.connections[0].headers["authorization"] == f"bearer {KEY}"


async def test_encoding_without_sample_rate_is_rejected_with_400() -> None:
    """encoding without sample_rate gets HTTP 400, as from Deepgram."""
    async with FakeDeepgram() as fake:
        client = AsyncDeepgramClient(api_key=KEY, environment=fake.environment())
        with pytest.raises(ApiError) as info:
            async with client.listen.v1.connect(model="nova-3", encoding="mulaw"):
                pass
    assert info.value.status_code == 400


async def test_other_paths_get_404() -> None:
    """Only /v1/listen is served; a path prefix (as the SDK would add) or another path gets 404."""
    async with FakeDeepgram() as fake:
        with pytest.raises(InvalidStatus) as raw:
            async with ws_connect(f"{fake.ws_url}/v1/speak", open_timeout=2):
                pass
        prefixed = f"{fake.ws_url}/proxy"
        env = DeepgramClientEnvironment(base=fake.url, production=prefixed, agent=prefixed, agent_rest=fake.url)
        client = AsyncDeepgramClient(api_key=KEY, environment=env)
        with pytest.raises(ApiError) as sdk:
            async with client.listen.v1.connect(model="nova-3"):
                pass
        assert fake.upgrade_attempts == 2
    assert raw.value.response.status_code == 404
    assert sdk.value.status_code == 404


async def test_reject_status_for_the_first_n_upgrades_then_accept() -> None:
    """reject_status=503 with reject_count=2 fails two upgrades, then accepts the third."""
    async with FakeDeepgram(faults=Faults(reject_status=503, reject_count=2)) as fake:
        for _ in range(2):
            with pytest.raises(ApiError) as info:
                async with listen(fake):
                    pass
            assert info.value.status_code == 503
        async with listen(fake) as conn:
            await conn.send_close_stream()
            await read_to_end(conn)
        assert fake.upgrade_attempts == 3
        assert len(fake.connections) == 1


async def test_close_after_bytes_closes_1011_net_0000() -> None:
    """close_after_bytes sends the results already due, then closes 1011 NET-0000."""
    faults = Faults(close_after_bytes=6000)
    audio = speech(2 * WINDOW)
    async with FakeDeepgram(words_per_final=1, faults=faults) as fake:
        async with listen(fake) as conn:
            with contextlib.suppress(ConnectionClosed):  # sends may fail once the fake has closed
                await send_all(conn, frames(audio, 1000))
            seen: list[Any] = []
            with pytest.raises(ConnectionClosedError) as info:
                await read_to_end(conn, into=seen)
        rec = fake.connections[0]
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1011, "NET-0000")
    assert words_of(seen) == [word_for(audio[:WINDOW])]  # the 2nd window was never complete
    assert (rec.close_code, rec.close_reason) == (1011, "NET-0000")


async def test_drop_after_bytes_aborts_tcp_without_close_frame() -> None:
    """drop_after_bytes aborts the transport: the SDK sees 1006 with no close frame received."""
    async with FakeDeepgram(faults=Faults(drop_after_bytes=3000)) as fake:
        async with listen(fake) as conn:
            with contextlib.suppress(ConnectionClosed):
                await send_all(conn, frames(speech(WINDOW), 1000))
            with pytest.raises(ConnectionClosedError) as info:
                await read_to_end(conn)
        rec = fake.connections[0]
        await asyncio.wait_for(rec.closed.wait(), 1)
    assert info.value.rcvd is None
    assert "no close frame received" in str(info.value)  # what websockets reports for 1006
    assert rec.close_code is None


async def test_hang_handshake_never_answers_and_stop_does_not_hang() -> None:
    """hang_handshake accepts TCP but never answers the upgrade; stopping the fake still returns promptly."""
    fake = FakeDeepgram(faults=Faults(hang_handshake=True))
    async with fake:
        with pytest.raises(TimeoutError):
            async with ws_connect(f"{fake.ws_url}/v1/listen?model=nova-3", open_timeout=0.3):
                pass
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)  # TCP that never says a word
        assert fake.upgrade_attempts == 1
        assert fake.connections == []
        started = asyncio.get_running_loop().time()
    assert asyncio.get_running_loop().time() - started < 2
    assert await asyncio.wait_for(reader.read(), 1) == b""  # the fake dropped the idle TCP connection
    writer.close()
    await writer.wait_closed()


async def test_silent_fault_never_answers_or_closes() -> None:
    """silent keeps the socket open, sends nothing and ignores CloseStream."""
    async with FakeDeepgram(words_per_final=1, faults=Faults(silent=True)) as fake:
        async with listen(fake, interim_results=True) as conn:
            await send_all(conn, frames(speech(2 * WINDOW), 800))
            await conn.send_close_stream()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(conn.recv(), 0.3)
            rec = fake.connections[0]
            assert not rec.closed.is_set()
        await asyncio.wait_for(rec.closed.wait(), 1)
    assert rec.sent == []
    assert rec.control == [{"type": "CloseStream"}]
    assert (rec.client_close_code, rec.close_code) == (1000, 1000)  # the SDK left; the fake only echoed


async def test_idle_timeout_before_audio_ignores_keepalive() -> None:
    """Before any audio only audio counts: KeepAlives do not stop a 1011 NET-0001 close."""
    async with FakeDeepgram(faults=Faults(idle_timeout_s=0.3)) as fake, listen(fake) as conn:
        with pytest.raises(ConnectionClosed):  # the fake closes while KeepAlives are still flowing
            await keep_alive(conn, times=20)
        with pytest.raises(ConnectionClosedError) as info:
            await read_to_end(conn)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1011, "NET-0001")


async def test_idle_timeout_after_audio_is_reset_by_keepalive() -> None:
    """After audio, KeepAlives keep the socket open; silence from the client then closes it 1011 NET-0001."""
    async with FakeDeepgram(faults=Faults(idle_timeout_s=0.5)) as fake, listen(fake) as conn:
        await conn.send_media(speech(800))
        await keep_alive(conn, times=8)  # 0.8 s of KeepAlive, well past the 0.5 s idle limit
        rec = fake.connections[0]
        assert not rec.closed.is_set()
        with pytest.raises(ConnectionClosedError) as info:
            await read_to_end(conn)
    assert info.value.rcvd is not None
    assert info.value.rcvd.reason == "NET-0001"
    assert rec.close_code == 1011


async def test_send_garbage_is_skipped_or_none_in_the_sdk() -> None:
    """send_garbage adds a malformed frame (the SDK skips it) and an unknown type (the SDK yields None)."""
    async with FakeDeepgram(faults=Faults(send_garbage=True)) as fake:
        async with listen(fake) as conn:
            await conn.send_media(speech(100))
            await conn.send_close_stream()
            messages = await read_to_end(conn)
        rec = fake.connections[0]
    assert [type(m) for m in messages] == [type(None), ListenV1Results, ListenV1Metadata]
    assert rec.sent[0]["type"] == "Mystery"


async def test_unknown_client_messages_get_schema_error_and_the_socket_stays_open() -> None:
    """Malformed or unknown client text gets an Error SchemaError; the stream carries on."""
    async with FakeDeepgram() as fake:
        async with listen(fake) as conn:
            await conn.send_configure(ListenV1Configure(type="Configure", keyterms=["Acme"]))
            (error,) = await recv_until(conn, lambda m: isinstance(m, ListenV1Error))
            await conn.send_close_stream()
            assert [type(m) for m in await read_to_end(conn)] == [ListenV1Metadata]
        url = f"{fake.ws_url}/v1/listen?model=nova-3"
        async with ws_connect(url, additional_headers={"Authorization": f"Token {KEY}"}) as raw:
            for text in ["{not json", "[1, 2]", '{"type": "Nope"}']:
                await raw.send(text)
                reply = json.loads(await raw.recv())
                assert (reply["type"], reply["variant"], reply["message"]) == ("Error", "SchemaError", text)
            await raw.send('{"type": "CloseStream"}')
            assert json.loads(await raw.recv())["type"] == "Metadata"
        raw_rec = fake.connections[1]
    assert error.variant == "SchemaError"
    assert raw_rec.rejected_text == ["{not json", "[1, 2]"]
    assert raw_rec.control == [{"type": "Nope"}, {"type": "CloseStream"}]
    assert raw_rec.close_code == 1000


async def test_faults_can_change_between_connections() -> None:
    """Faults are read live: a fault set after one stream applies to the next."""
    async with FakeDeepgram() as fake:
        async with listen(fake) as conn:
            await conn.send_close_stream()
            await read_to_end(conn)
        fake.faults.reject_status = 403
        with pytest.raises(ApiError) as info:
            async with listen(fake):
                pass
    assert info.value.status_code == 403


async def test_stop_closes_open_connections_with_1001() -> None:
    """Leaving the fake's context closes open streams with 1001, which the SDK treats as a quiet end."""
    fake = FakeDeepgram()
    async with fake:
        client = AsyncDeepgramClient(api_key=KEY, environment=fake.environment())
        async with client.listen.v1.connect(**MULAW) as conn:
            await fake.wait_for_connections(1)
            await fake.stop()
            assert await read_to_end(conn) == []
    assert fake.connections[0].close_code == 1001


async def test_wait_for_connections_times_out() -> None:
    """wait_for_connections raises TimeoutError when too few connections arrive."""
    async with FakeDeepgram() as fake:
        with pytest.raises(TimeoutError):
            await fake.wait_for_connections(1, timeout=0.05)


def test_a_said_window_is_heard_as_its_word() -> None:
    """`said` is how a test makes a caller say given words: one voiced window each, heard as spelt."""
    window = said("four")
    assert (len(window), word_for(window), is_silence(window)) == (4000, "four", False)
    assert expected_words(said("my") + said("card") + b"\xff" * WINDOW) == ["my", "card"]
