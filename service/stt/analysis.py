"""The text-intelligence seam, and what a call's transcript means for it (pure: types and arithmetic only).

`TextAnalyst` is what an engine of post-call analysis implements (`deepgram/text.py`: Deepgram's `/v1/read`):
text in, a `TextAnalysis` out, in our own types. Errors are the service's own (`service.errors`): `SttRejected`
when trying again cannot help (a 4xx), `SttUnavailable` when it may (a 429, a 5xx, no answer).

The rest turns a call's final transcript (`Line`s, in order) into the question and the answer into what is
stored: the transcript's `version` (a digest of its utterances' keys and texts, so a changed transcript is
analysed again and an unchanged one never twice), why a transcript cannot be analysed (`blocker`: analysis
off, not English, too few words), the text sent (`analysis_text`: one line per utterance, so the answer's word
indices fall on utterances), and the stored fields (`stored_fields`: topics and intents as tags, sentiment
overall, per speaker on a call with more than one, and per utterance).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

MIN_WORDS: Final = 50  # Deepgram needs about this many to summarise; fewer say too little to analyse
# Deepgram's own thresholds on a sentiment score (-1 to 1): at or past them a stretch is positive or negative.
POSITIVE_FROM: Final = 0.333
NEGATIVE_FROM: Final = -0.333


@dataclass(frozen=True, slots=True)
class Label:
    """A topic or an intent and how sure the engine is of it (0 to 1)."""

    name: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of the text the engine labelled, by word index (`start_word` to `end_word`, both included)."""

    start_word: int
    end_word: int
    labels: tuple[Label, ...] = ()
    sentiment: str | None = None
    score: float | None = None


@dataclass(frozen=True, slots=True)
class TextAnalysis:
    """What the engine said of a text: each part None or empty when not asked for or not given."""

    summary: str | None = None
    topics: tuple[Span, ...] = ()
    intents: tuple[Span, ...] = ()
    sentiments: tuple[Span, ...] = ()
    sentiment: str | None = None  # the text's average
    sentiment_score: float | None = None
    request_id: str | None = None


class TextAnalyst(Protocol):
    """An engine of text intelligence."""

    @property
    def name(self) -> str:
        """Its name in logs."""
        ...

    async def analyze(self, text: str, features: Sequence[str]) -> TextAnalysis:
        """`features` (of settings.ANALYSIS_FEATURES) of `text`; SttRejected or SttUnavailable if it cannot."""
        ...


@dataclass(frozen=True, slots=True)
class Line:
    """One final utterance of a call, as the analysis sees it."""

    key: str
    speaker: str
    track: str
    start: float
    text: str
    languages: tuple[str, ...] = field(default=())

    @property
    def words(self) -> int:
        return len(self.text.split())


def version(lines: Iterable[Line]) -> str:
    """The transcript's version: a digest of its utterances' keys and texts, in order."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(f"{line.key}\x1f{line.text}\x1e".encode())
    return digest.hexdigest()[:32]


def blocker(lines: Sequence[Line], features: Sequence[str], *, default_language: str) -> str | None:
    """Why this transcript cannot be analysed, or None: analysis off, a language other than English (by most
    words: each utterance's first language, else `default_language` unless that is `multi`), too few words."""
    if not features:
        return "analysis is off (ANALYSIS is empty)"
    language = main_language(lines, default_language=default_language)
    if language is not None and language.split("-")[0].lower() != "en":
        return f"the call is in {language}, and the analysis reads English only"
    words = sum(line.words for line in lines)
    if words < MIN_WORDS:
        return f"{words} words: fewer than the {MIN_WORDS} an analysis needs"
    return None


def main_language(lines: Sequence[Line], *, default_language: str) -> str | None:
    """The language most of the call's words were said in, as far as anything says; None when nothing does."""
    counts: dict[str, int] = {}
    fallback = None if default_language == "multi" else default_language
    for line in lines:
        language = line.languages[0] if line.languages else fallback
        if language is not None:
            counts[language] = counts.get(language, 0) + line.words
    return max(counts, key=lambda name: counts[name]) if counts else None


def analysis_text(lines: Sequence[Line]) -> str:
    """The text sent: one line per non-empty utterance, in order."""
    return "\n".join(line.text.strip() for line in lines if line.text.strip())


def label_of(score: float) -> str:
    """A sentiment score (-1 to 1) as Deepgram names it."""
    if score >= POSITIVE_FROM:
        return "positive"
    if score <= NEGATIVE_FROM:
        return "negative"
    return "neutral"


def stored_fields(analysis: TextAnalysis, lines: Sequence[Line]) -> dict[str, Any]:
    """The answer as the `analyses` row's fields: summary, topics and intents (each name once, most confident
    first), sentiment (overall, per speaker when more than one spoke, per utterance)."""
    said = [line for line in lines if line.text.strip()]
    return {
        "summary": analysis.summary,
        "topics": _tags(analysis.topics, "topic"),
        "intents": _tags(analysis.intents, "intent"),
        "sentiment": _sentiment(analysis, said),
        "request_id": analysis.request_id,
    }


def _tags(spans: Sequence[Span], name: str) -> list[dict[str, Any]]:
    best: dict[str, float] = {}
    for span in spans:
        for label in span.labels:
            best[label.name] = max(best.get(label.name, 0.0), label.confidence)
    ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
    return [{name: label, "confidence": round(confidence, 4)} for label, confidence in ranked]


def _sentiment(analysis: TextAnalysis, lines: Sequence[Line]) -> dict[str, Any]:
    if analysis.sentiment is None and not analysis.sentiments:
        return {}
    scored = [span for span in analysis.sentiments if span.score is not None]
    per_line = [_weighted(_overlaps(scored, first, last)) for first, last in _word_ranges(lines)]
    overall = None
    if analysis.sentiment_score is not None:
        overall = {"sentiment": analysis.sentiment or label_of(analysis.sentiment_score),
                   "score": round(analysis.sentiment_score, 4)}  # fmt: skip
    speakers: dict[str, Any] = {}
    if len({line.speaker for line in lines}) > 1:
        for speaker in sorted({line.speaker for line in lines}):
            weights = [(score, line.words) for line, score in zip(lines, per_line, strict=True)
                       if line.speaker == speaker and score is not None]  # fmt: skip
            scored_speaker = _scored(_weighted(weights))
            if scored_speaker is not None:  # a speaker none of whose words was scored is left out
                speakers[speaker] = scored_speaker
    utterances = [
        {"start": line.start, "track": line.track, "speaker": line.speaker, **(_scored(score) or {})}
        for line, score in zip(lines, per_line, strict=True)
        if score is not None
    ]
    return {"overall": overall, "speakers": speakers, "utterances": utterances}


def _word_ranges(lines: Sequence[Line]) -> list[tuple[int, int]]:
    ranges, first = [], 0
    for line in lines:
        ranges.append((first, first + line.words - 1))
        first += line.words
    return ranges


def _overlaps(spans: Sequence[Span], first: int, last: int) -> list[tuple[float, int]]:
    """Each span's score, weighted by how many of the words `first`..`last` it covers."""
    found = []
    for span in spans:
        shared = min(last, span.end_word) - max(first, span.start_word) + 1
        if shared > 0 and span.score is not None:
            found.append((span.score, shared))
    return found


def _weighted(weights: Sequence[tuple[float, int]]) -> float | None:
    total = sum(weight for _, weight in weights)
    return sum(score * weight for score, weight in weights) / total if total else None


def _scored(score: float | None) -> dict[str, Any] | None:
    return None if score is None else {"sentiment": label_of(score), "score": round(score, 4)}
