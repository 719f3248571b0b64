"""Numbers as people say them and engines write them (pure, no I/O): a run of words read back as its digits.

A card number reaches a transcript in many shapes: `4111 1111 1111 1111`, `4111-1111-1111-1111`, "four one one
one ...", "four oh double one ...", "forty one eleven ...", "four thousand one hundred eleven", or a mix, with
"uh" in the middle. `number_runs` finds every maximal run of number words among a result's words and reads each
as one digit string, remembering which word gave which digits, so a rule can redact exactly the words that
carried a number. Whatever is not a number word ends a run; fillers ("uh", "um") and spoken separators ("dash")
inside a run are kept in it, never at its ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

UNITS = {
    "zero": 0, "oh": 0, "o": 0, "nought": 0, "naught": 0, "nil": 0,
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
        "ninety": 90}  # fmt: skip
REPEATS = {"double": 2, "triple": 3}
# Inside a run only: what people say between the digits of one number.
INSIDE = frozenset({"uh", "um", "er", "erm", "ah", "hmm", "dash", "hyphen", "-", "/", "slash", "space"})
_SEPARATORS = "-./ \u2013\u2014"
_STRIP = "\"'`()[]{}<>,;:!?.*#+"


def normalize(word: str) -> str:
    """A word as the rules compare it: lower case, without the punctuation around it."""
    return word.strip().lower().strip(_STRIP)


def digit_groups(word: str) -> tuple[str, ...] | None:
    """A written number's digit groups (`4111-1111` -> ("4111", "1111"), `12/25` -> ("12", "25"), `$1,234` is not
    a run of digits but an amount: None); None when the word is not written in digits."""
    text = normalize(word)
    if not text or not text[0].isdigit():
        return None
    groups: list[str] = []
    current = ""
    for char in text:
        if char.isdigit():
            current += char
        elif char in _SEPARATORS and current:
            groups.append(current)
            current = ""
        else:
            return None  # "3rd", "10am", "1,234": not a string of digits
    if current:
        groups.append(current)
    return tuple(groups) if groups else None


def _parts(word: str) -> list[str]:
    """A spoken word split where engines hyphenate ("twenty-one", "four-one-one-one")."""
    text = normalize(word)
    return [part for part in text.replace("\u2013", "-").split("-") if part] if "-" in text else [text]


@dataclass(frozen=True, slots=True)
class Run:
    """A maximal run of number words: the words `first`..`last` (indices into the result's words, inclusive),
    read as `digits`; `owners[i]` is the first and last word that gave `digits[i]` ("forty one": both words give
    both digits), and `groups` the digit groups as said or written (`4111 1111` is (4, 4); each digit spoken
    alone is a group of 1)."""

    first: int
    last: int
    digits: str
    owners: tuple[tuple[int, int], ...]
    groups: tuple[int, ...]


class _Reader:
    """One run's words read into digits. A spoken number is one group while its words compose ("forty one",
    "four thousand one hundred eleven", "twenty oh five" is 20, 0, 5); a unit after a unit starts a new group, as
    a digit read out alone does ("four one one one" is four groups)."""

    def __init__(self) -> None:
        self.digits: list[str] = []
        self.owners: list[tuple[int, int]] = []
        self.groups: list[int] = []
        self.repeat = 0  # "double" / "triple" said: the next digit comes that many times
        self.repeat_at = 0  # the word that said it, which gives those digits too
        self.total = 0  # the group being said: thousands so far, and the part below a thousand
        self.current = 0
        self.last_kind = ""  # "" (no group open), unit, teen, tens, scale
        self.group_words: tuple[int, int] | None = None

    def _close(self) -> None:
        if self.group_words is not None:
            self._emit(str(self.total + self.current), self.group_words)
        self.total = self.current = 0
        self.last_kind = ""
        self.group_words = None

    def _emit(self, text: str, words: tuple[int, int]) -> None:
        self.digits.extend(text)
        self.owners.extend([words] * len(text))
        self.groups.append(len(text))

    def _add(self, kind: str, value: int, index: int) -> None:
        composes = (kind == "unit" and self.last_kind in ("tens", "scale")) or (
            kind in ("teen", "tens") and self.last_kind == "scale"
        )
        if not composes:
            self._close()
        self.group_words = (index, index) if self.group_words is None else (self.group_words[0], index)
        self.current += value
        self.last_kind = kind

    def _words_to(self, index: int) -> tuple[int, int]:
        """The words that gave a digit said at `index`: from "double" on, when it was repeated."""
        return (self.repeat_at if self.repeat else index, index)

    def take(self, word: str, index: int) -> bool:
        """Read `word` (the result's word `index`) into the run; False when it is not a number word."""
        groups = digit_groups(word)
        if groups is not None:
            self._close()
            for group in groups:
                self._emit(group * (self.repeat or 1) if len(group) == 1 else group, self._words_to(index))
                self.repeat = 0
            return True
        parts = _parts(word)
        if not parts or not all(part in _NUMBER_WORDS for part in parts):
            return False
        for part in parts:
            self._take_part(part, index)
        return True

    def _take_part(self, part: str, index: int) -> None:
        if part in REPEATS:
            self._close()
            self.repeat, self.repeat_at = REPEATS[part], index
        elif part in UNITS and (self.repeat or not UNITS[part]):
            # a repeated digit, or a zero ("oh"), is said alone: "twenty oh five" is 2005, not 205
            self._close()
            self._emit(str(UNITS[part]) * (self.repeat or 1), self._words_to(index))
            self.repeat = 0
        elif part in UNITS:
            self._add("unit", UNITS[part], index)
        elif part in TEENS:
            self._add("teen", TEENS[part], index)
        elif part in TENS:
            self._add("tens", TENS[part], index)
        elif part == "hundred":
            self.group_words = (index, index) if self.group_words is None else (self.group_words[0], index)
            self.current = (self.current or 1) * 100
            self.last_kind = "scale"
        else:  # thousand
            self.group_words = (index, index) if self.group_words is None else (self.group_words[0], index)
            self.total += (self.current or 1) * 1000
            self.current = 0
            self.last_kind = "scale"

    def finish(self) -> None:
        self._close()


_NUMBER_WORDS = frozenset(UNITS) | frozenset(TEENS) | frozenset(TENS) | frozenset(REPEATS) | {"hundred", "thousand"}


def number_runs(words: Sequence[str]) -> list[Run]:
    """Every maximal run of number words in `words`, each read as its digits (fillers inside a run kept in it)."""
    runs: list[Run] = []
    index = 0
    while index < len(words):
        reader = _Reader()
        if not reader.take(words[index], index):
            index += 1
            continue
        first = last = index
        index += 1
        while index < len(words):
            if reader.take(words[index], index):
                last = index
                index += 1
                continue
            # a filler or separator inside a run: kept only if a number word follows it
            ahead = index
            while ahead < len(words) and normalize(words[ahead]) in INSIDE:
                ahead += 1
            if ahead == index or ahead >= len(words) or not reader.take(words[ahead], ahead):
                break
            last = ahead
            index = ahead + 1
        reader.finish()
        # Every number word gives digits, or (a run ending in "double") is a number still being said: a run.
        runs.append(Run(first, last, "".join(reader.digits), tuple(reader.owners), tuple(reader.groups)))
    return runs
