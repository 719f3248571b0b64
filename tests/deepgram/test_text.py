"""Deepgram's text intelligence through the real SDK and the fake `POST /v1/read`: text in, our `TextAnalysis` out.

One request per `analyze` (the SDK's retries are off: the job mechanism retries); a 429 or a 5xx is
SttUnavailable, any other 4xx SttRejected, with Deepgram's words.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from deepgram.core.unchecked_base_model import construct_type
from deepgram.types.read_v1response import ReadV1Response

from service.deepgram.text import DeepgramText, parse
from service.errors import SttRejected, SttUnavailable
from service.settings import ANALYSIS_FEATURES, Settings
from service.stt.analysis import Label
from tests.helpers.credentials import DEEPGRAM_KEY
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch, read_response, summary_for
from tests.helpers.service import make_settings

TEXT = "Hello I would like to cancel my account please\nThat is great thank you so much"


@pytest.fixture
async def deepgram() -> AsyncIterator[FakeDeepgramBatch]:
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as fake:
        yield fake


def settings_for(fake: FakeDeepgramBatch, **overrides: Any) -> Settings:
    return make_settings(None, deepgram_batch_url=fake.url, **overrides)


async def test_every_feature_is_asked_for_in_english_and_the_answer_is_ours(deepgram: FakeDeepgramBatch) -> None:
    analysis = await DeepgramText(settings_for(deepgram)).analyze(TEXT, ANALYSIS_FEATURES)
    assert analysis.summary == summary_for(TEXT)
    assert [label.name for span in analysis.topics for label in span.labels] == ["account", "cancel", "please"]
    assert analysis.intents[0].labels == (Label("Make a statement", 0.8),)
    first, second = analysis.sentiments
    assert (first.start_word, first.end_word, first.sentiment) == (0, 8, "negative")
    assert (second.start_word, second.end_word, second.sentiment) == (9, 15, "positive")
    assert analysis.sentiment == "neutral"
    assert analysis.sentiment_score is not None
    assert analysis.request_id is not None
    [request] = deepgram.requests
    assert (request.method, request.path) == ("POST", "/v1/read")
    assert json.loads(request.body) == {"text": TEXT}
    assert request.headers["authorization"] == f"Token {DEEPGRAM_KEY}"
    assert {name: values[0] for name, values in request.query.items()} == {
        "language": "en", "summarize": "true", "topics": "true", "intents": "true", "sentiment": "true",
    }  # fmt: skip


async def test_only_the_features_asked_for_are_sent_and_answered(deepgram: FakeDeepgramBatch) -> None:
    analysis = await DeepgramText(settings_for(deepgram)).analyze(TEXT, ("summary",))
    assert (analysis.summary, analysis.topics, analysis.sentiments, analysis.sentiment) == (
        summary_for(TEXT),
        (),
        (),
        None,
    )
    assert set(deepgram.requests[0].query) == {"language", "summarize"}


@pytest.mark.parametrize(
    ("status", "error"), [(429, SttUnavailable), (500, SttUnavailable), (503, SttUnavailable), (400, SttRejected),
                          (402, SttRejected), (413, SttRejected)],
)  # fmt: skip
async def test_a_failure_is_retryable_or_not_by_its_status(
    deepgram: FakeDeepgramBatch, status: int, error: type[Exception]
) -> None:
    deepgram.read_fail_status, deepgram.read_fail_count = status, 1
    client = DeepgramText(settings_for(deepgram))
    with pytest.raises(error) as raised:
        await client.analyze(TEXT, ANALYSIS_FEATURES)
    assert f"HTTP {status}" in str(raised.value)
    assert (await client.analyze(TEXT, ANALYSIS_FEATURES)).summary == summary_for(TEXT)  # then it answers
    assert len(deepgram.requests) == 2  # one request per attempt: no retries of the SDK's own


async def test_a_wrong_key_is_refused_and_no_key_fails_before_any_request(deepgram: FakeDeepgramBatch) -> None:
    with pytest.raises(SttRejected, match="HTTP 401"):
        await DeepgramText(settings_for(deepgram, deepgram_api_key="wrong")).analyze(TEXT, ANALYSIS_FEATURES)
    with pytest.raises(SttRejected, match="DEEPGRAM_API_KEY is not set"):
        DeepgramText(settings_for(deepgram, deepgram_api_key=None))


async def test_nothing_listening_is_unavailable() -> None:
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as gone:
        settings = settings_for(gone)
    with pytest.raises(SttUnavailable, match="cannot reach Deepgram"):
        await DeepgramText(settings).analyze(TEXT, ANALYSIS_FEATURES)


def test_the_sdks_deeper_shapes_are_read_too() -> None:
    """The SDK's types nest the summary and the request id one level deeper than Deepgram sends them: both read."""
    nested = {"metadata": {"metadata": {"request_id": "req-9"}},
              "results": {"summary": {"results": {"summary": {"text": "Nested."}}}}}  # fmt: skip
    analysis = parse(construct_type(type_=ReadV1Response, object_=nested))
    assert (analysis.summary, analysis.request_id) == ("Nested.", "req-9")
    flat = read_response(TEXT, {"summarize": ["true"]}, "req-1")
    analysis = parse(construct_type(type_=ReadV1Response, object_=flat))
    assert (analysis.summary, analysis.request_id) == (summary_for(TEXT), "req-1")
    assert parse(construct_type(type_=ReadV1Response, object_={"results": {}})).summary is None
