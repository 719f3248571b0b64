"""Protocol layer (pure): one stream's transcripts on the call's timeline, cut where another stream takes over.

A hand-over (`calls/handover/passing.py`) runs two streams of one call side by side for a moment: the old one, in the
process that is stopping, and the new one, in the process that took the call. Each stream's media timestamps
start at 0, so each stream's results are first moved by where the stream started on the call's timeline
(`offset_s`: wall-clock time at its start, less the call's first stream's). Then the overlap is cut by time, at
one instant both processes compute alike (`cut_s`, from the new stream's start as the database recorded it): a
word belongs to the old stream when its midpoint is before the cut, to the new one otherwise. A word spoken
across the cut is whole in both streams (the cut lies well inside the overlap) and lands on the same side in
both, so every word is kept exactly once.

Nothing is emitted that a later decision could take back. The old stream, once it asked for the new one, holds
the words past that moment until it knows the cut (`hold_from`, then `cut_after`); the new stream holds all its
words until the old stream has finished (`release`), so that across the two processes the words are logged,
stored and delivered in the order they were spoken. Interim results are not emitted while anything is held:
they would show words that may be cut.
"""

from __future__ import annotations

import dataclasses
import math

from service.calls.pipeline.timeline import shifted
from service.calls.transcript import Transcript, of_words


def placed(transcript: Transcript, offset_s: float) -> Transcript:
    """`transcript`, timed on its stream, moved to the call's timeline (the stream starts `offset_s` into it)."""
    if not offset_s:
        return transcript
    return dataclasses.replace(
        transcript,
        start=round(transcript.start + offset_s, 3),
        end=round(transcript.end + offset_s, 3),
        words=shifted(transcript.words, offset_s),
    )


def within(transcript: Transcript, lower_s: float, upper_s: float) -> Transcript | None:
    """The words of `transcript` whose midpoint is in [lower_s, upper_s), as a transcript; None if none is.

    A transcript without words (a final whose text Deepgram gave no word timings for) goes by its own midpoint.
    """
    words = transcript.words
    if not words:
        return transcript if lower_s <= (transcript.start + transcript.end) / 2 < upper_s else None
    kept = tuple(word for word in words if lower_s <= (word.start + word.end) / 2 < upper_s)
    if len(kept) == len(words):
        return transcript
    if not kept:
        return None
    return of_words(transcript, kept)


class StreamShare:
    """Which of one stream's transcripts the call keeps, and when they may go out.

    Fed with every result of the stream (`offer`), it returns what to emit now, on the call's timeline. A stream
    that is alone on its call emits everything at once.
    """

    def __init__(self, offset_s: float = 0.0) -> None:
        self.offset_s = offset_s
        self.lower_s = -math.inf  # words before this belong to the stream this one took over from
        self.upper_s = math.inf  # words from this one on belong to the stream that takes over from this one
        self._hold_from = math.inf  # words from this one on wait: where the cut will be is not known yet
        self._held: list[Transcript] = []
        self.cut_ms = 0  # audio, in ms of word time, this stream transcribed and the cut left to the other one

    @classmethod
    def taking_over(cls, offset_s: float, cut_s: float) -> StreamShare:
        """A hand-over's new stream: it keeps the words from `cut_s` on, and holds them all until `release`."""
        share = cls(offset_s)
        share.lower_s = cut_s
        share._hold_from = -math.inf
        return share

    @property
    def holding(self) -> bool:
        return self._hold_from != math.inf

    def offer(self, transcript: Transcript) -> list[Transcript]:
        """One result of the stream: what of it to emit now."""
        placed_here = placed(transcript, self.offset_s)
        if not transcript.is_final:
            kept = None if self.holding else within(placed_here, self.lower_s, self.upper_s)
            return [kept] if kept is not None else []
        kept = self._kept(placed_here)
        if kept is None:
            return []
        now = within(kept, -math.inf, self._hold_from)
        later = within(kept, self._hold_from, math.inf)
        if later is not None:
            self._held.append(later)
        return [now] if now is not None else []

    def hold_from(self, at_s: float) -> None:
        """The old stream asked for a new one at `at_s` on the call's timeline: no word from then on goes out yet."""
        self._hold_from = min(self._hold_from, at_s)

    def cut_after(self, cut_s: float) -> list[Transcript]:
        """The new stream takes the words from `cut_s` on: the held words before it, to emit now."""
        self.upper_s = cut_s
        return self.release()

    def release(self) -> list[Transcript]:
        """Nothing more to wait for: the held words this stream keeps, to emit now, in order."""
        self._hold_from = math.inf
        held, self._held = self._held, []
        return [kept for transcript in held if (kept := self._kept(transcript)) is not None]

    def _kept(self, transcript: Transcript) -> Transcript | None:
        kept = within(transcript, self.lower_s, self.upper_s)
        dropped = sum(word.end - word.start for word in transcript.words) - (
            sum(word.end - word.start for word in kept.words) if kept is not None else 0.0
        )
        if transcript.words and dropped > 0:
            self.cut_ms += round(dropped * 1000)
        return kept
