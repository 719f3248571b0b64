"""Deepgram's results on the call's timeline: shifted by the connection's offset, with speakers, and repeats."""

from __future__ import annotations

import pytest

from service.calls.pipeline.timeline import TrackTimeline, repeats_a_final, shifted
from service.stt.events import SttResult, Word

TIMELINE = TrackTimeline(call_sid="CA1", stream_sid="MZ1", track="inbound", speaker="caller", diarize=False)


def result(
    start: float, duration: float, words: tuple[Word, ...] = (), *, is_final: bool = True, text: str = "hello there"
) -> SttResult:
    return SttResult(
        is_final=is_final, speech_final=is_final, from_finalize=False, start=start, duration=duration, text=text,
        confidence=0.9, words=words, request_id="req-1",
    )  # fmt: skip


def word(text: str, start: float, end: float, speaker: int | None = None) -> Word:
    return Word(word=text, start=start, end=end, confidence=0.9, punctuated_word=text.title(), speaker=speaker)


@pytest.mark.parametrize(
    ("start", "duration", "offset_s", "placed"),
    [
        (0.5, 1.0, 0.0, (0.5, 1.5)),  # the first connection starts at the call's start
        (0.5, 1.0, 2.5, (3.0, 4.0)),  # a reconnect 2.5 s into the call: shifted by exactly that
        (0.1234, 0.3333, 0.0, (0.123, 0.457)),  # to the millisecond
        (0.0006, 1.0, 0.000375, (0.001, 1.001)),  # rounded after the shift (before, start would be 0.001375)
    ],
)
def test_a_result_is_placed_on_the_call_timeline(
    start: float, duration: float, offset_s: float, placed: tuple[float, float]
) -> None:
    [transcript] = TIMELINE.transcripts(result(start, duration), offset_s)
    assert (transcript.start, transcript.end) == placed


def test_a_transcript_keeps_the_result_and_says_whose_it_is() -> None:
    [transcript] = TIMELINE.transcripts(result(0.5, 1.0, is_final=False), 0.0)
    assert (transcript.call_sid, transcript.stream_sid, transcript.track, transcript.speaker) == (
        "CA1", "MZ1", "inbound", "caller",
    )  # fmt: skip
    assert (transcript.is_final, transcript.text, transcript.confidence, transcript.request_id) == (
        False, "hello there", 0.9, "req-1",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("offset_s", "times"),
    [
        (0.0, [(0.5, 0.9), (1.0, 1.5)]),  # no offset: the words as Deepgram timed them
        (2.5, [(3.0, 3.4), (3.5, 4.0)]),  # every word moves with the result
        (0.1, [(0.6, 1.0), (1.1, 1.6)]),  # float noise (0.1 + 0.5) is rounded away
    ],
)
def test_words_move_with_their_result(offset_s: float, times: list[tuple[float, float]]) -> None:
    words = (word("hello", 0.5, 0.9), word("there", 1.0, 1.5))
    assert [(w.start, w.end) for w in shifted(words, offset_s)] == times
    assert [w.word for w in shifted(words, offset_s)] == ["hello", "there"]


@pytest.mark.parametrize(
    ("diarize", "is_final", "speakers"),
    [
        (True, True, ["speaker 1", "speaker 2"]),  # a diarized final: one transcript per voice
        (True, False, ["caller"]),  # interims are never split
        (False, True, ["caller"]),  # without diarization (both tracks): the track's speaker
    ],
)
def test_diarized_finals_are_split_by_voice(diarize: bool, is_final: bool, speakers: list[str]) -> None:
    timeline = TrackTimeline(call_sid="CA1", stream_sid="MZ1", track="inbound", speaker="caller", diarize=diarize)
    words = (word("hello", 0.5, 0.9, speaker=0), word("there", 1.0, 1.5, speaker=1))
    transcripts = timeline.transcripts(result(0.5, 1.0, words, is_final=is_final), 2.0)
    assert [t.speaker for t in transcripts] == speakers
    assert transcripts[0].start == 2.5, "split after the shift: each voice on the call's timeline"


@pytest.mark.parametrize(
    ("end_s", "duration_s", "last_final_end_s", "repeats"),
    [
        (1.5, 1.0, 0.0, False),  # the first final
        (3.0, 1.0, 1.5, False),  # the next stretch
        (1.5, 1.0, 1.5, True),  # the same stretch again, replayed after a reconnect
        (1.2, 0.7, 3.0, True),  # part of a stretch already final
        (3.0, 0.0, 3.0, False),  # an empty final covers no audio: nothing repeated
        (3.001, 1.0, 3.0, False),  # a millisecond further is new audio
    ],
)
def test_finals_already_covered_before_a_reconnect(
    end_s: float, duration_s: float, last_final_end_s: float, repeats: bool
) -> None:
    assert repeats_a_final(end_s, duration_s, last_final_end_s) is repeats
