"""I/O adapter (layer: deepgram): Deepgram's text intelligence (`POST /v1/read`) through deepgram-sdk, as the
seam's `TextAnalyst` (`stt/analysis.py`).

One request per `analyze`, never retried here (the job mechanism retries, `storage/job_policy.py`): the SDK's
async client pointed at DEEPGRAM_URL (DEEPGRAM_BATCH_URL when set), like the pre-recorded client, with English
asked for (`/v1/read` reads English only). `parse` maps the SDK's answer onto our `TextAnalysis`; a 429 or a
5xx becomes `SttUnavailable`, any other 4xx `SttRejected`, here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.deepgram.requests import RestRequests, translated
from service.stt.analysis import Label, Span, TextAnalysis

REQUEST_TIMEOUT_S = 60.0  # below the job's lease (job_policy.LEASE_S): an attempt never outlives its claim
LANGUAGE = "en"


class DeepgramText(RestRequests):
    """Deepgram's `/v1/read` with our settings. Raises SttRejected when built without DEEPGRAM_API_KEY."""

    async def analyze(self, text: str, features: Sequence[str]) -> TextAnalysis:
        """Deepgram's reading of `text` for `features`; SttError if it cannot give one. Never retried here: the
        job mechanism retries on its own schedule, and records every attempt."""
        async with self.sdk(REQUEST_TIMEOUT_S) as sdk:
            with translated("an analysis"):
                response = await sdk.read.v1.text.analyze(
                    request={"text": text}, language=LANGUAGE, summarize=True if "summary" in features else None,
                    topics=_asked("topics", features), intents=_asked("intents", features),
                    sentiment=_asked("sentiment", features),
                )  # fmt: skip
        return parse(response)


def _asked(feature: str, features: Sequence[str]) -> bool | None:
    return True if feature in features else None  # None: left out of the query, not `false`


def parse(response: Any) -> TextAnalysis:
    """The SDK's `ReadV1Response` as ours. The SDK builds answers unvalidated (any field may be None), and its
    types nest the summary (`summary.results.summary.text`) and the request id (`metadata.metadata`) one level
    deeper than Deepgram sends them (`summary.text`, `metadata.request_id`): both are read."""
    results = getattr(response, "results", None)
    sentiments = getattr(results, "sentiments", None)
    average = getattr(sentiments, "average", None)
    return TextAnalysis(
        summary=_summary(getattr(results, "summary", None)),
        topics=_labelled(getattr(results, "topics", None), "topics", "topic"),
        intents=_labelled(getattr(results, "intents", None), "intents", "intent"),
        sentiments=tuple(
            Span(
                _index(segment.start_word),
                _index(segment.end_word),
                sentiment=segment.sentiment,
                score=float(segment.sentiment_score) if segment.sentiment_score is not None else None,
            )
            for segment in getattr(sentiments, "segments", None) or ()
        ),
        sentiment=getattr(average, "sentiment", None),
        sentiment_score=_float(getattr(average, "sentiment_score", None)),
        request_id=_request_id(getattr(response, "metadata", None)),
    )


def _summary(summary: Any) -> str | None:
    text = getattr(summary, "text", None)
    if text is None:
        text = getattr(getattr(getattr(summary, "results", None), "summary", None), "text", None)
    return str(text) if text else None


def _labelled(part: Any, plural: str, singular: str) -> tuple[Span, ...]:
    return tuple(
        Span(
            _index(segment.start_word),
            _index(segment.end_word),
            labels=tuple(
                Label(str(getattr(label, singular, "") or ""), _float(label.confidence_score) or 0.0)
                for label in getattr(segment, plural, None) or ()
                if getattr(label, singular, None)
            ),
        )
        for segment in getattr(part, "segments", None) or ()
    )


def _request_id(metadata: Any) -> str | None:
    said = getattr(metadata, "request_id", None) or getattr(getattr(metadata, "metadata", None), "request_id", None)
    return str(said) if said else None


def _index(value: Any) -> int:
    return int(value) if value is not None else 0


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None
