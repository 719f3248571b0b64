"""The pre-recorded client through the real SDK and a fake `POST /v1/listen`: one WAV in, our `BatchAnswer` out.

Times stay relative to the WAV (placing them on a call is the spool worker's); errors are SttRejected or
SttUnavailable with Deepgram's words, after exactly one request (the SDK's own retries are off).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from deepgram.core.unchecked_base_model import construct_type
from deepgram.types.listen_v1response import ListenV1Response

from service.deepgram.prerecorded import PrerecordedClient, parse
from service.errors import SttRejected, SttUnavailable
from service.settings import Settings
from service.spool.wav import mulaw_wav
from service.stt.events import BatchAnswer, BatchUtterance, Word
from tests.helpers.audio import call_audio
from tests.helpers.credentials import DEEPGRAM_KEY
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch, listen_response
from tests.helpers.fakes.deepgram_server import expected_languages, expected_words
from tests.helpers.service import make_settings

SILENCE = b"\xff"
# 1 s of speech, 0.5 s of silence, 0.5 s of speech: two utterances, at 0.0-1.0 s and 1.5-2.0 s of the WAV.
SPEECH = call_audio(401, 1.0) + SILENCE * 4000 + call_audio(402, 0.5)
FAULT = "Failed by FakeDeepgramBatch.fail_status."


@pytest.fixture
async def batch_api() -> AsyncIterator[FakeDeepgramBatch]:
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as fake:
        yield fake


def settings_for(fake: FakeDeepgramBatch, **overrides: Any) -> Settings:
    return make_settings(None, deepgram_batch_url=fake.url, **overrides)


async def test_an_answer_is_ours_with_times_relative_to_the_wav(batch_api: FakeDeepgramBatch) -> None:
    """One utterance per stretch of speech, its words as the fake heard them, the request's id; the WAV as sent."""
    wav = mulaw_wav(SPEECH)
    answer = await PrerecordedClient(settings_for(batch_api)).transcribe(wav)
    first, second = answer.utterances
    assert [(u.start, u.end) for u in answer.utterances] == [(0.0, 1.0), (1.5, 2.0)]
    assert [w.word for u in answer.utterances for w in u.words] == expected_words(SPEECH)
    assert (first.words[0].start, second.words[-1].end) == (0.0, 2.0)
    assert first.text == " ".join(w.word for w in first.words)
    assert answer.request_id is not None
    [request] = batch_api.requests
    assert (request.method, request.path, request.body) == ("POST", "/v1/listen", wav)
    assert request.headers["authorization"] == f"Token {DEEPGRAM_KEY}"
    assert (request.option("model"), request.option("utterances"), request.option("encoding")) == (
        "nova-3",
        "true",
        None,
    )


async def test_with_language_multi_each_utterance_and_word_keeps_its_languages(
    batch_api: FakeDeepgramBatch,
) -> None:
    """language=multi: each word's language as Deepgram told it, each utterance's languages most words first;
    without utterances, the channel's alternative says them."""
    wav = mulaw_wav(SPEECH)
    answer = await PrerecordedClient(settings_for(batch_api, deepgram_language="multi")).transcribe(wav)
    assert batch_api.requests[0].option("language") == "multi"
    assert [w.language for u in answer.utterances for w in u.words] == expected_languages(SPEECH)
    body = listen_response(
        SPEECH, sample_rate=8000, channels=1, query={"language": ["multi"], "utterances": ["true"]}, request_id="r"
    )
    assert [list(u.languages) for u in answer.utterances] == [u["languages"] for u in body["results"]["utterances"]]
    del body["results"]["utterances"]
    [whole] = parse(construct_type(type_=ListenV1Response, object_=body)).utterances
    assert list(whole.languages) == body["results"]["channels"][0]["alternatives"][0]["languages"]
    assert set(whole.languages) == set(expected_languages(SPEECH))
    del body["results"]["channels"][0]["alternatives"][0]["languages"]  # absent: the words tell
    [whole] = parse(construct_type(type_=ListenV1Response, object_=body)).utterances
    assert set(whole.languages) == set(expected_languages(SPEECH))


@pytest.mark.parametrize(
    ("fail_status", "key", "error", "reason"),
    [
        (
            None,
            "wrong-key",
            SttRejected,
            "Deepgram rejected the API key (HTTP 401: Invalid credentials.): DEEPGRAM_API",
        ),
        (
            402,
            DEEPGRAM_KEY,
            SttRejected,
            f"the Deepgram project is out of credit (HTTP 402: {FAULT}, Payment Required)",
        ),
        (403, DEEPGRAM_KEY, SttRejected, f"Deepgram refused access for this API key (HTTP 403: {FAULT}): the key's"),
        (
            400,
            DEEPGRAM_KEY,
            SttRejected,
            f"Deepgram refused the request (HTTP 400: {FAULT}); check the DEEPGRAM_* options",
        ),
        (429, DEEPGRAM_KEY, SttUnavailable, f"Deepgram could not transcribe now (HTTP 429: {FAULT})"),
        (503, DEEPGRAM_KEY, SttUnavailable, f"Deepgram could not transcribe now (HTTP 503: {FAULT})"),
    ],
)
async def test_statuses_are_translated_after_one_request(
    batch_api: FakeDeepgramBatch, fail_status: int | None, key: str, error: type, reason: str
) -> None:
    """Deepgram's status and words, classified like the live upgrade's; the SDK does not retry on its own."""
    batch_api.fail_status = fail_status
    with pytest.raises(error) as raised:
        await PrerecordedClient(settings_for(batch_api, deepgram_api_key=key)).transcribe(mulaw_wav(SPEECH))
    status = fail_status or 401
    assert reason in raised.value.reason  # the whole of each reason: tests/deepgram/test_protocol.py
    assert (raised.value.status, raised.value.kind) == (status, f"http_{status}")
    assert batch_api.request_count == 1


async def test_a_wav_deepgram_cannot_read_is_a_bad_request(batch_api: FakeDeepgramBatch) -> None:
    """Damaged audio is Deepgram's 400, with its explanation: final, not worth retrying."""
    with pytest.raises(SttRejected, match=r"HTTP 400: failed to process audio") as raised:
        await PrerecordedClient(settings_for(batch_api)).transcribe(b"not a wav")
    assert raised.value.status == 400


def test_no_key_is_rejected_before_any_request() -> None:
    """Without DEEPGRAM_API_KEY the client cannot be built, so no audio needs reading."""
    with pytest.raises(SttRejected, match="DEEPGRAM_API_KEY is not set") as raised:
        PrerecordedClient(make_settings(None, deepgram_api_key=None))
    assert raised.value.kind == "other"


async def test_nothing_listening_is_unavailable() -> None:
    """A refused TCP connection may pass: SttUnavailable, named by httpx's error."""
    settings = make_settings(None, deepgram_batch_url="http://127.0.0.1:9")
    with pytest.raises(SttUnavailable, match="cannot reach Deepgram: ConnectError") as raised:
        await PrerecordedClient(settings).transcribe(mulaw_wav(SPEECH))
    assert (raised.value.status, raised.value.kind) == (None, "other")


def test_without_utterances_each_channel_is_one_stretch_with_no_span() -> None:
    """An answer without utterances: each channel's best alternative, its span left to its words."""
    body = listen_response(SPEECH, sample_rate=8000, channels=1, query={}, request_id="req-1")
    answer = parse(construct_type(type_=ListenV1Response, object_=body))
    [only] = answer.utterances
    assert (only.start, only.end, answer.request_id) == (None, None, "req-1")
    assert [w.word for w in only.words] == expected_words(SPEECH)
    assert (only.words[0].start, only.words[-1].end) == (0.0, 2.0)


NOTHING = BatchAnswer(utterances=(), request_id=None)
EMPTY_UTTERANCE = BatchUtterance(text="", confidence=0.0, words=(), start=None, end=None)
BARE_WORD = Word(word="hi", start=0.0, end=0.5, confidence=0.0, punctuated_word="Hi.")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, NOTHING),
        ({"metadata": {"request_id": "r"}, "results": None}, BatchAnswer(utterances=(), request_id="r")),
        ({"results": {"channels": [{"alternatives": []}, {}]}}, NOTHING),
        (
            {"results": {"utterances": [{"transcript": None, "words": None}]}},
            BatchAnswer(utterances=(EMPTY_UTTERANCE,), request_id=None),
        ),
        (
            {
                "results": {
                    "channels": [
                        {
                            "alternatives": [
                                {"transcript": "hi", "words": [{"word": "hi", "end": 0.5, "punctuated_word": "Hi."}]}
                            ]
                        }
                    ]
                }
            },
            BatchAnswer(
                utterances=(dataclasses.replace(EMPTY_UTTERANCE, text="hi", words=(BARE_WORD,)),), request_id=None
            ),
        ),
        (
            {
                "results": {
                    "channels": [{"alternatives": [{"transcript": "hi", "words": [{"word": "hi", "end": 0.5}]}]}]
                }
            },
            BatchAnswer(
                utterances=(
                    dataclasses.replace(
                        EMPTY_UTTERANCE, text="hi", words=(dataclasses.replace(BARE_WORD, punctuated_word=None),)
                    ),
                ),
                request_id=None,
            ),
        ),
    ],
)
def test_missing_fields_are_guarded(body: dict[str, Any], expected: BatchAnswer) -> None:
    """The SDK builds answers unvalidated: a missing field is a default (or no span), never an exception."""
    assert parse(construct_type(type_=ListenV1Response, object_=body)) == expected
