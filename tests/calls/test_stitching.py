"""Two streams of one call stitched: each placed at its offset, the overlap cut by word midpoints, held words."""

from __future__ import annotations

import math

import pytest

from service.calls.handover.stitching import StreamShare, placed, within
from service.calls.transcript import Transcript
from service.stt.events import Word


def word(text: str, start: float, end: float) -> Word:
    return Word(word=text, start=start, end=end, confidence=0.8, punctuated_word=text.title())


def final(*words: Word, is_final: bool = True, text: str | None = None) -> Transcript:
    return Transcript(
        call_sid="CA1", stream_sid="MZ1", track="inbound", is_final=is_final, speech_final=is_final,
        from_finalize=False, text=text if text is not None else " ".join(w.punctuated_word or w.word for w in words),
        start=words[0].start if words else 0.0, end=words[-1].end if words else 1.0, confidence=0.9, words=words,
        request_id="req-1", speaker="caller",
    )  # fmt: skip


def texts(transcripts: list[Transcript]) -> list[str]:
    return [t.text for t in transcripts]


THREE = final(word("one", 0.0, 0.5), word("two", 0.5, 1.0), word("three", 1.0, 1.5))


def test_placed_moves_the_transcript_and_its_words_to_the_call_timeline() -> None:
    """A stream that starts 2.25 s into the call has its times moved by exactly that."""
    moved = placed(THREE, 2.25)
    assert (moved.start, moved.end) == (2.25, 3.75)
    assert [(w.start, w.end) for w in moved.words] == [(2.25, 2.75), (2.75, 3.25), (3.25, 3.75)]
    assert placed(THREE, 0.0) is THREE


@pytest.mark.parametrize(
    ("lower", "upper", "kept"),
    [
        (-math.inf, math.inf, "One Two Three"),
        (-math.inf, 0.75, "One"),  # "two" is centred on 0.75: not before 0.75
        (0.75, math.inf, "Two Three"),  # the midpoint decides, inclusive below
        (0.3, 1.2, "Two"),
        (2.0, 3.0, None),
    ],
)
def test_within_keeps_the_words_whose_midpoint_is_inside(lower: float, upper: float, kept: str | None) -> None:
    """Words go by their midpoint, [lower, upper): a word is on exactly one side of any cut."""
    result = within(THREE, lower, upper)
    assert (result.text if result is not None else None) == kept


def test_a_cut_transcript_is_rebuilt_from_its_words() -> None:
    """Text, times and confidence come from the words that stay; an uncut one is the same object."""
    cut = within(THREE, 0.75, math.inf)
    assert cut is not None
    assert (cut.text, cut.start, cut.end, cut.confidence) == ("Two Three", 0.5, 1.5, 0.8)
    assert within(THREE, -math.inf, math.inf) is THREE


def test_a_transcript_without_words_goes_by_its_own_midpoint() -> None:
    """No word timings: the whole transcript is on the side of its midpoint (0.5 here)."""
    bare = final(text="hello")
    assert within(bare, 0.0, 0.6) is bare
    assert within(bare, 0.6, 2.0) is None


def test_a_stream_alone_on_its_call_emits_everything_at_once() -> None:
    """No hand-over: finals and interims go straight out, placed at the stream's offset."""
    share = StreamShare(1.0)
    assert [t.start for t in share.offer(THREE)] == [1.0]
    assert texts(share.offer(final(word("hi", 0.0, 0.5), is_final=False))) == ["Hi"]
    assert share.cut_ms == 0


def test_the_old_stream_holds_words_after_asking_then_keeps_those_before_the_cut() -> None:
    """After asking for the new stream at 0.75 s, later words wait; the cut at 1.25 s lets out those before it,
    drops the rest (counted), and drops anything after it that comes later."""
    share = StreamShare()
    share.hold_from(0.75)
    assert texts(share.offer(THREE)) == ["One"]
    assert share.offer(final(word("maybe", 0.5, 1.0), is_final=False)) == []  # no interims while holding
    assert texts(share.cut_after(1.25)) == ["Two"]
    assert share.cut_ms == 500
    assert share.offer(final(word("four", 1.5, 2.0))) == []
    assert texts(share.offer(final(word("late", 1.0, 1.2), is_final=False))) == ["Late"]  # before the cut


def test_an_old_stream_no_one_took_over_lets_out_every_held_word() -> None:
    """A hand-over that failed: `release` gives back all the held words, in order, and holds nothing more."""
    share = StreamShare()
    share.hold_from(0.0)
    assert share.offer(THREE) == []
    assert share.offer(final(word("four", 1.5, 2.0))) == []
    assert texts(share.release()) == ["One Two Three", "Four"]
    assert texts(share.offer(final(word("five", 2.0, 2.5)))) == ["Five"]


def test_the_new_stream_keeps_words_from_the_cut_and_holds_them_until_released() -> None:
    """A new stream at 2.0 s with its cut at 3.0 s: on the call's timeline, words before 3.0 s are the old stream's;
    the rest wait until the old stream has ended, then go out in order."""
    share = StreamShare.taking_over(2.0, 3.0)
    assert share.holding
    assert share.offer(THREE) == []  # 2.0-3.5 on the call: "three" (3.0-3.5) is kept, held
    assert share.offer(final(word("hi", 1.5, 2.0), is_final=False)) == []
    assert share.offer(final(word("four", 1.5, 2.0))) == []
    released = share.release()
    assert texts(released) == ["Three", "Four"]
    assert [(t.start, t.end) for t in released] == [(3.0, 3.5), (3.5, 4.0)]
    assert share.cut_ms == 1000
    assert texts(share.offer(final(word("five", 2.0, 2.5)))) == ["Five"]
    assert not share.holding


def test_a_final_that_the_cut_leaves_nothing_of_is_not_emitted() -> None:
    """Every word before the new stream's cut: nothing goes out, not even an empty transcript."""
    share = StreamShare.taking_over(0.0, 5.0)
    assert share.offer(THREE) == []
    assert share.release() == []
