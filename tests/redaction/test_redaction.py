"""The redactor: a corpus of spoken and written forms (caught, and near misses kept), and its properties.

The corpus is the table docs/compliance.md shows; a row changed here changes what the docs promise.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.redaction.rules import Context, Kind, Span, find_spans, luhn_valid
from service.redaction.spoken import number_runs
from service.redaction.tracks import EVERY_WORD, TrackRedactor, apply

VISA = "4111111111111111"
AMEX = "378282246310005"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def redacted(text: str, context: Context = Context()) -> str:  # noqa: B008 - frozen
    words = text.split()
    return " ".join(apply(words, find_spans(words, context).spans))


# (what was said or written, what goes out)
CORPUS = [
    # cards, written
    ("my card is 4111111111111111 thanks", "my card is [card] thanks"),
    ("it is 4111 1111 1111 1111 ok", "it is [card] ok"),
    ("it is 4111-1111-1111-1111.", "it is [card]"),
    ("amex 3782 822463 10005 please", "amex [card] please"),
    # cards, spoken
    ("four one one one one one one one one one one one one one one one", "[card]"),
    ("four one one one double one one one one one one one one one one one", "[card]"),
    ("four one one one triple one one one one one one one one one one", "[card]"),
    ("three seven eight two eight two two four six three one oh oh oh five", "[card]"),
    ("forty one eleven eleven eleven eleven eleven eleven eleven", "[card]"),
    ("forty-one eleven, eleven eleven, eleven eleven, eleven eleven", "[card]"),
    ("4111 one one one one 1111 one one one one", "[card]"),
    ("four one one one uh one one one one um one one one one one one one one", "[card]"),
    ("four thousand one hundred eleven 1111 1111 1111", "[card]"),
    # a misheard digit (Luhn fails), with card words near: still a card
    ("my visa is 4111 1111 1111 1112", "my visa is [card]"),
    # expiry and code after a card, in the same breath or later
    ("4111111111111111 0426 123", "[card] [expiry] [cvv]"),
    (
        "card 4111111111111111 expires oh four twenty six and the code is one two three",
        "card [card] expires [expiry] and the code is [cvv]",
    ),
    ("card 4111111111111111 expires 04/26", "card [card] expires [expiry]"),
    ("card 4111111111111111 then 0427 ok", "card [card] then [expiry] ok"),
    ("card 4111111111111111 then 737 ok", "card [card] then [cvv] ok"),
    # a code or expiry by its own words, with no card
    ("the security code is 123", "the security code is [cvv]"),
    ("the cvv is four five six", "the cvv is [cvv]"),
    ("expiry date twelve twenty seven", "expiry date [expiry]"),
    # social security numbers
    ("my social is 123-45-6789 ok", "my social is [ssn] ok"),
    ("it is 123 45 6789", "it is [ssn]"),
    ("social security number one two three four five six seven eight nine", "social security number [ssn]"),
    ("my ssn is 123456789", "my ssn is [ssn]"),
    # near misses: kept as they are
    ("order number 1234567890 please", "order number 1234567890 please"),
    ("order 12345678901 is late", "order 12345678901 is late"),
    ("call me on 415 555 0100", "call me on 415 555 0100"),
    ("call me on +1 415 555 0100", "call me on +1 415 555 0100"),
    ("at ten thirty or 10:30", "at ten thirty or 10:30"),
    ("it costs $1,234.56 in 2026", "it costs $1,234.56 in 2026"),
    ("my card ends in 1111", "my card ends in 1111"),
    ("the zip is 94107 1234", "the zip is 94107 1234"),
    ("room 123 45 people", "room 123 45 people"),
    ("one two three four", "one two three four"),
    ("tracking 1234 5678 9012 3456 7", "tracking 1234 5678 9012 3456 7"),
]


@pytest.mark.parametrize(("said", "out"), CORPUS, ids=[said for said, _ in CORPUS])
def test_the_corpus(said: str, out: str) -> None:
    assert redacted(said) == out


@pytest.mark.parametrize(
    ("words", "digits"),
    [
        ("four oh double oh one", "40001"),
        ("twenty oh five", "2005"),
        ("forty one hundred", "4100"),
        ("four hundred five", "405"),
        ("one hundred", "100"),
        ("hundred", "100"),
        ("four thousand", "4000"),
        ("nineteen eighty four", "1984"),
        ("twenty-one", "21"),
        ("double 4", "44"),
        ("12/25", "1225"),
        ("4111-1111", "41111111"),
        ("4111-", "4111"),
    ],
)
def test_numbers_are_read_as_they_are_said(words: str, digits: str) -> None:
    [run] = number_runs(words.split())
    assert run.digits == digits


@pytest.mark.parametrize("word", ["3rd", "10am", "$1,234", "1,234", "", "-", "..."])
def test_what_is_not_written_in_digits_is_no_number(word: str) -> None:
    assert number_runs([word]) == []


def test_a_filler_ends_a_run_at_its_edges() -> None:
    """ "uh" between digits is inside a number; before or after it, or before a word, it is not."""
    [run] = number_runs(["uh", "four", "um", "two", "uh", "then"])
    assert (run.first, run.last, run.digits) == (1, 3, "42")


def test_luhn() -> None:
    assert luhn_valid(VISA)
    assert luhn_valid(AMEX)
    assert not luhn_valid("4111111111111112")


# --- across finals -------------------------------------------------------------------------------------------


def released_texts(finals: list[str]) -> list[str]:
    redactor: TrackRedactor[str] = TrackRedactor(str.split)
    out = []
    for final in finals:
        out.extend(" ".join(apply(r.result.split(), r.spans)) for r in redactor.final(final))
    out.extend(" ".join(apply(r.result.split(), r.spans)) for r in redactor.flush())
    return out


def test_a_card_split_across_two_finals_is_caught_in_both() -> None:
    assert released_texts(
        ["my card is four one one one one one one one", "one one one one one one one one thanks"]
    ) == [
        "my card is [card]",
        "[card] thanks",
    ]


def test_a_card_split_across_three_finals_is_caught_in_all() -> None:
    assert released_texts(["card is four one one one", "one one one one", "one one one one one one one one ok"]) == [
        "card is [card]",
        "[card]",
        "[card] ok",
    ]


def test_finals_wait_for_a_number_for_max_held_finals_at_most() -> None:
    redactor: TrackRedactor[str] = TrackRedactor(str.split)
    released = [r.result for final in ["one", "two", "three", "four", "five", "six"] for r in redactor.final(final)]
    assert released == ["one", "two"]  # four finals held; each further one lets the oldest go as it reads
    assert [r.result for r in redactor.flush()] == ["three", "four", "five", "six"]


def test_a_final_that_ends_in_a_number_waits_for_the_next_only() -> None:
    redactor: TrackRedactor[str] = TrackRedactor(str.split)
    assert redactor.final("I will be there at five") == []
    assert redactor.holding
    [first, second] = redactor.final("see you then")
    assert (first.result, first.spans, second.result, second.spans) == (
        "I will be there at five",
        (),
        "see you then",
        (),
    )
    assert not redactor.holding
    assert [r.result for r in redactor.final("no numbers here")] == ["no numbers here"]


def test_release_lets_a_held_final_go_as_it_reads_alone() -> None:
    redactor: TrackRedactor[str] = TrackRedactor(str.split)
    assert redactor.final("my card is 4111111111111111") == []
    [held] = redactor.release()
    assert apply(held.result.split(), held.spans) == ["my", "card", "is", "[card]"]
    assert redactor.release() == []


def test_a_code_in_the_final_after_the_card_is_caught() -> None:
    assert released_texts(["card 4111111111111111 thanks", "and it is one two three"]) == [
        "card [card] thanks",
        "and it is [cvv]",
    ]


def test_a_code_long_after_the_card_is_not_taken_for_one() -> None:
    filler = " ".join(["and then we talked"] * 8)
    assert released_texts(["card 4111111111111111 ok", filler, "we have 123 left"])[-1] == "we have 123 left"


def test_counts_are_by_kind_and_a_split_card_counts_once() -> None:
    redactor: TrackRedactor[str] = TrackRedactor(str.split)
    for final in [
        "card four one one one one one one one",
        "one one one one one one one one code 123",
        "ssn 123-45-6789",
    ]:
        redactor.final(final)
    redactor.flush()
    assert dict(redactor.counts) == {Kind.CARD: 1, Kind.CVV: 1, Kind.SSN: 1}


def test_an_interim_hides_every_number_it_holds() -> None:
    """An interim is the words so far: a number in it may be a card's start, so each shows as `[number]` (its
    final shows what it was)."""
    redactor: TrackRedactor[str] = TrackRedactor(str.split)
    words = ["my", "card", "is", "four", "one", "one", "one"]
    assert apply(words, redactor.interim(" ".join(words))) == ["my", "card", "is", "[number]"]
    words = ["room", "12", "at", "ten", "thirty", "ok"]
    assert apply(words, redactor.interim(" ".join(words))) == ["room", "[number]", "at", "[number]", "ok"]
    words = ["no", "numbers", "here"]
    assert redactor.interim(" ".join(words)) == ()


def test_an_interim_is_read_after_the_held_final() -> None:
    redactor: TrackRedactor[str] = TrackRedactor(str.split)
    assert redactor.final("card 4111 1111") == []
    words = ["1111", "1111", "and"]
    assert apply(words, redactor.interim(" ".join(words))) == ["[card]", "and"]


class Exploding:
    """A result whose words cannot be read once: the redactor must fail closed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.reads = 0


def test_a_failure_withholds_every_word() -> None:
    def words_of(result: Exploding) -> list[str]:
        result.reads += 1
        if result.reads == 1:
            raise RuntimeError("boom")
        return result.text.split()

    redactor: TrackRedactor[Exploding] = TrackRedactor(words_of)
    [released] = redactor.final(Exploding("my card is 4111111111111111 ok"))
    assert released.spans == (Span(0, EVERY_WORD, Kind.WITHHELD),)
    assert apply(released.result.text.split(), released.spans) == ["[withheld]"]
    assert redactor.interim(Exploding("four one one")) == (Span(0, EVERY_WORD, Kind.WITHHELD),)
    assert redactor.counts[Kind.WITHHELD] == 1


def test_a_failure_on_release_withholds_the_held_final(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the rules (simulated: they raise) must not let the held final out unread."""
    redactor: TrackRedactor[str] = TrackRedactor(str.split)
    assert redactor.final("card 4111") == []

    def broken(*_: object) -> None:
        raise RuntimeError("a bug in the rules")

    monkeypatch.setattr("service.redaction.tracks.find_spans", broken)
    [released] = redactor.release()
    assert (released.result, released.spans) == ("card 4111", (Span(0, EVERY_WORD, Kind.WITHHELD),))
    assert not redactor.holding


def test_a_failure_after_a_held_final_withholds_both() -> None:
    def words_of(result: Exploding) -> list[str]:
        if result.text == "boom":
            raise RuntimeError("boom")
        return result.text.split()

    redactor: TrackRedactor[Exploding] = TrackRedactor(words_of)
    held = Exploding("card 4111")
    assert redactor.final(held) == []
    failing = Exploding("boom")
    released = redactor.final(failing)
    assert [r.result for r in released] == [held, failing]
    assert all(r.spans == (Span(0, EVERY_WORD, Kind.WITHHELD),) for r in released)
    assert redactor.counts[Kind.WITHHELD] == 2


def test_a_turns_words_are_read_like_an_interim_and_fail_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn's text so far (Flux) is no result of the track's: read after the held finals, like an interim."""
    redactor: TrackRedactor[str] = TrackRedactor(str.split)
    assert redactor.final("card 4111 1111") == []
    assert apply(["1111", "1111", "ok"], redactor.interim_words(["1111", "1111", "ok"])) == ["[card]", "ok"]

    def broken(*_: object) -> None:
        raise RuntimeError("a bug in the rules")

    monkeypatch.setattr("service.redaction.tracks.find_spans", broken)
    assert redactor.interim_words(["four", "one"]) == (Span(0, EVERY_WORD, Kind.WITHHELD),)


def test_an_interim_with_a_whole_card_says_card() -> None:
    redactor: TrackRedactor[str] = TrackRedactor(str.split)
    words = ["it", "is", *spoken(VISA, "words")]
    assert apply(words, redactor.interim(" ".join(words))) == ["it", "is", "[card]"]


# --- properties ----------------------------------------------------------------------------------------------


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    """A Luhn-valid number of 13 to 19 digits."""
    body = draw(st.text(alphabet="0123456789", min_size=12, max_size=18))
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("a check digit always exists")  # pragma: no cover


def spoken(digits: str, style: str) -> list[str]:
    """One rendering of `digits` as words or written groups."""
    if style == "one":
        return [digits]
    if style == "fours":
        return [digits[i : i + 4] for i in range(0, len(digits), 4)]
    if style == "dashed":
        return ["-".join(digits[i : i + 4] for i in range(0, len(digits), 4))]
    words = []
    i = 0
    while i < len(digits):
        digit = digits[i]
        if style == "words-double" and digits[i + 1 : i + 2] == digit:
            words += ["double", DIGIT_WORDS[int(digit)]]
            i += 2
            continue
        words.append("oh" if digit == "0" and style != "words" else DIGIT_WORDS[int(digit)])
        i += 1
    return words


STYLES = ("one", "fours", "dashed", "words", "words-oh", "words-double")
FILLER = st.lists(st.sampled_from(["so", "my", "number", "is", "please", "thanks", "the", "ok", "uh"]), max_size=6)


@settings(max_examples=300, deadline=None)
@given(card=card_numbers(), style=st.sampled_from(STYLES), before=FILLER, after=FILLER)
def test_no_card_survives_in_any_rendering(card: str, style: str, before: list[str], after: list[str]) -> None:
    """Every word that carried a digit of the card is redacted as it; no word around it is."""
    number = spoken(card, style)
    words = [*before, *number, *after]
    spans = find_spans(words).spans
    redacted_words = {index for span in spans for index in range(span.first, span.last + 1)}
    card_words = set(range(len(before), len(before) + len(number)))
    assert card_words <= redacted_words
    assert any(span.kind is Kind.CARD for span in spans)
    out = apply(words, spans)
    assert out[: len(before)] == before
    assert out[len(out) - len(after) :] == after or not after


@settings(max_examples=300, deadline=None)
@given(card=card_numbers(), style=st.sampled_from(STYLES[3:]), data=st.data())
def test_no_card_survives_split_across_finals(card: str, style: str, data: st.DataObject) -> None:
    """Cut anywhere between its words into two to four finals, a spoken card is redacted in each, counted once."""
    number = spoken(card, style)
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=len(number) - 1), min_size=1, max_size=3)))
    pieces = [number[start:end] for start, end in zip([0, *cuts], [*cuts, len(number)], strict=True)]
    finals = [("my", "card", "is", *pieces[0]), *(tuple(piece) for piece in pieces[1:-1]), (*pieces[-1], "thanks")]
    redactor: TrackRedactor[tuple[str, ...]] = TrackRedactor(list)
    released = [r for final in finals for r in redactor.final(final)] + redactor.flush()
    assert [r.result for r in released] == finals
    out = [word for r in released for word in apply(r.result, r.spans)]
    assert out[:3] == ["my", "card", "is"]
    assert out[-1] == "thanks"
    assert not any(word in DIGIT_WORDS or word in ("oh", "double") for word in out)
    assert redactor.counts[Kind.CARD] == 1


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.sampled_from([*DIGIT_WORDS, "oh", "double", "and", "uh", "is", "1234", "12/25", "ten"])))
def test_spans_are_in_order_within_the_words_and_never_overlap(words: list[str]) -> None:
    spans = find_spans(words).spans
    for span in spans:
        assert 0 <= span.first <= span.last < len(words)
    for earlier, later in itertools.pairwise(spans):
        assert earlier.last < later.first
