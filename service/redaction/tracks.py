"""One track's results through the rules (pure, no I/O): a number split across finals is still caught.

An engine ends a final where the speaker pauses, and people pause inside a card number. So a final whose last
words are a number is held (`final` returns nothing for it) until a later final of the track says how the
number goes on: they are read together, and each released with its own part of what was found. Only finals a
number still being said runs through wait: until the number ends, for at most MAX_HELD finals, or until `flush`
(the stream's end) or `release` (the caller's bound on the wait, in time). Interims are never held: an
interim's words are read after the held finals, and every number in it is hidden (`[number]`): an interim is
the words so far, and a number in it may be the start of a card whose end is not said yet. Its final shows it.

It fails closed: should reading ever raise, the results it was reading are released with every word withheld
(`Kind.WITHHELD`), never as they were.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from service.redaction.rules import Context, Kind, Span, find_spans, merged_spans
from service.redaction.spoken import number_runs

R = TypeVar("R")
# The last word of a withheld result's span: every word, however many, without asking the result again (asking
# may be what failed). `apply` and the callers cut a span at the result's last word.
EVERY_WORD = 2**31
MAX_HELD = 4  # finals a number may run through before the oldest goes out as it reads (a bound on the wait)


@dataclass(frozen=True, slots=True)
class Released(Generic[R]):
    """A final, and the spans of its words to redact."""

    result: R
    spans: tuple[Span, ...]


@dataclass(slots=True)
class _Held(Generic[R]):
    """A final waiting for the next, its words, and the spans already found in it (kept: a word redacted once
    stays redacted, whatever a later reading says)."""

    result: R
    words: list[str]
    spans: tuple[Span, ...]


class TrackRedactor(Generic[R]):
    """The redaction of one track's results, in order. `words_of` gives a result's words' texts."""

    def __init__(self, words_of: Callable[[R], Sequence[str]]) -> None:
        self._words_of = words_of
        self._context = Context()
        self._held: list[_Held[R]] = []  # the finals a number still being said runs through, oldest first
        self._tail: Kind | None = None  # the kind of a span the last released final ended in (its continuation)
        self.counts: collections.Counter[Kind] = collections.Counter()  # spans redacted, by kind (never values)

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def final(self, result: R) -> list[Released[R]]:
        """Take the track's next final: what can be released now (held finals, this one, both or none)."""
        try:
            return self._final(result)
        except Exception:  # noqa: BLE001 - fail closed: whatever went wrong, no word goes out unread
            return self._withheld([result])

    def _final(self, result: R) -> list[Released[R]]:
        # Everything that could fail comes first, before the held finals change: a failure withholds them and
        # this one, each once.
        words = list(self._words_of(result))
        joint = [*(word for held in self._held for word in held.words), *words]
        reading = find_spans(joint, self._context)
        runs = number_runs(joint)
        waits_from = runs[-1].first if runs and runs[-1].last == len(joint) - 1 else len(joint)
        self._held.append(_Held(result, words, ()))
        self._keep(reading.spans)
        released: list[Released[R]] = []
        start = 0  # where the oldest held final starts in `joint`
        while self._held and (
            start + len(self._held[0].words) <= waits_from or len(self._held) > MAX_HELD  # said whole, or waited long
        ):
            oldest = self._held.pop(0)
            released.append(self._release(oldest))
            start += len(oldest.words)
        self._context = reading.context_at(start)
        return released

    def release(self) -> list[Released[R]]:
        """The held finals, released as they read (the caller's bound on the wait passed, or the track ended)."""
        if not self._held:
            return []
        try:
            reading = find_spans([word for held in self._held for word in held.words], self._context)
        except Exception:  # noqa: BLE001 - fail closed
            return self._withheld([])
        self._keep(reading.spans)
        released = [self._release(held) for held in self._held]
        self._context = reading.context
        self._held.clear()
        return released

    def _keep(self, spans: Sequence[Span]) -> None:
        """A reading of the held finals' words, in a row: each takes its part of `spans`, the latest reading's kinds
        (it saw more of the number), and keeps every word an earlier reading redacted."""
        start = 0
        for held in self._held:
            held.spans = merged_spans(_part(spans, start, start + len(held.words)), held.spans)
            start += len(held.words)

    def flush(self) -> list[Released[R]]:
        """The track ended: the held finals, if any."""
        return self.release()

    def interim(self, result: R) -> tuple[Span, ...]:
        """The spans to redact in an interim: read after the held finals, every other number in it hidden too (it
        may be a card being read out). Changes nothing: the final will be read again."""
        try:
            return self._interim(list(self._words_of(result)))
        except Exception:  # noqa: BLE001 - fail closed
            return (Span(0, EVERY_WORD, Kind.WITHHELD),)

    def interim_words(self, words: Sequence[str]) -> tuple[Span, ...]:
        """`interim` for words that are no result of the track's (a turn's text so far)."""
        try:
            return self._interim(list(words))
        except Exception:  # noqa: BLE001 - fail closed
            return (Span(0, EVERY_WORD, Kind.WITHHELD),)

    def _interim(self, words: list[str]) -> tuple[Span, ...]:
        held_words = [word for held in self._held for word in held.words]
        cut = len(held_words)
        joint = [*held_words, *words]
        spans = _part(find_spans(joint, self._context).spans, cut, len(joint))
        numbers = [Span(run.first, run.last, Kind.NUMBER) for run in number_runs(joint)]
        return merged_spans(spans, _part(numbers, cut, len(joint)))

    def _release(self, held: _Held[R]) -> Released[R]:
        last_word = len(held.words) - 1
        for span in held.spans:
            continues = span.first == 0 and self._tail is span.kind  # a number's second half: counted once
            if not continues:
                self.counts[span.kind] += 1
        self._tail = next((span.kind for span in held.spans if span.last == last_word), None)
        return Released(held.result, held.spans)

    def _withheld(self, results: list[R]) -> list[Released[R]]:
        released = []
        for result in [*(held.result for held in self._held), *results]:
            self.counts[Kind.WITHHELD] += 1
            released.append(Released(result, (Span(0, EVERY_WORD, Kind.WITHHELD),)))
        self._held.clear()
        self._tail = None
        return released


def _part(spans: Sequence[Span], start: int, end: int) -> tuple[Span, ...]:
    """The spans within words `start`..`end - 1`, cut there and renumbered from 0."""
    cut = []
    for span in spans:
        first, last = max(span.first, start), min(span.last, end - 1)
        if first <= last:
            cut.append(Span(first - start, last - start, span.kind))
    return tuple(cut)


def apply(words: Sequence[str], spans: Sequence[Span]) -> list[str]:
    """The words with each span replaced by its marker (one word per span): what a transcript's text becomes."""
    out: list[str] = []
    index = 0
    for span in sorted(spans, key=lambda s: s.first):
        out.extend(words[index : span.first])
        out.append(span.kind.marker)
        index = span.last + 1
    out.extend(words[index:])
    return out
