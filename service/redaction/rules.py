"""What is redacted (pure, no I/O): card numbers, social security numbers, and a card's security code and expiry.

The rules read a result's words through `spoken.number_runs`, so a number counts the same written or said:

- **card**: 13 to 19 digits that pass the Luhn check, anywhere in a run (a run may hold a card and its expiry
  and code said in one breath); or, with card words near ("card", "visa", "credit" ...), any run of 13 or more
  digits, Luhn or not (a misheard digit must not let a card through).
- **ssn**: 9 digits grouped 3-2-4 as written or said ("123-45-6789", "123 45 6789"), or any 9 digits with
  "social security" or "SSN" near.
- **cvv** and **expiry**: after a card, within `AFTER_CARD_WORDS` words (also in the next result), any number of 2
  to 4 digits: an expiry when it reads as a month and a year, else a code; and the same after their own words
  ("security code", "expiry") without a card.

Near misses stay: order numbers under 13 digits, times, amounts, phone numbers (10 or 11 digits). What the rules
cannot see (a number spelt out with "and" between its parts, a card read with other words between its groups)
is listed in docs/compliance.md.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from service.redaction.spoken import Run, normalize, number_runs

CARD_DIGITS = range(13, 20)
# The lengths a card is looked for in, commonest first (Visa and Mastercard 16, Amex 15), so the window chosen at a
# group's start is the card and not the card with its expiry's first digits.
CARD_LENGTHS = (16, 15, 19, 14, 13, 17, 18)
CONTEXT_WORDS = 12  # how far back a card's or an SSN's words count as near
AFTER_CARD_WORDS = 25  # how far after a card its expiry and code are looked for
CARD_CONTEXT = frozenset({
    "card", "cards", "visa", "mastercard", "amex", "american", "discover", "credit", "debit", "pan", "maestro",
})  # fmt: skip
SSN_CONTEXT = frozenset({"ssn", "social", "security"})  # "social security (number)"; "security code" is below
CODE_CONTEXT = frozenset({"cvv", "cvc", "cvv2", "csc", "code", "expiry", "expiration", "expires", "exp"})


class Kind(enum.StrEnum):
    """What a redacted span was; its marker is `[kind]`."""

    CARD = "card"
    SSN = "ssn"
    CVV = "cvv"
    EXPIRY = "expiry"
    NUMBER = "number"  # an interim's number still being said, long enough to be the start of a card
    WITHHELD = "withheld"  # the redactor failed on this result: all of it held back (fail closed)

    @property
    def marker(self) -> str:
        return f"[{self}]"


@dataclass(frozen=True, slots=True)
class Span:
    """Words `first`..`last` (inclusive) of a result are one redacted `kind`."""

    first: int
    last: int
    kind: Kind


@dataclass(frozen=True, slots=True)
class Context:
    """What came before the words being read: the last words said (normalized), and how many words ago a card
    was (None: none within AFTER_CARD_WORDS)."""

    recent: tuple[str, ...] = ()
    words_since_card: int | None = None


def luhn_valid(digits: str) -> bool:
    """The Luhn check every payment card number passes."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _near(words: Sequence[str], before: int, vocabulary: frozenset[str]) -> bool:
    return any(word in vocabulary for word in words[max(0, before - CONTEXT_WORDS) : before])


def _words_span(run: Run, first_digit: int, end_digit: int, kind: Kind) -> Span:
    """The words that gave digits `first_digit`..`end_digit - 1` of `run`."""
    return Span(run.owners[first_digit][0], run.owners[end_digit - 1][1], kind)


def _group_starts(run: Run) -> list[int]:
    """Where each digit group of the run starts, as a digit index: a card is looked for from a group's start."""
    starts, at = [], 0
    for size in run.groups:
        starts.append(at)
        at += size
    return starts


def _card_in(run: Run) -> tuple[int, int] | None:
    """The digits of a Luhn-valid card in `run`, from the first group's start that begins one."""
    for start in _group_starts(run):
        for length in CARD_LENGTHS:
            end = start + length
            if end <= len(run.digits) and luhn_valid(run.digits[start:end]):
                return start, end
    return None


def _ssn_in(run: Run, ssn_near: bool) -> tuple[int, int] | None:
    """The digits of a social security number in `run`: grouped 3-2-4, or 9 digits with its words near."""
    starts = _group_starts(run)
    for index in range(len(run.groups) - 2):
        if run.groups[index : index + 3] == (3, 2, 4):
            return starts[index], starts[index] + 9
    if ssn_near and len(run.digits) == 9:
        return 0, 9
    return None


def _code_kind(digits: str, said_before: Sequence[str]) -> Kind:
    """A number said after a card: what its own words call it ("expires", "code"), else its expiry when it reads
    as a month and a year (0426, 042026), else its code. Either way it is redacted; this only names it."""
    if any(word.startswith("exp") for word in said_before):
        return Kind.EXPIRY
    if any(word in ("cvv", "cvc", "cvv2", "csc", "code") for word in said_before):
        return Kind.CVV
    if len(digits) in (4, 6) and 1 <= int(digits[:2]) <= 12:
        return Kind.EXPIRY
    return Kind.CVV


@dataclass(frozen=True, slots=True)
class Reading:
    """The spans of some words to redact, and where the cards among them ended (for `context_at`)."""

    spans: tuple[Span, ...]
    words: tuple[str, ...]  # normalized, the context's recent words first
    offset: int  # how many of `words` came from the context
    card_ends: tuple[int, ...]  # the word (of the words read, not the context) each card ended at
    since_card_before: int | None

    def context_at(self, cut: int) -> Context:
        """The context for what follows the first `cut` words read: a card that ends past the cut has just been
        said (its code may follow), one before it `cut - 1 - end` words ago."""
        recent = tuple(self.words[: self.offset + cut][-CONTEXT_WORDS:])
        ends = [end for end in self.card_ends if end < cut]
        if any(end >= cut for end in self.card_ends):
            since: int | None = 0
        elif ends:
            since = cut - 1 - max(ends)
        else:
            since = None if self.since_card_before is None else self.since_card_before + cut
        return Context(recent, since if since is not None and since <= AFTER_CARD_WORDS else None)

    @property
    def context(self) -> Context:
        """The context for what follows all the words read."""
        return self.context_at(len(self.words) - self.offset)


def find_spans(words: Sequence[str], context: Context = Context()) -> Reading:
    """The spans of `words` to redact, read after `context`."""
    normalized = [*context.recent, *(normalize(word) for word in words)]
    offset = len(context.recent)
    spans: list[Span] = []
    card_ends: list[int] = []
    since_card = context.words_since_card
    for run in number_runs(words):
        at = run.first + offset
        card_near = _near(normalized, at, CARD_CONTEXT)
        if card_ends:
            after_card = run.first - card_ends[-1] <= AFTER_CARD_WORDS
        else:
            after_card = since_card is not None and since_card + run.first <= AFTER_CARD_WORDS
        found_card = _card_in(run)
        if found_card is None and card_near and len(run.digits) >= CARD_DIGITS.start:
            found_card = (0, len(run.digits))
        if found_card is None:
            spans.extend(_rest(run, len(run.digits), after_card=after_card, said_before=normalized[:at]))
            continue
        start, end = found_card
        if start > 0:
            spans.extend(_rest(run, start, after_card=after_card, said_before=normalized[:at]))
        spans.append(_words_span(run, start, end, Kind.CARD))
        card_ends.append(run.owners[end - 1][1])
        if end < len(run.digits):  # its expiry and code, said in the same breath: all of it goes
            spans.extend(_after_card(run, end))
    return Reading(merged_spans(spans), tuple(normalized), offset, tuple(card_ends), since_card)


def _rest(run: Run, end: int, *, after_card: bool, said_before: Sequence[str]) -> list[Span]:
    """The first `end` digits of a run, which hold no card: an SSN, or a card's expiry or code."""
    digits = run.digits[:end]
    sub = Run(run.first, run.last, digits, run.owners[:end], _groups_between(run, 0, end))
    at = len(said_before)
    ssn = _ssn_in(sub, _near(said_before, at, SSN_CONTEXT) and not _near(said_before, at, frozenset({"code"})))
    if ssn is not None:
        return [_words_span(sub, *ssn, Kind.SSN)]
    code_near = _near(said_before, at, CODE_CONTEXT)
    if (after_card or code_near) and 2 <= len(digits) <= 6:  # a code (3-4) or an expiry (2-6)
        return [_words_span(sub, 0, len(digits), _code_kind(digits, said_before[-4:]))]
    return []


def _after_card(run: Run, start: int) -> list[Span]:
    """The rest of a run a card started, whatever its length (fail closed): an expiry when its first groups read
    as a month and a year, and the code after it."""
    groups = _groups_between(run, start, len(run.digits))
    digits = run.digits[start:]
    expiry_digits = 0
    for size in groups:
        if expiry_digits + size > 4:
            break
        expiry_digits += size
    if expiry_digits == 4 and 1 <= int(digits[:2]) <= 12 and len(digits) > 4:
        cut = start + expiry_digits
        return [_words_span(run, start, cut, Kind.EXPIRY), _words_span(run, cut, len(run.digits), Kind.CVV)]
    return [_words_span(run, start, len(run.digits), _code_kind(digits, ()))]


def _groups_between(run: Run, start: int, end: int) -> tuple[int, ...]:
    """The run's digit groups cut to digits `start`..`end`."""
    groups, at = [], 0
    for size in run.groups:
        low, high = max(at, start), min(at + size, end)
        if high > low:
            groups.append(high - low)
        at += size
    return tuple(groups)


def merged_spans(spans: Sequence[Span], earlier: Sequence[Span] = ()) -> tuple[Span, ...]:
    """`spans` in word order, those sharing a word joined (a word that gave digits to a card and to its code is one
    marker: the card's); the words `earlier` spans redacted stay redacted, under `spans`' kind where they meet."""
    ranked = sorted([(span, 0) for span in spans] + [(span, 1) for span in earlier], key=lambda s: (s[0].first, s[1]))
    merged: list[tuple[Span, int]] = []
    for span, rank in ranked:
        if merged and span.first <= merged[-1][0].last:
            last, last_rank = merged[-1]
            kind = last.kind if last_rank <= rank else span.kind
            merged[-1] = (Span(last.first, max(last.last, span.last), kind), min(last_rank, rank))
        else:
            merged.append((span, rank))
    return tuple(span for span, _ in merged)
