"""`python -m service calls list | show`: the stored calls as a table, and a transcript in any format."""

from __future__ import annotations

import argparse
import asyncio
import datetime
from pathlib import Path
from typing import Any

import pytest

from service.cli import calls as calls_cli
from service.storage import queries
from tests.helpers.callsdb import T0, insert, make_call, make_database, sqlite_file_url, two_speaker_utterances
from tests.helpers.paths import GOLDEN

MINUTE = datetime.timedelta(minutes=1)


def seed(tmp_path: Path, rows: list[Any]) -> None:
    async def fill() -> None:
        engine = await make_database(tmp_path)
        try:
            await insert(engine, rows)
        finally:
            await engine.dispose()

    asyncio.run(fill())


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DATABASE_URL pointing at an empty database in tmp_path, as an operator's environment would."""
    monkeypatch.setenv("DATABASE_URL", sqlite_file_url(tmp_path))
    seed(tmp_path, [])
    return tmp_path


def run(*argv: str) -> int:
    """The command as `python -m service calls …` runs it (the `calls` sub-commands on their own parser)."""
    parser = argparse.ArgumentParser(prog="python -m service")
    calls_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["calls", *argv])
    result: int = args.handler(args)
    return result


def test_list_shows_calls_newest_first_as_a_table(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`calls list`: a header, then one aligned row per call with start, duration, numbers, status."""
    seed(
        database,
        [make_call("CA1"), make_call("CA2", started_at=T0 + MINUTE, status="active", ended_at=None, ended_by=None)],
    )
    assert run("list") == 0
    assert capsys.readouterr().out.splitlines() == [
        "CALL  STARTED (UTC)        DURATION  FROM          TO            STATUS     ENDED BY",
        "CA2   2025-01-02 03:05:05  -         +14155550100  +14155550199  active     -",
        "CA1   2025-01-02 03:04:05  0:01:35   +14155550100  +14155550199  completed  stop",
    ]


def test_list_says_when_there_are_no_calls(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`calls list` on an empty database prints "no calls" and exits 0."""
    assert run("list") == 0
    assert capsys.readouterr().out == "no calls\n"


def test_list_filters_by_number_and_activity(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--number matches either end of the call; --active keeps only calls still streaming."""
    seed(database, [
        make_call("CAfrom", from_number="+15550001"),
        make_call("CAto", to_number="+15550001", started_at=T0 + MINUTE),
        make_call("CAlive", status="active", ended_at=None, started_at=T0 + 2 * MINUTE),
    ])  # fmt: skip
    run("list", "--number", "+15550001")
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["CAto", "CAfrom"]
    run("list", "--active")
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["CAlive"]


def test_limit_may_span_several_pages(
    database: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--limit larger than one page of list_calls follows the cursor and still stops at the limit."""
    monkeypatch.setattr(queries, "MAX_LIMIT", 2)
    seed(database, [make_call(f"CA{i}", started_at=T0 + MINUTE * i) for i in range(5)])
    run("list", "--limit", "4")
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["CA4", "CA3", "CA2", "CA1"]


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_a_bad_limit_is_a_usage_error(database: Path, capsys: pytest.CaptureFixture[str], limit: str) -> None:
    """--limit must be a whole number of 1 or more: argparse exits 2 and says so."""
    with pytest.raises(SystemExit) as exited:
        run("list", "--limit", limit)
    assert exited.value.code == 2
    assert "must be a whole number, 1 or more" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fmt", "golden"), [(None, "txt"), ("text", "txt"), ("json", "json"), ("srt", "srt"), ("vtt", "vtt")]
)
def test_show_prints_the_transcript_as_the_api_gives_it(
    database: Path, capsys: pytest.CaptureFixture[str], fmt: str | None, golden: str
) -> None:
    """`calls show CA1 [--format F]` prints exactly the golden file the API serves (text by default)."""
    seed(database, [make_call("CA1"), *two_speaker_utterances("CA1")])
    assert run("show", "CA1", *(["--format", fmt] if fmt else [])) == 0
    assert capsys.readouterr().out == (GOLDEN / f"two_speakers.{golden}").read_text(encoding="utf-8")


def test_show_of_an_unknown_call_fails_with_a_message(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`calls show` of a call that does not exist: nothing on stdout, "no call …" on stderr, exit 1."""
    assert run("show", "CAnope") == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "no call CAnope\n")


def test_a_call_that_never_streamed_is_listed_and_shown_with_its_reason(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A call recorded as not streamed: `list` shows its status and how; `show` prints no transcript on stdout
    (exit 0: the call exists) and on stderr why and what to check."""
    reason, fix = "no stream of it started within STREAM_START_TIMEOUT_S (10 s)", "look the call up in Twilio"
    not_streamed = make_call(
        "CA9", stream_sid="", status="not_streamed", ended_by="no_stream", summary={"reason": reason, "fix": fix},
        ended_at=T0 + datetime.timedelta(seconds=10),
    )  # fmt: skip
    seed(database, [not_streamed])
    assert run("list") == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-2:] == ["not_streamed", "no_stream"]
    assert run("show", "CA9") == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"call CA9 was not streamed (no_stream): {reason}\nto check: {fix}\n"


def test_a_database_without_the_schema_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before `db upgrade` has run: exit 1 with the driver's reason and a hint, not a traceback, and no URL."""
    monkeypatch.setenv("DATABASE_URL", sqlite_file_url(tmp_path))
    assert run("list") == 1
    assert run("show", "CA1") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "cannot read the database: no such table: calls"
    assert "db upgrade" in err[1]
    assert str(tmp_path) not in "\n".join(err)
