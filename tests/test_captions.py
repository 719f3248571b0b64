"""Transcript formats: golden files for a two-speaker call, and the edges (empty, past an hour, unicode, overlap).

Regenerate the golden files after a deliberate format change with `CALLSCRIBE_UPDATE_GOLDEN=1 pytest
tests/test_captions.py`, then read the diff: it is what every API client and CLI user will see.
"""

from __future__ import annotations

import datetime
import html
import json
import os

import pytest
import srt  # type: ignore[import-untyped]
import webvtt

from service import captions
from service.captions import Format
from service.storage.queries import UtteranceRecord
from tests.helpers.callsdb import as_record, two_speaker_utterances
from tests.helpers.paths import GOLDEN

EXTENSIONS: dict[Format, str] = {"text": "txt", "srt": "srt", "vtt": "vtt", "json": "json"}


def two_speakers() -> list[UtteranceRecord]:
    return [as_record(utterance) for utterance in two_speaker_utterances("CA1")]


def golden(fmt: Format) -> str:
    return (GOLDEN / f"two_speakers.{EXTENSIONS[fmt]}").read_text(encoding="utf-8")


def utterance(track: str, start: float, end: float, text: str) -> UtteranceRecord:
    speaker = "caller" if track == "inbound" else "agent"
    return UtteranceRecord(track, speaker, start, end, text, 0.9, (), "live")


@pytest.mark.parametrize("fmt", captions.FORMATS)
def test_two_speaker_call_matches_its_golden_file(fmt: Format) -> None:
    """Each format of the fixed two-speaker call is byte for byte its golden file."""
    rendered = captions.render(two_speakers(), fmt)
    path = GOLDEN / f"two_speakers.{EXTENSIONS[fmt]}"
    if os.environ.get("CALLSCRIBE_UPDATE_GOLDEN") == "1":
        path.write_text(rendered, encoding="utf-8")
    assert rendered == golden(fmt)


def test_srt_and_vtt_read_back_to_the_same_cues() -> None:
    """The SRT and WebVTT output parse back (srt, webvtt-py) to the utterances' times, speakers and text."""
    utterances = two_speakers()
    subtitles = list(srt.parse(captions.to_srt(utterances)))
    cues = webvtt.from_string(captions.to_vtt(utterances)).captions
    for subtitle, cue, spoken in zip(subtitles, cues, utterances, strict=True):
        assert subtitle.start.total_seconds() == cue.start_time.in_milliseconds() / 1000 == spoken.start
        assert subtitle.end.total_seconds() == cue.end_time.in_milliseconds() / 1000 == spoken.end
        assert subtitle.content == f"{spoken.speaker}: {spoken.text}"
        assert cue.voice == spoken.speaker
        assert html.unescape(cue.text) == spoken.text


def test_json_holds_every_field_of_every_utterance() -> None:
    """The JSON transcript is a list of utterances with speaker, track, times, text, confidence, words, source and
    languages."""
    parsed = json.loads(captions.to_json(two_speakers()))
    assert [item["speaker"] for item in parsed] == ["caller", "agent", "caller", "agent"]
    assert set(parsed[0]) == {"speaker", "track", "start", "end", "text", "confidence", "words", "source", "languages"}
    assert parsed[3]["source"] == "batch"
    assert parsed[0]["words"][0] == {
        "word": "hi",
        "start": 0.48,
        "end": 0.682,
        "confidence": 0.97,
        "punctuated_word": "Hi,",
    }


def test_an_empty_transcript_is_a_valid_empty_document_in_every_format() -> None:
    """No utterances: empty text and SRT, a WebVTT header alone, an empty JSON array."""
    assert captions.to_text([]) == ""
    assert captions.to_srt([]) == ""
    assert captions.to_vtt([]) == "WEBVTT\n"
    assert webvtt.from_string(captions.to_vtt([])).captions == []
    assert json.loads(captions.to_json([])) == []


def test_past_an_hour_every_format_shows_hours() -> None:
    """A call longer than an hour: text gains an hours field there, SRT and WebVTT count hours as usual."""
    late = [utterance("inbound", 59.999, 61.0, "almost a minute"), utterance("outbound", 3725.5, 3727.25, "late")]
    assert captions.to_text(late) == "[01:00.00] caller: almost a minute\n[01:02:05.50] agent: late\n"
    assert "01:02:05,500 --> 01:02:07,250" in captions.to_srt(late)
    assert "01:02:05.500 --> 01:02:07.250" in captions.to_vtt(late)
    assert "00:00:59.999 --> 00:01:01.000" in captions.to_vtt(late)
    long_call = [utterance("inbound", 4 * 3600 + 1.0, 4 * 3600 + 2.0, "four hours in")]
    assert captions.to_text(long_call) == "[04:00:01.00] caller: four hours in\n"
    assert next(srt.parse(captions.to_srt(long_call))).start == datetime.timedelta(hours=4, seconds=1)


def test_unicode_text_survives_every_format() -> None:
    """Accents, CJK and emoji come out unchanged (JSON is UTF-8, not \\u escapes)."""
    text = "Grüße aus Zürich, 東京から 👋"
    spoken = [utterance("inbound", 1.0, 2.0, text)]
    assert captions.to_text(spoken) == f"[00:01.00] caller: {text}\n"
    assert next(srt.parse(captions.to_srt(spoken))).content == f"caller: {text}"
    assert webvtt.from_string(captions.to_vtt(spoken)).captions[0].text == text
    assert text in captions.to_json(spoken)
    assert json.loads(captions.to_json(spoken))[0]["text"] == text


def test_overlapping_utterances_of_two_tracks_stay_in_the_order_given() -> None:
    """Both parties talking at once: one cue each, numbered and kept in start order, overlapping in time."""
    overlap = [
        utterance("inbound", 1.0, 5.0, "I was saying that"),
        utterance("outbound", 2.0, 3.0, "sorry, go on"),
        utterance("inbound", 5.5, 6.0, "thanks"),
    ]
    assert captions.to_text(overlap).splitlines() == [
        "[00:01.00] caller: I was saying that",
        "[00:02.00] agent: sorry, go on",
        "[00:05.50] caller: thanks",
    ]
    subtitles = list(srt.parse(captions.to_srt(overlap)))
    assert [(s.index, s.content) for s in subtitles] == [
        (1, "caller: I was saying that"), (2, "agent: sorry, go on"), (3, "caller: thanks"),
    ]  # fmt: skip
    assert subtitles[1].start < subtitles[0].end
    assert [cue.voice for cue in webvtt.from_string(captions.to_vtt(overlap)).captions] == ["caller", "agent", "caller"]


def test_markup_line_breaks_and_backward_times_cannot_break_a_cue() -> None:
    """`<`, `&`, `-->` and blank lines in text, and an end before the start, still give one valid cue each."""
    tricky = [utterance("inbound", 3.0, 2.0, "a <b> & c --> d\n\ne"), utterance("outbound", 4.0, 5.0, "next")]
    vtt_text = captions.to_vtt(tricky)
    assert "<v caller>a &lt;b&gt; &amp; c --&gt; d e" in vtt_text
    cues = webvtt.from_string(vtt_text).captions
    assert len(cues) == 2
    assert (cues[0].start, cues[0].end) == ("00:00:03.000", "00:00:03.000")
    subtitles = list(srt.parse(captions.to_srt(tricky)))
    assert [s.content for s in subtitles] == ["caller: a <b> & c --> d e", "agent: next"]
    assert captions.to_text(tricky).splitlines()[0] == "[00:03.00] caller: a <b> & c --> d e"


@pytest.mark.parametrize(("fmt", "content_type"), list(captions.CONTENT_TYPES.items()))
def test_each_format_has_its_registered_media_type(fmt: Format, content_type: str) -> None:
    """JSON, text, SubRip and WebVTT are served as application/json, text/plain, application/x-subrip, text/vtt."""
    expected = {"json": "application/json", "text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
    assert content_type.split(";", maxsplit=1)[0] == expected[fmt]


def spoken(start: float, text: str, *languages: str, said: tuple[str | None, ...] = ()) -> UtteranceRecord:
    """An utterance in `languages` (most words first); `said` gives its words' own languages, one per word (none
    given: words stored before they kept a language)."""
    words: tuple[dict[str, str | None], ...] = (
        tuple({"word": w, "language": language} for w, language in zip(text.split(), said, strict=True))
        if said
        else tuple({"word": w} for w in text.split())
    )
    return UtteranceRecord("inbound", "caller", start, start + 1, text, 0.9, words, "live", languages)


def test_the_calls_language_is_the_one_most_of_its_words_were_spoken_in() -> None:
    """Words that say their language count one each; an utterance whose words do not counts all its words for
    its first language; a tie goes to the first heard; no language said at all is None."""
    english = spoken(0, "one two three", "en", said=("en", "en", "en"))
    spanish = spoken(1, "uno dos", "es", "en", said=("es", "es"))
    assert captions.call_language([english, spanish]) == "en"
    assert captions.call_language([spanish, spoken(2, "tres cuatro", "es")]) == "es"  # 2 said + 2 counted
    assert captions.call_language([spoken(0, "a b", "fr", said=("fr", "de"))]) == "fr"  # a tie
    assert captions.call_language([spoken(0, "hello")]) is None
    assert captions.call_language([]) is None


def test_a_vtt_cue_in_another_language_than_the_calls_is_a_language_span() -> None:
    """Only the cue whose first language differs from the call's is wrapped in `<lang xx>`, inside its voice."""
    utterances = [
        spoken(0, "one two three", "en", said=("en", "en", "en")),
        spoken(2, "uno & dos", "es", "en", said=("es", "en", "es")),
        spoken(4, "four", said=(None,)),
    ]
    vtt = captions.to_vtt(utterances)
    texts = [caption.raw_text for caption in webvtt.from_string(vtt).captions]
    assert texts == ["<v caller>one two three", "<v caller><lang es>uno &amp; dos</lang>", "<v caller>four"]
    assert "<lang" not in captions.to_vtt([spoken(0, "hello"), spoken(1, "hola")])  # no language said: none marked


def test_a_language_tag_that_is_not_one_is_never_written_into_a_cue() -> None:
    """A tag with anything but letters, digits and hyphens would break out of `<lang ...>`: the cue stays plain."""
    english = spoken(0, "one two three", "en", said=("en", "en", "en"))
    odd = spoken(2, "x", "es><c", said=("es><c",))
    assert captions.to_vtt([english, odd]).count("<lang") == 0
    assert "<lang pt-BR>oi</lang>" in captions.to_vtt([english, spoken(2, "oi", "pt-BR", said=("pt-BR",))])


def test_json_keeps_each_utterances_and_each_words_language() -> None:
    """The JSON export: `languages` per utterance, each word with its `language` as stored."""
    [item] = json.loads(captions.to_json([spoken(0, "uno dos", "es", said=("es", "es"))]))
    assert (item["languages"], [w["language"] for w in item["words"]]) == (["es"], ["es", "es"])
