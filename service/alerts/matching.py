"""Protocol layer (no I/O): a call's final transcripts against ALERT_RULES, and the alerts they raise.

`CallMatcher` holds one call's state: per track, the words heard so far on the call's timeline (only the last
few, enough to finish a phrase split across finals) and how far they reach; which alerts were raised; which
`absent_within_s` rules are decided. `final` takes each final transcript and returns the alerts it raises, at
once (the caller only queues them); `ended` the absence rules still open when the call ends.

Words are compared as `words_of` makes them (case-folded, punctuation dropped). A word whose middle lies
before what the track has already heard is the same speech again, not new speech: a final replayed after a
reconnect, or the seconds both streams of a hand-over transcribed, so it is skipped, and a phrase is never
raised twice. An alert's id is made of the call, the rule and the time of its first word, so a retry, or a
second process that heard the same words, raises the same id, which the database keeps once.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from service.alert_rules import AlertRule, words_of
from service.calls.transcript import Transcript

AlertKind = Literal["said", "absent"]
SAID: Final = "said"  # one of the rule's phrases was said
ABSENT: Final = "absent"  # none of its phrases was said within `absent_within_s`


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule that fired on a call: for `said`, the words that completed a phrase and their time in the call;
    for `absent`, the window (0 to `absent_within_s`) in which none of its phrases was said."""

    alert_id: str
    call_sid: str
    rule: str
    kind: AlertKind
    speaker: str  # the speaker's label, as the transcript says it ("caller"); "" for anyone
    track: str  # Twilio's track (inbound, outbound); "" for any
    phrase: str  # the rule's phrase, as written; "" when absent
    text: str  # the words as said (punctuated); "" when absent
    start: float  # seconds on the call's timeline
    end: float
    raised_at: datetime.datetime  # when the rule fired (UTC)


def alert_id(call_sid: str, rule: str, start: float) -> str:
    """The alert's stable id: the call, the rule and its start to the millisecond, hashed to one short key."""
    key = f"{call_sid}\n{rule}\n{round(start * 1000)}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class _Heard:
    word: str  # as compared
    shown: str  # as said, punctuated
    start: float
    end: float


@dataclass(slots=True)
class _Track:
    tail: list[_Heard] = field(default_factory=list)  # the last words, enough to finish any phrase
    heard_until: float = 0.0  # the end of the last word taken
    passed: float = 0.0  # how far its finals reach on the call's timeline


class CallMatcher:
    """One call's finals against the rules: `final` returns what a transcript raises, `ended` what is left."""

    def __init__(
        self, call_sid: str, rules: Sequence[AlertRule], *, tracks: Sequence[str], speakers: Mapping[str, str]
    ) -> None:
        self.call_sid = call_sid
        self._rules = tuple(rules)
        self._tracks = tuple(tracks)
        self._speakers = dict(speakers)  # track -> its speaker's label
        self._heard: dict[str, _Track] = {}
        self._raised: set[str] = set()
        self._open = {rule.name for rule in self._rules if rule.absent_within_s is not None}  # absence undecided
        longest = max((len(words) for rule in self._rules for words in rule.phrase_words), default=1)
        self._keep = max(longest - 1, 0)

    def final(self, transcript: Transcript, now: datetime.datetime) -> list[Alert]:
        """The alerts this final transcript raises (none for an interim): phrases it completes, and absence
        rules whose window its track has now passed."""
        if not transcript.is_final:
            return []
        track = self._heard.setdefault(transcript.track, _Track())
        new = [heard for heard in _heard_words(transcript) if (heard.start + heard.end) / 2 >= track.heard_until]
        words = [*track.tail, *new]
        raised = [
            alert
            for rule in self._rules
            if rule.hears(transcript.track)
            for alert in self._phrases_in(rule, words, first_new=len(track.tail), transcript=transcript, now=now)
        ]
        if new:
            track.heard_until = new[-1].end
        track.tail = words[-self._keep :] if self._keep else []
        track.passed = max(track.passed, transcript.end, track.heard_until)
        return [*self._keep_new(raised), *self._absences(now, ending=False)]

    def ended(self, now: datetime.datetime) -> list[Alert]:
        """The absence rules still undecided at the call's end: a call shorter than the window, without the
        phrase, fires them now."""
        return self._absences(now, ending=True)

    def _phrases_in(
        self, rule: AlertRule, words: list[_Heard], *, first_new: int, transcript: Transcript, now: datetime.datetime
    ) -> list[Alert]:
        """Each of `rule`'s phrases that ends in the new words (one ending in the tail was found before)."""
        found = []
        said = [heard.word for heard in words]
        for phrase, phrase_words in zip(rule.phrases, rule.phrase_words, strict=True):
            size = len(phrase_words)
            for at in range(max(first_new - size + 1, 0), len(words) - size + 1):
                if tuple(said[at : at + size]) == phrase_words:
                    matched = words[at : at + size]
                    found.append(self._said(rule, phrase, matched, transcript, now))
        return found

    def _said(
        self, rule: AlertRule, phrase: str, matched: list[_Heard], transcript: Transcript, now: datetime.datetime
    ) -> Alert:
        start = matched[0].start
        if rule.absent_within_s is not None and start < rule.absent_within_s:
            self._open.discard(rule.name)  # said in time: the disclosure was made
        return Alert(
            alert_id=alert_id(self.call_sid, rule.name, start), call_sid=self.call_sid, rule=rule.name, kind=SAID,
            speaker=transcript.speaker, track=transcript.track, phrase=phrase,
            text=" ".join(heard.shown for heard in matched), start=start, end=matched[-1].end, raised_at=now,
        )  # fmt: skip

    def _keep_new(self, alerts: list[Alert]) -> list[Alert]:
        """Alerts not raised before; an absence rule's phrase said is recorded above, never raised."""
        fresh = []
        for alert in alerts:
            rule = next(rule for rule in self._rules if rule.name == alert.rule)
            if rule.absent_within_s is None and alert.alert_id not in self._raised:
                self._raised.add(alert.alert_id)
                fresh.append(alert)
        return fresh

    def _absences(self, now: datetime.datetime, *, ending: bool) -> list[Alert]:
        fired = []
        for rule in self._rules:
            if rule.name in self._open and (ending or self._window_passed(rule)):
                self._open.discard(rule.name)
                fired.append(self._absent(rule, now))
        return fired

    def _window_passed(self, rule: AlertRule) -> bool:
        """Whether every track the rule hears has passed its window with no phrase begun inside it still open."""
        assert rule.absent_within_s is not None  # only absence rules are ever open
        window = rule.absent_within_s
        tracks = [rule.track] if rule.track is not None else list(self._tracks)
        for name in tracks:
            track = self._heard.get(name)
            if track is None or track.passed < window or _phrase_begun_before(rule, track.tail, window):
                return False
        return True

    def _absent(self, rule: AlertRule, now: datetime.datetime) -> Alert:
        window = rule.absent_within_s or 0.0
        track = rule.track or ""
        return Alert(
            alert_id=alert_id(self.call_sid, rule.name, 0.0), call_sid=self.call_sid, rule=rule.name, kind=ABSENT,
            speaker=self._speakers.get(track, ""), track=track, phrase="", text="", start=0.0, end=window,
            raised_at=now,
        )  # fmt: skip


def _heard_words(transcript: Transcript) -> list[_Heard]:
    """The transcript's words as compared, in order; a word of punctuation alone is none."""
    heard = []
    for word in transcript.words:
        for compared in words_of(word.word):
            heard.append(_Heard(compared, word.punctuated_word or word.word, word.start, word.end))
    return heard


def _phrase_begun_before(rule: AlertRule, tail: list[_Heard], window: float) -> bool:
    """Whether the tail ends in the start of one of the rule's phrases, begun before `window`: the next final
    may finish it in time."""
    said = [heard.word for heard in tail]
    for phrase_words in rule.phrase_words:
        for size in range(1, min(len(phrase_words), len(tail) + 1)):
            if tuple(said[len(said) - size :]) == phrase_words[:size] and tail[len(tail) - size].start < window:
                return True
    return False
