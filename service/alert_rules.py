"""Protocol layer (no I/O): ALERT_RULES, the live alerts' rules, parsed and checked before anything runs.

A rule names the phrases that raise it (`phrases`), optionally whose words count (`speaker`: `caller`, Twilio's
inbound track, or `agent`, the outbound one, whatever SPEAKER_INBOUND and SPEAKER_OUTBOUND label them), and,
for a disclosure that must be made, `absent_within_s`: the rule then fires when none of its phrases was said in
that many seconds from the call's start. `parse_rules` turns the JSON into `AlertRule`s or raises `ValueError`
naming every rule that cannot work and why; the settings call it, so a bad rule stops start-up (exit 2).

Phrases and spoken words are compared as `words_of` makes them: case-folded, punctuation dropped, split on
white space, so "Cancel my account." matches the words `cancel`, `my`, `account,`. The matcher lives in
`service/alerts/matching.py`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Final, Literal

RuleSpeaker = Literal["caller", "agent"]
SPEAKERS: Final[tuple[RuleSpeaker, ...]] = ("caller", "agent")
TRACK_OF_SPEAKER: Final[dict[str, str]] = {"caller": "inbound", "agent": "outbound"}  # as `speaker_for` names them
RULE_KEYS: Final = ("name", "phrases", "speaker", "absent_within_s")


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One rule: `phrases` as written, `phrase_words` as matched (each phrase's words, from `words_of`)."""

    name: str
    phrases: tuple[str, ...]
    phrase_words: tuple[tuple[str, ...], ...]
    speaker: RuleSpeaker | None = None  # None: anyone's words count
    absent_within_s: float | None = None  # set: the rule fires on the phrases' absence, not on a match

    @property
    def track(self) -> str | None:
        """The Twilio track whose words count (`inbound` for the caller, `outbound` for the agent), or None: any."""
        return TRACK_OF_SPEAKER[self.speaker] if self.speaker is not None else None

    def hears(self, track: str) -> bool:
        """Whether words on `track` count for this rule."""
        return self.speaker is None or TRACK_OF_SPEAKER[self.speaker] == track


def words_of(text: str) -> tuple[str, ...]:
    """`text` as the words matching compares: case-folded, every character but letters and digits dropped (so
    "Don't," is `dont`), split on white space; a token left empty (a lone dash) is no word."""
    words = ("".join(char for char in token.casefold() if char.isalnum()) for token in text.split())
    return tuple(word for word in words if word)


def parse_rules(text: str) -> tuple[AlertRule, ...]:
    """ALERT_RULES' JSON as rules; `ValueError` naming each rule that cannot work (by name, else by position)."""
    if not text.strip():
        return ()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, list):
        # A ValueError, not a TypeError: pydantic reports only a ValueError as the setting's problem.
        raise ValueError(  # noqa: TRY004
            'must be a JSON list of rules, such as [{"name": "cancel", "phrases": ["cancel my account"]}]'
        )
    rules: list[AlertRule] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(data, start=1):
        rule, rule_problems = _rule(item, position)
        if rule is not None and rule.name in seen:
            rule_problems.append(f'rule "{rule.name}": the name is taken by rule {seen[rule.name]}: names must differ')
        if rule is not None:
            seen.setdefault(rule.name, position)
        problems += rule_problems
        if rule is not None and not rule_problems:
            rules.append(rule)
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(rules)


def _rule(item: object, position: int) -> tuple[AlertRule | None, list[str]]:
    """One rule and its problems; None when it has no name to be known by."""
    if not isinstance(item, dict):
        return None, [f"rule {position} is not a JSON object"]
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        return None, [f"rule {position} has no name (a non-empty string)"]
    label = f'rule "{name}"'
    problems = [
        f'{label}: unknown key "{key}" (a rule takes {", ".join(RULE_KEYS)})' for key in item if key not in RULE_KEYS
    ]
    phrases, phrase_problems = _phrases(item.get("phrases"))
    problems += [f"{label}: {problem}" for problem in phrase_problems]
    speaker = item.get("speaker")
    if speaker is not None and speaker not in SPEAKERS:
        problems.append(f'{label}: speaker must be "caller" or "agent", not {json.dumps(speaker)}')
    within = item.get("absent_within_s")
    if within is not None and not _positive_number(within):
        problems.append(f"{label}: absent_within_s must be a positive number of seconds, not {json.dumps(within)}")
    rule = AlertRule(
        name=name, phrases=phrases, phrase_words=tuple(words_of(phrase) for phrase in phrases),
        speaker=speaker if speaker in SPEAKERS else None,
        absent_within_s=float(within) if within is not None and _positive_number(within) else None,
    )  # fmt: skip
    return rule, problems


def _phrases(value: object) -> tuple[tuple[str, ...], list[str]]:
    if not isinstance(value, list) or not value:
        return (), ["phrases must be a non-empty list of phrases"]
    problems = []
    for position, phrase in enumerate(value, start=1):
        if not isinstance(phrase, str):
            problems.append(f"phrase {position} is not a string")
        elif not words_of(phrase):
            problems.append(f"phrase {position} has no words")
    return tuple(phrase for phrase in value if isinstance(phrase, str)), problems


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
