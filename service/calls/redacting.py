"""REDACT: every transcript redacted in one place, before any observer sees it.

`RedactingObserver` stands in front of the fan-out (`web/runtime.py`), so the log line, the database (and from
it the search index, the webhooks, the exports and the analysis), the live feed and Redis all receive the same
redacted words; nothing downstream ever holds the original. The rules are `service/redaction/`'s, one
`TrackRedactor` per track of each stream: a final that ends in a number waits for the track's next final (at
most HOLD_S, then it goes as it reads) so that a card read across a pause is caught in both; the stream's end
lets every held final go first. A redacted span becomes one word, its marker (`[card]`), with the span's timing.

Batch transcripts (`spool/worker.py`) come an entry at a time, with nothing after them to wait for: each is read
in its track's context and released at once. What was redacted is counted by kind into the stream's `call.ended`
summary (`redacted`), never the values.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import TypeVar

from service.calls.coverage import Outcome
from service.calls.events import CallEnded, CallObserver, CallStarted, CallStateChanged, TurnChanged
from service.calls.transcript import Transcript
from service.redaction.rules import Span
from service.redaction.tracks import Released, TrackRedactor
from service.stt.events import Word

T = TypeVar("T")
HOLD_S = 2.0  # how long a final that ends in a number waits for the track's next (people pause inside a card)
MAX_BATCH_TRACKS = 64  # batch tracks whose context (a card's words, just said) is kept for their next entry
_Key = tuple[str, str, bool]  # stream, track, batch


def words_of(transcript: Transcript) -> list[str]:
    """What the rules read: each word as it is shown, or the text's words when the engine gave none."""
    if transcript.words:
        return [word.punctuated_word or word.word for word in transcript.words]
    return transcript.text.split()


def redacted(transcript: Transcript, spans: Sequence[Span]) -> Transcript:
    """`transcript` with each span of its words replaced by one word, the span's marker, timed as the span."""
    if not spans:
        return transcript
    if not transcript.words:
        shown = _replaced(transcript.text.split(), spans, lambda first, last, marker: marker)
        return dataclasses.replace(transcript, text=" ".join(shown))
    words = transcript.words

    def marker_word(first: int, last: int, marker: str) -> Word:
        return dataclasses.replace(
            words[first], word=marker, punctuated_word=marker, end=words[last].end,
            confidence=min(word.confidence for word in words[first : last + 1]),
        )  # fmt: skip

    kept = tuple(_replaced(list(words), spans, marker_word))
    return dataclasses.replace(
        transcript, words=kept, text=" ".join(word.punctuated_word or word.word for word in kept)
    )


def _replaced(items: list[T], spans: Sequence[Span], make: Callable[[int, int, str], T]) -> list[T]:
    out: list[T] = []
    index = 0
    last_index = len(items) - 1
    for span in sorted(spans, key=lambda s: s.first):
        if span.first > last_index:
            break
        last = min(span.last, last_index)  # a withheld span covers every word, however many
        out.extend(items[index : span.first])
        out.append(make(span.first, last, span.kind.marker))
        index = last + 1
    out.extend(items[index:])
    return out


class RedactingObserver:
    """Every call event to `inner`, each transcript (and turn's text) redacted first."""

    def __init__(self, inner: CallObserver, *, hold_s: float = HOLD_S) -> None:
        self._inner = inner
        self._hold_s = hold_s
        self._tracks: dict[_Key, TrackRedactor[Transcript]] = {}
        self._timers: dict[_Key, asyncio.TimerHandle] = {}

    def call_started(self, event: CallStarted) -> None:
        self._inner.call_started(event)

    def call_state(self, event: CallStateChanged) -> None:
        self._inner.call_state(event)

    def spool_outcome(self, outcome: Outcome) -> None:
        self._inner.spool_outcome(outcome)  # seconds and a reason: no words to redact

    def transcript(self, transcript: Transcript) -> None:
        key = (transcript.stream_sid, transcript.track, transcript.batch)
        redactor = self._tracks.get(key)
        if redactor is None:
            redactor = self._tracks[key] = TrackRedactor(words_of)
            self._forget_old_batches()
        if not transcript.is_final:
            self._inner.transcript(redacted(transcript, redactor.interim(transcript)))
            return
        self._send(redactor.final(transcript))
        if transcript.batch:
            self._send(redactor.release())  # nothing after it to wait for (module docstring)
        elif redactor.holding:
            self._wait(key, redactor)
        else:
            self._cancel(key)

    def turn(self, event: TurnChanged) -> None:
        """A turn's text so far, read like an interim after its track's held finals."""
        redactor = self._tracks.get((event.stream_sid, event.track, False)) or TrackRedactor(words_of)
        words = event.text.split()
        spans = redactor.interim_words(words)
        text = " ".join(_replaced(words, spans, lambda first, last, marker: marker))
        self._inner.turn(dataclasses.replace(event, text=text))

    def call_ended(self, event: CallEnded) -> None:
        """The stream ended: its held finals go first, then its end with what was redacted, by kind."""
        counts: collections.Counter[str] = collections.Counter()
        for key in [key for key in self._tracks if key[0] == event.stream_sid and not key[2]]:
            self._cancel(key)
            redactor = self._tracks.pop(key)
            self._send(redactor.flush())
            counts.update({str(kind): count for kind, count in redactor.counts.items()})
        summary = {**event.summary, "redacted": dict(sorted(counts.items()))}
        self._inner.call_ended(dataclasses.replace(event, summary=summary))

    def flush(self) -> None:
        """The process is stopping: every held final goes now (the stream's end will not come here)."""
        for key, redactor in self._tracks.items():
            self._cancel(key)
            self._send(redactor.flush())

    def _forget_old_batches(self) -> None:
        """A batch's tracks end nowhere (no `call.ended` follows them): past MAX_BATCH_TRACKS the oldest go (only
        their context: they hold nothing)."""
        batches = [key for key in self._tracks if key[2]]
        for key in batches[: max(len(batches) - MAX_BATCH_TRACKS, 0)]:
            del self._tracks[key]

    def _send(self, released: list[Released[Transcript]]) -> None:
        for item in released:
            self._inner.transcript(redacted(item.result, item.spans))

    def _wait(self, key: _Key, redactor: TrackRedactor[Transcript]) -> None:
        """A held final goes as it reads after HOLD_S, if no final of its track came to decide it sooner."""
        self._cancel(key)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the stream's end or `flush` lets it go
            return
        self._timers[key] = loop.call_later(self._hold_s, self._waited, key, redactor)

    def _waited(self, key: _Key, redactor: TrackRedactor[Transcript]) -> None:
        self._timers.pop(key, None)
        self._send(redactor.release())

    def _cancel(self, key: _Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
