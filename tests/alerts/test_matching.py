"""The alert matcher: whole words across finals, a speaker's track, overlapping rules, the same speech heard twice
raised once, and `absent_within_s` decided on the call's timeline."""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.alert_rules import AlertRule, parse_rules
from service.alerts.matching import ABSENT, SAID, Alert, CallMatcher, alert_id
from service.calls.transcript import Transcript
from service.stt.events import Word

NOW = datetime.datetime(2026, 12, 7, 15, 0, tzinfo=datetime.UTC)
SPEAKERS = {"inbound": "caller", "outbound": "agent"}
WORD_S = 0.4  # each test word lasts this long, one after another


def rules(*items: Mapping[str, object]) -> tuple[AlertRule, ...]:
    return parse_rules(json.dumps([dict(item) for item in items]))


def words(text: str, start: float, *, step: float = WORD_S) -> tuple[Word, ...]:
    """`text`'s words one after another from `start`, each with its punctuated form as Deepgram sends it."""
    said = text.split()
    return tuple(
        Word(token.strip(".,?!").lower(), start + i * step, start + (i + 1) * step - 0.05, 0.9, punctuated_word=token)
        for i, token in enumerate(said)
    )


def final(
    spoken: tuple[Word, ...], *, track: str = "inbound", is_final: bool = True, stream: str = "MZ1"
) -> Transcript:
    return Transcript(
        call_sid="CA1", stream_sid=stream, track=track, is_final=is_final, speech_final=True, from_finalize=False,
        text=" ".join(word.punctuated_word or word.word for word in spoken),
        start=spoken[0].start if spoken else 0.0, end=spoken[-1].end if spoken else 0.0, confidence=0.9,
        words=spoken, request_id=None, speaker=SPEAKERS[track],
    )  # fmt: skip


def matcher(*items: Mapping[str, object], tracks: Sequence[str] = ("inbound", "outbound")) -> CallMatcher:
    return CallMatcher("CA1", rules(*items), tracks=tracks, speakers=SPEAKERS)


def feed(match: CallMatcher, *finals: Transcript) -> list[Alert]:
    return [alert for transcript in finals for alert in match.final(transcript, NOW)]


CANCEL = {"name": "cancel", "phrases": ["cancel my account"]}


@pytest.mark.parametrize(
    ("said", "fires"),
    [
        ("I want to cancel my account today", True),
        ("CANCEL, my... Account!", True),  # case and punctuation aside
        ("cancel my accountant", False),  # whole words only
        ("please cancel my", False),
        ("my account cancel", False),  # in order
        ("cancel my cancel my account", True),
    ],
)
def test_a_phrase_is_found_on_whole_words_in_one_final(said: str, fires: bool) -> None:
    """Whole words, in order, case-insensitively and without punctuation."""
    alerts = feed(matcher(CANCEL), final(words(said, 1.0)))
    assert [alert.rule for alert in alerts] == (["cancel"] if fires else [])


def test_an_alert_carries_the_words_their_time_speaker_track_and_a_stable_id() -> None:
    """The matched words as said, from the first word's start to the last one's end, with who said them."""
    spoken = words("Well, cancel my account.", 2.0)
    (alert,) = feed(matcher(CANCEL), final(spoken))
    assert alert == Alert(
        alert_id=alert_id("CA1", "cancel", 2.4), call_sid="CA1", rule="cancel", kind=SAID, speaker="caller",
        track="inbound", phrase="cancel my account", text="cancel my account.", start=2.4, end=spoken[-1].end,
        raised_at=NOW,
    )  # fmt: skip
    assert alert.alert_id == alert_id("CA1", "cancel", 2.4000001)  # to the millisecond
    assert len({alert.alert_id, alert_id("CA1", "cancel", 2.401), alert_id("CA2", "cancel", 2.4)}) == 3


def test_interim_results_raise_nothing() -> None:
    """Only finals are matched: an interim may still change."""
    assert feed(matcher(CANCEL), final(words("cancel my account", 0.0), is_final=False)) == []


def test_the_speaker_filter_keeps_to_its_track() -> None:
    """A caller's rule ignores the agent's words, and an agent's rule the caller's."""
    match = matcher(
        {**CANCEL, "speaker": "caller"}, {"name": "offer", "phrases": ["cancel my account"], "speaker": "agent"}
    )
    by_agent = feed(match, final(words("so cancel my account", 0.0), track="outbound"))
    by_caller = feed(match, final(words("cancel my account", 3.0), track="inbound"))
    assert [(alert.rule, alert.track, alert.speaker) for alert in by_agent] == [("offer", "outbound", "agent")]
    assert [(alert.rule, alert.track, alert.speaker) for alert in by_caller] == [("cancel", "inbound", "caller")]


def test_overlapping_rules_each_fire() -> None:
    """Two rules whose phrases share words both fire on the same final; one rule fires once at one time, whichever
    of its phrases matched there (its first listed), and again for a phrase that starts elsewhere."""
    match = matcher(
        {"name": "cancel", "phrases": ["cancel my account", "cancel"]},
        {"name": "account", "phrases": ["my account"]},
    )
    alerts = feed(match, final(words("cancel my account and cancel", 0.0)))
    assert sorted((alert.rule, alert.phrase, alert.start) for alert in alerts) == [
        ("account", "my account", 0.4), ("cancel", "cancel", 1.6), ("cancel", "cancel my account", 0.0),
    ]  # fmt: skip


def test_a_phrase_split_across_finals_of_one_speaker_fires_once_it_is_complete() -> None:
    """The first final holds the start of the phrase, the second completes it: the alert comes with the second."""
    match = matcher(CANCEL)
    assert feed(match, final(words("I want to cancel", 0.0))) == []
    (alert,) = feed(match, final(words("my account please", 1.6)))
    assert (alert.text, alert.start, alert.end) == ("cancel my account", pytest.approx(1.2), pytest.approx(2.35))


def test_a_phrase_is_not_joined_across_speakers() -> None:
    """The caller's "cancel my" and the agent's "account" are no phrase."""
    match = matcher(CANCEL)
    assert feed(match, final(words("cancel my", 0.0)), final(words("account", 0.9), track="outbound")) == []


def test_a_final_heard_again_raises_nothing_more() -> None:
    """A final replayed after a reconnect (the same words at the same times) raises no second alert."""
    match = matcher(CANCEL)
    spoken = final(words("cancel my account", 0.0))
    assert len(feed(match, spoken)) == 1
    assert feed(match, spoken) == []


def test_the_same_phrase_said_again_later_fires_again() -> None:
    """Said twice, at two times: two alerts, with two ids."""
    match = matcher(CANCEL)
    alerts = feed(match, final(words("cancel my account", 0.0)), final(words("cancel my account", 5.0)))
    assert [alert.start for alert in alerts] == [0.0, 5.0]
    assert alerts[0].alert_id != alerts[1].alert_id


DISCLOSURE = {"name": "disclosure", "phrases": ["this call is recorded"], "speaker": "agent", "absent_within_s": 10}


def test_a_disclosure_made_in_time_raises_nothing() -> None:
    """Said by the agent within the window: no alert, ever (not even at the end)."""
    match = matcher(DISCLOSURE)
    assert feed(match, final(words("hello this call is recorded", 1.0), track="outbound")) == []
    assert feed(match, final(words("anything else", 20.0), track="outbound")) == []
    assert match.ended(NOW) == []


def test_a_missing_disclosure_fires_once_the_agent_passes_the_window() -> None:
    """The agent's finals pass 10 s without the phrase: it fires then, once, on the agent's track."""
    match = matcher(DISCLOSURE)
    assert feed(match, final(words("hello how can I help", 1.0), track="outbound")) == []
    assert feed(match, final(words("this call is recorded", 20.0), track="inbound")) == []  # the caller's words
    (alert,) = feed(match, final(words("sure thing", 10.5), track="outbound"))
    assert (alert.kind, alert.rule, alert.track, alert.speaker, alert.start, alert.end) == (
        ABSENT, "disclosure", "outbound", "agent", 0.0, 10.0,
    )  # fmt: skip
    assert (alert.text, alert.phrase, alert.alert_id) == ("", "", alert_id("CA1", "disclosure", 0.0))
    assert feed(match, final(words("this call is recorded", 12.0), track="outbound")) == []  # too late, said once
    assert match.ended(NOW) == []


def test_a_disclosure_begun_in_time_and_finished_in_the_next_final_counts() -> None:
    """The phrase starts at 9.2 s and ends in a final past the window: the rule waits for it, and it is made."""
    match = matcher(DISCLOSURE)
    assert feed(match, final(words("well this call", 9.2), track="outbound")) == []
    assert feed(match, final(words("is", 10.4), track="outbound")) == []  # past the window, the phrase still open
    assert feed(match, final(words("recorded okay", 10.8), track="outbound")) == []
    assert match.ended(NOW) == []


def test_a_call_shorter_than_the_window_without_the_disclosure_fires_at_its_end() -> None:
    """The agent never reached 10 s: the rule is decided when the call ends."""
    match = matcher(DISCLOSURE)
    assert feed(match, final(words("hi", 1.0), track="outbound")) == []
    (alert,) = match.ended(NOW)
    assert (alert.kind, alert.rule) == (ABSENT, "disclosure")
    assert match.ended(NOW) == []


def test_an_absence_rule_for_anyone_waits_for_every_track() -> None:
    """No speaker: the phrase may come from either track, so both must pass the window."""
    match = matcher({key: value for key, value in DISCLOSURE.items() if key != "speaker"})
    assert feed(match, final(words("hello there", 11.0), track="inbound")) == []
    (alert,) = feed(match, final(words("good morning", 11.0), track="outbound"))
    assert (alert.track, alert.speaker) == ("", "")


def test_no_rules_no_alerts() -> None:
    """A matcher without rules raises nothing."""
    match = CallMatcher("CA1", (), tracks=("inbound",), speakers=SPEAKERS)
    assert feed(match, final(words("cancel my account", 0.0))) == []
    assert match.ended(NOW) == []


def test_punctuation_alone_is_no_word() -> None:
    """A word that is only punctuation neither matches nor breaks a phrase."""
    spoken = (*words("cancel my", 0.0), Word("--", 0.8, 0.85, 0.9), *words("account", 0.9))
    assert [alert.rule for alert in feed(matcher(CANCEL), final(spoken))] == ["cancel"]


PHRASE = "please cancel my account now"
SENTENCE = f"hello I would like you to {PHRASE} thanks"


def splits(count: int) -> st.SearchStrategy[list[int]]:
    """Sorted cut points between words: any way to divide `count` words into consecutive finals."""
    return st.sets(st.integers(1, count - 1)).map(sorted)


@given(splits(len(SENTENCE.split())))
def test_a_phrase_split_at_any_word_boundaries_fires_exactly_once(cuts: list[int]) -> None:
    """However the finals divide the sentence, the phrase fires once, with the same words and time."""
    spoken = words(SENTENCE, 0.0)
    bounds = [0, *cuts, len(spoken)]
    match = matcher({"name": "cancel", "phrases": [PHRASE]})
    alerts = feed(match, *(final(spoken[a:b]) for a, b in itertools.pairwise(bounds)))
    (whole,) = feed(matcher({"name": "cancel", "phrases": [PHRASE]}), final(spoken))
    assert alerts == [whole]


@given(
    cut=st.integers(1, len(SENTENCE.split()) - 1),
    overlap=st.integers(0, 4),
    jitter=st.floats(-0.1, 0.1),
)
def test_a_hand_over_in_the_middle_of_a_phrase_fires_it_once(cut: int, overlap: int, jitter: float) -> None:
    """The old stream's last final ends mid-phrase; the new stream's first final transcribes some of the same
    seconds again (times a little off), then goes on: the phrase fires once, at its first word's time."""
    spoken = words(SENTENCE, 0.0)
    again = tuple(
        Word(word.word, word.start + jitter, word.end + jitter, word.confidence, word.punctuated_word)
        for word in spoken[max(cut - overlap, 0) : cut]
    )
    old = final(spoken[:cut], stream="MZ1")
    new = final((*again, *spoken[cut:]), stream="MZ2")
    alerts = feed(matcher({"name": "cancel", "phrases": [PHRASE]}), old, new)
    assert [(alert.rule, alert.start, alert.text) for alert in alerts] == [("cancel", spoken[6].start, PHRASE)]


@given(st.lists(st.sampled_from(["cancel", "my", "account", "please", "no"]), max_size=30), st.integers(1, 5))
def test_any_final_replayed_raises_nothing_new(said: list[str], replays: int) -> None:
    """Whatever was said, feeding the same finals again (a reconnect's replay) raises no alert a second time."""
    spoken = words(" ".join(said), 0.0) if said else ()
    match = matcher(CANCEL)
    first = feed(match, final(spoken)) if spoken else []
    assert len(first) == " ".join(said).count("cancel my account")
    for _ in range(replays):
        assert (feed(match, final(spoken)) if spoken else []) == []
