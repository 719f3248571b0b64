"""What a call's transcript means for the analysis, and the answer as stored (`stt/analysis.py`): tables."""

from __future__ import annotations

import pytest

from service.settings import ANALYSIS_FEATURES
from service.stt.analysis import (
    MIN_WORDS,
    Label,
    Line,
    Span,
    TextAnalysis,
    analysis_text,
    blocker,
    label_of,
    main_language,
    stored_fields,
    version,
)


def line(key: str, text: str, *, speaker: str = "caller", track: str = "inbound", start: float = 0.0,
         languages: tuple[str, ...] = ()) -> Line:  # fmt: skip
    return Line(key, speaker, track, start, text, languages)


WORDS_50 = " ".join(["word"] * MIN_WORDS)


def test_the_version_changes_with_a_key_or_a_text_and_with_nothing_else() -> None:
    base = [line("a", "hello there"), line("b", "good bye")]
    assert version(base) == version([line("a", "hello there", speaker="agent", start=9), line("b", "good bye")])
    assert version(base) != version([line("a", "hello there"), line("b", "good bye!")])
    assert version(base) != version([line("a", "hello there"), line("c", "good bye")])
    assert version(base) != version(base[:1])
    assert version([line("a", "b c")]) != version([line("a b", "c")])  # fields are delimited, not run together
    assert len(version([])) == 32


@pytest.mark.parametrize(
    ("lines", "features", "default", "reason"),
    [
        ([line("a", WORDS_50)], (), "en", "analysis is off (ANALYSIS is empty)"),
        ([line("a", WORDS_50)], ANALYSIS_FEATURES, "en", None),
        ([line("a", WORDS_50)], ("summary",), "en-US", None),
        ([line("a", WORDS_50)], ANALYSIS_FEATURES, "es", "the call is in es, and the analysis reads English only"),
        ([line("a", WORDS_50)], ANALYSIS_FEATURES, "multi", None),  # nothing says: not refused
        ([line("a", WORDS_50, languages=("fr",))], ANALYSIS_FEATURES, "multi",
         "the call is in fr, and the analysis reads English only"),
        ([line("a", WORDS_50, languages=("en",)), line("b", "hola amigos", languages=("es",))], ANALYSIS_FEATURES,
         "multi", None),  # most words English
        ([line("a", " ".join(["word"] * 49))], ANALYSIS_FEATURES, "en",
         "49 words: fewer than the 50 an analysis needs"),
        ([line("a", " ".join(["w"] * 25)), line("b", " ".join(["w"] * 25))], ANALYSIS_FEATURES, "en", None),
        ([], ANALYSIS_FEATURES, "en", "0 words: fewer than the 50 an analysis needs"),
    ],
)  # fmt: skip
def test_what_cannot_be_analysed_is_said_with_its_reason(
    lines: list[Line], features: tuple[str, ...], default: str, reason: str | None
) -> None:
    assert blocker(lines, features, default_language=default) == reason


def test_the_main_language_counts_words_and_an_utterance_without_one_takes_the_default() -> None:
    lines = [line("a", "one two three", languages=("de",)), line("b", "four five")]
    assert main_language(lines, default_language="en") == "de"
    assert main_language(lines, default_language="multi") == "de"
    assert main_language([line("b", "four five")], default_language="multi") is None


def test_the_text_sent_is_one_line_per_said_utterance() -> None:
    lines = [line("a", " hello there "), line("b", "   "), line("c", "bye")]
    assert analysis_text(lines) == "hello there\nbye"


@pytest.mark.parametrize(
    ("score", "label"),
    [(1.0, "positive"), (0.333, "positive"), (0.2, "neutral"), (-0.333, "negative"), (-1, "negative")],
)
def test_a_score_is_named_as_deepgram_names_it(score: float, label: str) -> None:
    assert label_of(score) == label


def test_tags_are_each_name_once_most_confident_first() -> None:
    analysis = TextAnalysis(
        summary="A summary.",
        topics=(
            Span(0, 3, labels=(Label("billing", 0.5), Label("refund", 0.9))),
            Span(4, 9, labels=(Label("billing", 0.7),)),
        ),
        intents=(Span(0, 9, labels=(Label("Cancel service", 0.6),)),),
        request_id="req-1",
    )
    fields = stored_fields(analysis, [line("a", "one two three four five six seven eight nine ten")])
    assert fields == {
        "summary": "A summary.",
        "topics": [{"topic": "refund", "confidence": 0.9}, {"topic": "billing", "confidence": 0.7}],
        "intents": [{"intent": "Cancel service", "confidence": 0.6}],
        "sentiment": {},  # not asked for
        "request_id": "req-1",
    }


def test_sentiment_is_stored_overall_per_speaker_and_per_utterance_by_word_index() -> None:
    """Two speakers: each utterance takes the segments over its words (weighted by words shared); each speaker the
    word-weighted mean of its utterances; an empty utterance has no words and no score."""
    lines = [
        line("a", "this is great", speaker="caller", start=0.0),  # words 0-2
        line("x", "", speaker="agent", start=1.0),
        line("b", "that is bad news", speaker="agent", track="outbound", start=2.0),  # words 3-6
        line("c", "well ok", speaker="caller", start=5.0),  # words 7-8
    ]
    analysis = TextAnalysis(
        sentiments=(Span(0, 2, sentiment="positive", score=0.9), Span(3, 6, sentiment="negative", score=-0.6),
                    Span(7, 8, score=None), Span(8, 8, score=0.0)),
        sentiment="neutral", sentiment_score=0.1,
    )  # fmt: skip
    sentiment = stored_fields(analysis, lines)["sentiment"]
    assert sentiment["overall"] == {"sentiment": "neutral", "score": 0.1}
    assert sentiment["utterances"] == [
        {"start": 0.0, "track": "inbound", "speaker": "caller", "sentiment": "positive", "score": 0.9},
        {"start": 2.0, "track": "outbound", "speaker": "agent", "sentiment": "negative", "score": -0.6},
        {"start": 5.0, "track": "inbound", "speaker": "caller", "sentiment": "neutral", "score": 0.0},
    ]
    assert sentiment["speakers"] == {
        "agent": {"sentiment": "negative", "score": -0.6},
        "caller": {"sentiment": "positive", "score": 0.54},  # (0.9 * 3 + 0.0 * 2) / 5
    }


def test_one_speaker_has_no_per_speaker_part_and_an_unnamed_average_is_named_from_its_score() -> None:
    lines = [line("a", "good good good"), line("b", "fine")]
    analysis = TextAnalysis(sentiments=(Span(0, 3, score=0.5),), sentiment=None, sentiment_score=0.5)
    sentiment = stored_fields(analysis, lines)["sentiment"]
    assert sentiment["overall"] == {"sentiment": "positive", "score": 0.5}
    assert sentiment["speakers"] == {}
    assert [entry["score"] for entry in sentiment["utterances"]] == [0.5, 0.5]


def test_segments_without_an_average_still_give_utterances_and_no_overall() -> None:
    lines = [line("a", "so so", speaker="caller"), line("b", "right", speaker="agent")]
    analysis = TextAnalysis(sentiments=(Span(0, 1, score=-0.4),))
    sentiment = stored_fields(analysis, lines)["sentiment"]
    assert sentiment["overall"] is None
    assert sentiment["speakers"] == {"caller": {"sentiment": "negative", "score": -0.4}}  # the agent: unscored
    assert len(sentiment["utterances"]) == 1
