"""Journal lines: one this version wrote reads back; any other line is a JournalError, never a guessed write."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from service.storage.writes import JOURNAL_VERSION, JournalError, Write, decode, encode, grouped_statements, runs

T0 = datetime.datetime(2025, 3, 4, 10, 0, 0, tzinfo=datetime.UTC)
STARTED = Write("call_started", {"call_sid": "CA1", "started_at": T0, "tracks": ["inbound"]}, "MZ1")


def line(**changes: Any) -> bytes:
    """STARTED's journal line with top-level fields replaced (or removed, for ...)."""
    record = json.loads(encode(STARTED))
    for name, value in changes.items():
        if value is ...:
            del record[name]
        else:
            record[name] = value
    return json.dumps(record).encode() + b"\n"


def test_a_line_round_trips_with_its_datetimes() -> None:
    assert decode(encode(STARTED)) == STARTED
    assert decode(line()) == STARTED  # whitespace between fields is not this version's, but still its JSON


def test_a_datetime_field_that_is_not_a_string_is_kept_as_written() -> None:
    """Only ISO strings in the datetime columns become datetimes; a null stays None."""
    write = decode(line(row={"call_sid": "CA1", "ended_at": None}))
    assert write.row == {"call_sid": "CA1", "ended_at": None}


@pytest.mark.parametrize(
    ("data", "why"),
    [
        # Another version's line or kind: said as such, not as an error decoding it.
        (line(v=JOURNAL_VERSION + 1), "^not a journal line of this version$"),
        (line(v=str(JOURNAL_VERSION)), "^not a journal line of this version$"),
        (line(kind="call_deleted"), "^not a journal line of this version$"),
        (line(v=...), "KeyError"),
        (line(kind=...), "KeyError"),
        (line(row=...), "KeyError"),
        (line(stream_sid=...), "KeyError"),
        (line(row=[1, 2]), "TypeError"),
        (line(row={"started_at": "yesterday"}), "ValueError"),
        (b'{"v": 1, "kind": "utterance"', "JSONDecodeError"),  # cut off mid-line by a crash
        (b"\xff\xfe\n", "UnicodeDecodeError"),
        (b"[]\n", "TypeError"),
        (b"null\n", "TypeError"),
    ],
)
def test_an_unreadable_line_is_a_journal_error(data: bytes, why: str) -> None:
    with pytest.raises(JournalError, match=why):
        decode(data)


def test_consecutive_finals_and_alerts_make_one_run_and_every_other_write_its_own() -> None:
    """The writer applies a run as one executemany per table; a call's start or end never joins one, and the
    order is the batch's."""
    final = Write("utterance", {"call_sid": "CA1"}, "MZ1")
    alert = Write("alert", {"call_sid": "CA1"}, "")
    ended = Write("call_ended", {"call_sid": "CA1"}, "MZ1")
    batch = [STARTED, final, alert, final, alert, final, ended, ended, final]
    assert runs(batch) == [(STARTED,), (final, alert, final, alert, final), (ended,), (ended,), (final,)]
    assert runs([]) == []


def test_a_run_writes_each_calls_stand_in_once_then_each_tables_rows_in_order() -> None:
    """CA2's alert first, then finals of CA1 around one of CA2: the stand-in rows are CA2's (the alert's, with no
    stream) and CA1's (its first final's); the utterance rows are all three in the run's order, so a later
    delivery of the same utterance wins; then the alert."""
    alert = Write("alert", {"call_sid": "CA2", "alert_id": "a"}, "")
    first = Write("utterance", {"call_sid": "CA1", "text": "one"}, "MZ1")
    other = Write("utterance", {"call_sid": "CA2", "text": "two"}, "MZ2")
    again = Write("utterance", {"call_sid": "CA1", "text": "one, again"}, "MZ9")
    [(_, stand_ins), (_, utterances), (_, alerts)] = grouped_statements("sqlite", [alert, first, other, again], T0)
    assert [(row["call_sid"], row["stream_sid"]) for row in stand_ins] == [("CA2", ""), ("CA1", "MZ1")]
    assert [row["text"] for row in utterances] == ["one", "two", "one, again"]
    assert alerts == [alert.row]
    assert len(grouped_statements("sqlite", [first, again], T0)) == 2  # no alerts: no statement for them
