"""The Deepgram adapter through the real SDK: errors become SttRejected/SttUnavailable once, with what Deepgram said."""

from __future__ import annotations

import importlib.metadata
import re
import socket

import pytest
from deepgram.core.unchecked_base_model import construct_type
from deepgram.listen.v1.types.listen_v1results import ListenV1Results

from service.deepgram.live import DeepgramLive, to_events
from service.deepgram.protocol import is_fatal_close, is_fatal_status
from service.errors import SttRejected, SttUnavailable
from service.stt.events import SttMetadata, SttResult, SttSettled
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_languages, expected_words
from tests.helpers.service import make_settings

AUDIO = bytes(range(0x7F)) * 64  # 8128 bytes: two whole 0.5 s windows and a partial one


async def test_results_and_metadata_arrive_as_our_types(deepgram: FakeDeepgram) -> None:
    """Audio in, our SttResult and SttMetadata out, words as the fake heard them, ending at close 1000."""
    settings = make_settings(deepgram)
    async with DeepgramLive(settings).connect(channels=1, diarize=False) as live:
        await live.send_audio(AUDIO)
        await live.send_audio(b"")  # never sent: an empty frame is Deepgram's deprecated close signal
        await live.close_stream()
        events = [event async for event in live.events()]
    finals = [e for e in events if isinstance(e, SttResult) and e.is_final]
    assert [w.word for f in finals for w in f.words] == expected_words(AUDIO)
    metadata = [e for e in events if isinstance(e, SttMetadata)]
    assert [m.request_id for m in metadata] == [deepgram.connections[0].request_id]
    # v1 settles a final's audio to its end, and Metadata (its last word) all it processed.
    settled = [e.until_s for e in events if isinstance(e, SttSettled)]
    assert settled == sorted(settled)
    assert settled[:-1] == [f.end for f in finals]
    assert settled[-1] == metadata[0].duration == len(AUDIO) / 8000
    assert bytes(deepgram.connections[0].audio) == AUDIO


async def test_with_language_multi_each_word_and_result_keeps_its_languages(deepgram: FakeDeepgram) -> None:
    """language=multi: each word's language as Deepgram told it, each result's languages most words first."""
    settings = make_settings(deepgram, deepgram_language="multi")
    async with DeepgramLive(settings).connect(channels=1, diarize=False) as live:
        await live.send_audio(AUDIO)
        await live.close_stream()
        finals = [e async for e in live.events() if isinstance(e, SttResult) and e.is_final]
    assert deepgram.connections[0].option("language") == "multi"
    assert [w.language for f in finals for w in f.words] == expected_languages(AUDIO)
    sent = [final["channel"]["alternatives"][0]["languages"] for final in deepgram.connections[0].finals()]
    assert [list(f.languages) for f in finals] == sent
    assert all(f.languages for f in finals if f.words)


def test_a_result_without_its_languages_takes_its_words_languages() -> None:
    """Deepgram may leave a result's `languages` out on audio that switches languages: the words then tell;
    without either (a single DEEPGRAM_LANGUAGE), the result says none."""
    words = [
        {"word": w, "start": 0.0, "end": 0.1, "confidence": 0.9, "language": language}
        for w, language in (("hello", "en"), ("hola", "es"), ("amigo", "es"))
    ]
    message: dict[str, object] = {
        "type": "Results", "channel_index": [0, 1], "start": 0.0, "duration": 1.0, "is_final": True,
        "channel": {"alternatives": [{"transcript": "hello hola amigo", "confidence": 0.9, "words": words}]},
    }  # fmt: skip
    result, _ = to_events(construct_type(type_=ListenV1Results, object_=message))
    assert isinstance(result, SttResult)
    assert (result.languages, [w.language for w in result.words]) == (("es", "en"), ["en", "es", "es"])
    for item in words:
        del item["language"]
    result, _ = to_events(construct_type(type_=ListenV1Results, object_=message))
    assert isinstance(result, SttResult)
    assert (result.languages, [w.language for w in result.words]) == ((), [None, None, None])


@pytest.mark.parametrize(
    ("status", "error", "says"),
    [
        (401, SttRejected, "rejected the API key (HTTP 401)"),
        (403, SttRejected, "HTTP 403"),
        (400, SttRejected, "HTTP 400"),
        (429, SttUnavailable, "HTTP 429"),
        (503, SttUnavailable, "HTTP 503"),
    ],
)
async def test_upgrade_statuses_are_classified(deepgram: FakeDeepgram, status: int, error: type, says: str) -> None:
    """4xx at the upgrade is final (except 429); 5xx may pass."""
    deepgram.faults.reject_status = status
    settings = make_settings(deepgram)
    with pytest.raises(error, match=re.escape(says)) as caught:
        async with DeepgramLive(settings).connect(channels=1, diarize=False):
            pass
    assert caught.value.status == status


async def test_every_connection_sends_the_sdks_headers_and_the_key(deepgram: FakeDeepgram) -> None:
    """The headers are built once per client, and every connection still carries the key and the SDK's own
    User-Agent."""
    settings = make_settings(deepgram)
    client = DeepgramLive(settings)
    for _ in range(2):
        async with client.connect(channels=1, diarize=False) as live:
            await live.close_stream()
            _ = [event async for event in live.events()]
    key = settings.deepgram_api_key.get_secret_value() if settings.deepgram_api_key else ""
    for connection in deepgram.connections:
        assert connection.headers["authorization"] == f"Token {key}"
        assert connection.headers["user-agent"] == f"deepgram-sdk/{importlib.metadata.version('deepgram-sdk')}"
    assert len(deepgram.connections) == 2


async def test_a_wrong_key_is_rejected(deepgram: FakeDeepgram) -> None:
    """The fake checks the key like Deepgram: a wrong one is HTTP 401, never retried by the adapter."""
    settings = make_settings(deepgram, deepgram_api_key="not-the-key")
    with pytest.raises(SttRejected, match="HTTP 401"):
        async with DeepgramLive(settings).connect(channels=1, diarize=False):
            pass
    assert deepgram.upgrade_attempts == 1


async def test_nothing_listening_is_unavailable() -> None:
    """A refused TCP connection is SttUnavailable (it may pass), not a crash."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(None, deepgram_url=f"http://127.0.0.1:{port}")
    with pytest.raises(SttUnavailable, match="cannot reach Deepgram"):
        async with DeepgramLive(settings).connect(channels=1, diarize=False):
            pass


async def test_a_handshake_that_never_finishes_times_out(deepgram: FakeDeepgram) -> None:
    """TCP accepted but no HTTP answer: SttUnavailable after DEEPGRAM_CONNECT_TIMEOUT_S."""
    deepgram.faults.hang_handshake = True
    settings = make_settings(deepgram, deepgram_connect_timeout_s=0.3)
    with pytest.raises(SttUnavailable, match=r"did not open the connection within 0\.3 s"):
        async with DeepgramLive(settings).connect(channels=1, diarize=False):
            pass


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [(1011, "NET-0000", SttUnavailable), (1008, "DATA-0000", SttRejected)],
)
async def test_closes_mid_stream_carry_code_and_reason(
    deepgram: FakeDeepgram, code: int, reason: str, error: type
) -> None:
    """Deepgram closing mid-stream raises with its code and reason; 1008 is final, 1011 may pass."""
    deepgram.faults.close_after_bytes = 4000
    deepgram.faults.close_code = code
    deepgram.faults.close_reason = reason
    settings = make_settings(deepgram)
    with pytest.raises(error, match=f"{code} {reason}") as caught:
        async with DeepgramLive(settings).connect(channels=1, diarize=False) as live:
            await live.send_audio(AUDIO)
            async for _ in live.events():
                pass
    assert caught.value.close_code == code


async def test_a_dropped_connection_is_unavailable(deepgram: FakeDeepgram) -> None:
    """A TCP drop with no close frame is reported as such (1006) and may pass."""
    deepgram.faults.drop_after_bytes = 4000
    settings = make_settings(deepgram)
    with pytest.raises(SttUnavailable, match=r"no close frame") as caught:
        async with DeepgramLive(settings).connect(channels=1, diarize=False) as live:
            await live.send_audio(AUDIO)
            async for _ in live.events():
                pass
    assert caught.value.close_code == 1006


def test_fatal_classification() -> None:
    """Statuses and close codes that retrying cannot fix, per Deepgram's reference reconnect loop."""
    assert [s for s in (400, 401, 403, 404, 408, 429, 500, 503) if is_fatal_status(s)] == [400, 401, 403, 404]
    assert [c for c in (1000, 1006, 1008, 1011, 1012, 1013) if is_fatal_close(c)] == [1008]
