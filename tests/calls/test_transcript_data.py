"""A transcript is turned into data once (`transcript_data`), and every sink takes its shape from that dict.

The sinks are the log line, the live feed event, the stored utterance row and the webhook built from that row.
Each names what it leaves out; every other field must reach it, so a field added to `Transcript` (languages
today, redaction or alerts later) fails these tests until it appears everywhere or a sink says why not.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

from structlog.testing import capture_logs

from service.calls.observers import LOG_LEAVES_OUT, log_transcript
from service.calls.transcript import TRANSCRIPT_FIELDS, Transcript, by_speaker, of_words, transcript_data
from service.live.format import FEED_LEAVES_OUT, transcript_payload
from service.storage.webhook_events import UTTERANCE_LEAVES_OUT, utterance_event
from service.storage.writes import NOT_STORED, UTTERANCES, utterance_write
from service.stt.events import Word, languages_of

T = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def word(text: str, start: float, *, speaker: int | None = None, language: str | None = None) -> Word:
    return Word(text, start, start + 0.25, 0.9, punctuated_word=text.capitalize(), speaker=speaker, language=language)


def transcript(**changes: Any) -> Transcript:
    """A final with a value in every field that differs from its default, so no sink can pass by chance."""
    words = (word("hola", 1.0, speaker=0, language="es"), word("there", 1.5, speaker=1, language="en"))
    values: dict[str, Any] = {
        "call_sid": "CA1", "stream_sid": "MZ1", "track": "inbound", "is_final": True, "speech_final": True,
        "from_finalize": True, "text": "Hola There", "start": 1.0, "end": 1.75, "confidence": 0.91234,
        "words": words, "request_id": "req-1", "batch": True, "speaker": "caller", "languages": ("es", "en"),
    }  # fmt: skip
    values.update(changes)
    return Transcript(**values)


def test_the_data_holds_every_field_of_a_transcript_and_of_its_words() -> None:
    """Every field of Transcript is a key of the data, every Word field a key of each word, all JSON's types."""
    data = transcript_data(transcript())
    assert list(data) == [field.name for field in dataclasses.fields(Transcript)] == list(TRANSCRIPT_FIELDS)
    assert all(set(item) == {field.name for field in dataclasses.fields(Word)} for item in data["words"])
    assert json.loads(json.dumps(data)) == data  # nothing a JSON sink would have to convert
    assert (data["languages"], data["words"][0]["language"]) == (["es", "en"], "es")


def test_a_sink_may_leave_fields_out_and_they_are_not_built() -> None:
    """leave_out drops the named fields and only those."""
    assert set(transcript_data(transcript(), leave_out={"words"})) == set(TRANSCRIPT_FIELDS) - {"words"}


def test_the_log_line_has_every_field_but_the_words() -> None:
    """`transcript` log line: every field of the data except LOG_LEAVES_OUT, confidence to 3 places."""
    with capture_logs() as logs:
        log_transcript(transcript())
    [line] = logs
    assert set(TRANSCRIPT_FIELDS) - LOG_LEAVES_OUT <= set(line)
    assert set(TRANSCRIPT_FIELDS) >= LOG_LEAVES_OUT  # a stale name would hide nothing
    assert (line["confidence"], line["languages"], line["text"]) == (0.912, ["es", "en"], "Hola There")


def test_the_feed_event_has_every_field_but_the_words() -> None:
    """The live feed's transcript event: its type, then every field except FEED_LEAVES_OUT."""
    payload = transcript_payload(transcript())
    assert set(payload) == {"type"} | (set(TRANSCRIPT_FIELDS) - FEED_LEAVES_OUT)
    assert set(TRANSCRIPT_FIELDS) >= FEED_LEAVES_OUT
    assert payload["languages"] == ["es", "en"]


def test_every_field_is_stored_or_says_why_not() -> None:
    """Each field has a column of `utterances`, or a reason in NOT_STORED; the row keeps the stored ones as given."""
    columns = set(UTTERANCES.c.keys())
    assert set(TRANSCRIPT_FIELDS) - set(NOT_STORED) <= columns
    assert set(NOT_STORED) <= set(TRANSCRIPT_FIELDS)
    row = utterance_write(transcript(), speaker="unused", created_at=T).row
    data = transcript_data(transcript())
    assert {name: row[name] for name in set(TRANSCRIPT_FIELDS) - set(NOT_STORED)} == {
        name: data[name] for name in set(TRANSCRIPT_FIELDS) - set(NOT_STORED)
    }
    assert (row["source"], row["key"], row["created_at"]) == ("batch", "CA1/MZ1/inbound/1000", T)


def test_the_webhook_has_every_stored_field_but_the_words() -> None:
    """`utterance.final` carries every column of the stored row except UTTERANCE_LEAVES_OUT."""
    row = utterance_write(transcript(), speaker="unused", created_at=T).row
    event = utterance_event(row, T)
    assert set(event["data"]) == set(row) - UTTERANCE_LEAVES_OUT
    # Measured against the Transcript's own fields, not the row it was built from: a field added to Transcript and
    # stored reaches the webhook unless UTTERANCE_LEAVES_OUT names it.
    assert set(TRANSCRIPT_FIELDS) - set(NOT_STORED) - UTTERANCE_LEAVES_OUT <= set(event["data"])
    assert (event["data"]["languages"], event["data"]["stream_sid"]) == (["es", "en"], "MZ1")


def test_languages_are_most_words_first_and_a_tie_goes_to_the_first_heard() -> None:
    """languages_of counts the words that say their language; () when none does."""
    assert languages_of([word("a", 0, language="en"), word("b", 1, language="es"), word("c", 2, language="es")]) == (
        "es",
        "en",
    )
    assert languages_of([word("a", 0, language="fr"), word("b", 1, language="de")]) == ("fr", "de")
    assert languages_of([word("a", 0), word("b", 1)]) == ()


def test_a_diarized_final_split_by_voice_keeps_each_pieces_languages() -> None:
    """Each voice's piece has its own words' languages; a piece whose words say none keeps the whole's."""
    first, second = by_speaker(transcript())
    assert (first.speaker, first.languages, second.speaker, second.languages) == (
        "speaker 1",
        ("es",),
        "speaker 2",
        ("en",),
    )
    silent = transcript(words=(word("a", 1.0, speaker=0), word("b", 1.5, speaker=1)))
    assert [piece.languages for piece in by_speaker(silent)] == [("es", "en"), ("es", "en")]
    assert of_words(transcript(), transcript().words[1:]).languages == ("en",)
