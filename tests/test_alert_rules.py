"""ALERT_RULES: a rule that cannot work stops start-up with exit 2 and a line naming the rule and what is wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from service.alert_rules import AlertRule, parse_rules, words_of
from service.settings import Settings, describe_error, load_settings

CANCEL = {"name": "cancel", "phrases": ["Cancel my account", "close my account"], "speaker": "caller"}
DISCLOSURE = {"name": "recording disclosure", "phrases": ["this call is recorded"], "speaker": "agent",
              "absent_within_s": 30}  # fmt: skip


def test_rules_are_parsed_with_their_phrases_as_words() -> None:
    """Each rule keeps its phrases as written and as the words they are matched by."""
    cancel, disclosure = parse_rules(json.dumps([CANCEL, DISCLOSURE]))
    assert cancel == AlertRule(
        name="cancel", phrases=("Cancel my account", "close my account"),
        phrase_words=(("cancel", "my", "account"), ("close", "my", "account")), speaker="caller",
    )  # fmt: skip
    assert (cancel.track, disclosure.track, disclosure.absent_within_s) == ("inbound", "outbound", 30.0)
    assert (cancel.hears("inbound"), cancel.hears("outbound")) == (True, False)
    anyone = parse_rules('[{"name": "x", "phrases": ["x"]}]')[0]
    assert (anyone.track, anyone.hears("inbound"), anyone.hears("outbound")) == (None, True, True)


@pytest.mark.parametrize("text", ["", "   ", "[]"])
def test_no_rules_is_no_alerts(text: str) -> None:
    """Unset, blank or an empty list: no rules."""
    assert parse_rules(text) == ()


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("[{", "is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 3"),
        ('{"name": "x"}', "must be a JSON list of rules"),
        ('["cancel"]', "rule 1 is not a JSON object"),
        ('[{"phrases": ["x"]}]', "rule 1 has no name"),
        ('[{"name": " ", "phrases": ["x"]}]', "rule 1 has no name"),
        ('[{"name": "a", "phrases": []}]', 'rule "a": phrases must be a non-empty list of phrases'),
        ('[{"name": "a"}]', 'rule "a": phrases must be a non-empty list of phrases'),
        ('[{"name": "a", "phrases": "cancel"}]', 'rule "a": phrases must be a non-empty list of phrases'),
        ('[{"name": "a", "phrases": ["ok", ""]}]', 'rule "a": phrase 2 has no words'),
        ('[{"name": "a", "phrases": ["?!"]}]', 'rule "a": phrase 1 has no words'),
        ('[{"name": "a", "phrases": [3]}]', 'rule "a": phrase 1 is not a string'),
        ('[{"name": "a", "phrases": ["x"], "speaker": "bob"}]', 'speaker must be "caller" or "agent", not "bob"'),
        ('[{"name": "a", "phrases": ["x"], "absent_within_s": 0}]', 'rule "a": absent_within_s must be a positive'),
        ('[{"name": "a", "phrases": ["x"], "absent_within_s": "30"}]', 'rule "a": absent_within_s must be a positive'),
        ('[{"name": "a", "phrases": ["x"], "absent_within_s": true}]', 'rule "a": absent_within_s must be a positive'),
        ('[{"name": "a", "phrases": ["x"], "phrase": ["y"]}]', 'rule "a": unknown key "phrase"'),
        ('[{"name": "a", "phrases": ["x"]}, {"name": "a", "phrases": ["y"]}]', 'rule "a": the name is taken by rule 1'),
    ],
)  # fmt: skip
def test_a_rule_that_cannot_work_is_named_with_what_is_wrong(rules: str, message: str) -> None:
    """Bad JSON, a rule without phrases, an unknown speaker or key, a duplicate name: each said, by rule."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_rules(rules)


def test_every_problem_is_said_at_once() -> None:
    """Two broken rules: both named in the one message, so a fix does not reveal the next problem."""
    with pytest.raises(ValueError, match=r'rule "a": phrases .*; rule "b": speaker must be'):
        parse_rules('[{"name": "a", "phrases": []}, {"name": "b", "phrases": ["x"], "speaker": "boss"}]')


def test_the_setting_takes_inline_json_or_a_file(tmp_path: Path) -> None:
    """ALERT_RULES is the JSON itself, or the path of a file that holds it."""
    path = tmp_path / "rules.json"
    path.write_text(json.dumps([CANCEL]), encoding="utf-8")
    assert Settings(alert_rules=json.dumps([CANCEL])).alert_rules == Settings(alert_rules=str(path)).alert_rules
    assert Settings(alert_rules=str(path)).alert_rules[0].name == "cancel"
    assert Settings().alert_rules == ()


def test_an_unreadable_rules_file_is_a_settings_error(tmp_path: Path) -> None:
    """A path that is not there: ALERT_RULES names the file and why it could not be read."""
    with pytest.raises(ValidationError) as raised:
        Settings(alert_rules=str(tmp_path / "missing.json"))
    assert describe_error(raised.value).splitlines()[1] == (
        f"  ALERT_RULES: Value error, cannot read the rules file {tmp_path / 'missing.json'}: FileNotFoundError"
    )


def test_a_bad_rule_stops_start_up_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """load_settings (what `serve` and the app call) exits 2 and prints the variable, the rule and the problem."""
    monkeypatch.setenv("ALERT_RULES", '[{"name": "cancel", "phrases": [], "speaker": "caller"}]')
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert exited.value.code == 2
    assert (
        'ALERT_RULES: Value error, rule "cancel": phrases must be a non-empty list of phrases'
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Cancel my account.", ("cancel", "my", "account")),
        ("  don't   CANCEL  ", ("dont", "cancel")),
        ("e-mail - me", ("email", "me")),
        ("Über café", ("über", "café")),
        ("?! ...", ()),
    ],
)
def test_words_are_compared_without_case_or_punctuation(text: str, words: tuple[str, ...]) -> None:
    """Case folded, punctuation dropped, split on white space; punctuation alone is no word."""
    assert words_of(text) == words


@given(st.text())
def test_parsing_any_text_gives_rules_or_a_value_error(text: str) -> None:
    """Whatever ALERT_RULES holds, the parser answers rules or a ValueError, which start-up reports."""
    try:
        rules = parse_rules(text)
    except ValueError:
        return
    assert all(rule.phrase_words and all(rule.phrase_words) for rule in rules)
