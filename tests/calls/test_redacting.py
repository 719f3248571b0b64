"""RedactingObserver: what every observer behind it receives, with REDACT on."""

from __future__ import annotations

import datetime
from typing import Any

from service.calls.coverage import Outcome
from service.calls.events import CallEnded, CallStarted, CallStateChanged, TurnChanged
from service.calls.redacting import RedactingObserver, redacted
from service.calls.transcript import Transcript
from service.redaction.rules import Kind, Span
from service.redaction.tracks import EVERY_WORD
from service.stt.events import Word
from tests.helpers.waiting import eventually

NOW = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def call_started(self, event: CallStarted) -> None:
        self.events.append(event)

    def transcript(self, transcript: Transcript) -> None:
        self.events.append(transcript)

    def call_state(self, event: CallStateChanged) -> None:
        self.events.append(event)

    def turn(self, event: TurnChanged) -> None:
        self.events.append(event)

    def spool_outcome(self, outcome: Outcome) -> None:
        self.events.append(outcome)

    def call_ended(self, event: CallEnded) -> None:
        self.events.append(event)

    def texts(self) -> list[str]:
        return [event.text for event in self.events if isinstance(event, Transcript)]


def result(
    text: str, *, start: float = 0.0, final: bool = True, batch: bool = False, track: str = "inbound"
) -> Transcript:
    words = tuple(
        Word(
            word=w.lower(),
            start=start + i * 0.5,
            end=start + i * 0.5 + 0.4,
            confidence=0.9 - i / 100,
            punctuated_word=w,
        )
        for i, w in enumerate(text.split())
    )
    return Transcript(
        call_sid="CA1", stream_sid="MZ1", track=track, is_final=final, speech_final=final, from_finalize=False,
        text=text, start=start, end=words[-1].end if words else start, confidence=0.9, words=words, request_id="r",
        batch=batch,
    )  # fmt: skip


def ended() -> CallEnded:
    return CallEnded(
        call_sid="CA1", stream_sid="MZ1", ended_at=NOW, ended_by="stop", deepgram_request_ids=(),
        audio_s_by_track={}, summary={"finals": 3},
    )  # fmt: skip


def test_a_redacted_span_is_one_word_timed_as_the_span() -> None:
    original = result("card 4111 1111 1111 1111 thanks")
    out = redacted(original, [Span(1, 4, Kind.CARD)])
    assert out.text == "card [card] thanks"
    marker = out.words[1]
    assert (marker.word, marker.punctuated_word, marker.start, marker.end) == ("[card]", "[card]", 0.5, 2.4)
    assert marker.confidence == min(word.confidence for word in original.words[1:5])
    assert (out.start, out.end) == (original.start, original.end)


def test_a_withheld_result_keeps_no_word() -> None:
    out = redacted(result("card 4111 ok"), [Span(0, EVERY_WORD, Kind.WITHHELD)])
    assert (out.text, [word.word for word in out.words]) == ("[withheld]", ["[withheld]"])


def test_a_result_without_words_is_redacted_in_its_text() -> None:
    original = result("x")
    bare = Transcript(
        **{
            **{f: getattr(original, f) for f in original.__dataclass_fields__},
            "words": (),
            "text": "it is 4111111111111111",
        }
    )
    assert redacted(bare, [Span(2, 2, Kind.CARD)]).text == "it is [card]"


def test_a_held_final_goes_when_its_stream_ends_with_the_counts() -> None:
    inner = Recorder()
    observer = RedactingObserver(inner)
    observer.transcript(result("my card is four one one one one one one one"))
    assert inner.texts() == [], "held: the number may go on in the next final"
    observer.transcript(result("one one one one one one one one", start=6.0))
    assert inner.texts() == [], "the number runs on into the second: both wait"
    observer.call_ended(ended())
    assert inner.texts() == ["my card is [card]", "[card]"]
    [end] = [event for event in inner.events if isinstance(event, CallEnded)]
    assert end.summary == {"finals": 3, "redacted": {"card": 1}}


async def test_a_held_final_goes_as_it_reads_after_hold_s() -> None:
    inner = Recorder()
    observer = RedactingObserver(inner, hold_s=0.01)
    observer.transcript(result("see you at five"))
    assert inner.texts() == []
    await eventually(inner.texts, timeout=5)
    assert inner.texts() == ["see you at five"]


async def test_a_final_that_decides_cancels_the_wait() -> None:
    inner = Recorder()
    observer = RedactingObserver(inner, hold_s=0.01)
    observer.transcript(result("see you at five"))
    observer.transcript(result("ok bye", start=3.0))
    assert inner.texts() == ["see you at five", "ok bye"]
    # A later held final's wait ends after the cancelled one would have: by then a second release would show.
    observer.transcript(result("call me at six", start=5.0))
    await eventually(lambda: len(inner.texts()) == 3, timeout=5)
    assert inner.texts() == ["see you at five", "ok bye", "call me at six"]


def test_batch_finals_go_at_once_read_in_their_tracks_context() -> None:
    inner = Recorder()
    observer = RedactingObserver(inner)
    observer.transcript(result("card 4111111111111111", batch=True))
    observer.transcript(result("code 123", batch=True, start=5.0))
    assert inner.texts() == ["card [card]", "code [cvv]"]


def test_interims_and_turns_hide_numbers() -> None:
    inner = Recorder()
    observer = RedactingObserver(inner)
    observer.transcript(result("my card is four one one", final=False))
    observer.turn(
        TurnChanged(call_sid="CA1", stream_sid="MZ1", track="inbound", moment="turn.eager_end", turn_index=0,
                    text="my card is four one one", start=0.0, end=1.0)
    )  # fmt: skip
    assert inner.texts() == ["my card is [number]"]
    [turn] = [event for event in inner.events if isinstance(event, TurnChanged)]
    assert turn.text == "my card is [number]"


def test_flush_lets_every_held_final_go() -> None:
    inner = Recorder()
    observer = RedactingObserver(inner)
    observer.transcript(result("at five"))
    observer.transcript(result("at six", track="outbound"))
    observer.flush()
    assert sorted(inner.texts()) == ["at five", "at six"]


def test_a_spool_outcome_goes_through_as_it_is() -> None:
    inner = Recorder()
    outcome = Outcome(call_sid="CA1", stream_sid="MZ1", track="inbound", entry_id="e1")
    RedactingObserver(inner).spool_outcome(outcome)
    assert inner.events == [outcome]
