"""`python -m service calls list | show | analyze`: the stored calls as a table, a transcript in any format, and a
call's analysis run by hand."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from service.cli import calls as calls_cli
from service.storage import queries
from service.storage.schema import AlertRow, CoveragePart
from tests.helpers.callsdb import (
    T0,
    insert,
    make_call,
    make_database,
    make_utterance,
    sqlite_file_url,
    two_speaker_utterances,
)
from tests.helpers.credentials import DEEPGRAM_KEY
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch, summary_for
from tests.helpers.paths import GOLDEN, ROOT

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
        "CALL  STARTED (UTC)        DURATION  FROM          TO            STATUS     ENDED BY  COVERAGE  ALERTS",
        "CA2   2025-01-02 03:05:05  -         +14155550100  +14155550199  active     -         -         -",
        "CA1   2025-01-02 03:04:05  0:01:35   +14155550100  +14155550199  completed  stop      -         -",
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


def coverage_rows(call_sid: str, *parts: tuple[str, str, int, str]) -> list[CoveragePart]:
    return [
        CoveragePart(call_sid=call_sid, stream_sid=f"MZ{call_sid}", track="inbound", part=part, category=category,
                     ms=ms, reason=reason, updated_at=T0)
        for part, category, ms, reason in parts
    ]  # fmt: skip


def test_show_says_a_complete_transcript_is_complete_on_stderr(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """stdout stays the caption file; stderr says the transcript is complete, and how much audio it covers."""
    seed(
        database, [make_call("CA1"), *two_speaker_utterances("CA1"), *coverage_rows("CA1", ("live", "live", 95000, ""))]
    )
    assert run("show", "CA1") == 0
    captured = capsys.readouterr()
    assert captured.out == (GOLDEN / "two_speakers.txt").read_text(encoding="utf-8")
    assert captured.err == "coverage: complete: all 95 s of audio transcribed\nalerts: none\n"


def test_show_of_a_call_waiting_for_batch_says_what_is_missing_and_why_it_is_empty(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No words, its audio in the spool: never an empty answer with nothing said."""
    waiting = ("spool:e1", "waiting", 5100, "DEEPGRAM_API_KEY is not set")
    seed(database, [make_call("CA1"), *coverage_rows("CA1", waiting, ("live", "live", 0, ""))])
    assert run("show", "CA1") == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "coverage: incomplete: 5.1 s waiting for batch: DEEPGRAM_API_KEY is not set\n"
        "the transcript is empty: its audio is waiting for batch transcription (see coverage above)\n"
        "alerts: none\n"
    )


@pytest.mark.parametrize(
    ("call", "parts", "said"),
    [
        (make_call("CA1", ended_at=None, status="active"), [], "coverage: not counted yet: the call is still on\n"
         "the transcript is empty: nothing final has been said yet\n"),
        (make_call("CA1"), [], "coverage: not recorded for this call (it was stored before callscribe counted "
         "coverage)\nthe transcript is empty: no final words were stored\n"),
        (make_call("CA1"), [("live", "live", 0, "")], "coverage: complete: all 0 s of audio transcribed\n"
         "the transcript is empty: Twilio sent no audio\n"),
        (make_call("CA1"), [("live", "live", 3000, "")], "coverage: complete: all 3 s of audio transcribed\n"
         "the transcript is empty: nobody said anything the engine heard as words\n"),
        (make_call("CA1"), [("lost:spool_failed", "lost", 3000, "spool_failed")],
         "coverage: incomplete: 3 s lost: could not be written to the spool\n"
         "the transcript is empty: none of its audio could be transcribed (see coverage above)\n"),
    ],
)  # fmt: skip
def test_show_of_an_empty_transcript_says_why(
    database: Path, capsys: pytest.CaptureFixture[str], call: Any, parts: list[Any], said: str
) -> None:
    seed(database, [call, *coverage_rows("CA1", *parts)])
    assert run("show", "CA1") == 0
    assert capsys.readouterr().err == said + "alerts: none\n"


def test_list_shows_each_calls_coverage_in_a_few_words(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(database, [
        make_call("CA1"), make_call("CA2", started_at=T0 + MINUTE),
        *coverage_rows("CA1", ("live", "live", 1000, "")),
        *coverage_rows("CA2", ("spool:e", "waiting", 5100, "r"), ("lost:x", "lost", 400, "chunks_missing")),
    ])  # fmt: skip
    assert run("list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("stop      5.1 s waiting, 0.4 s lost  -")
    assert lines[2].split("stop", 1)[1].split() == ["complete", "-"]


def test_a_calls_alerts_are_counted_in_the_list_and_told_by_show(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`list` gives each call's count of live alerts; `show` says each one on stderr, after the coverage: where on
    the call's timeline, the rule, who, and the words that fired it (or that none of its phrases was said)."""
    said = AlertRow(
        alert_id="a1", call_sid="CA1", rule="cancel", kind="said", speaker="caller", track="inbound",
        phrase="cancel my account", text="I want to cancel\nmy account", start=61.5, end=63.25, raised_at=T0,
    )  # fmt: skip
    absent = AlertRow(
        alert_id="a2", call_sid="CA1", rule="greeting", kind="absent", speaker="agent", track="outbound",
        phrase="", text="", start=0.0, end=30.0, raised_at=T0,
    )  # fmt: skip
    seed(database, [make_call("CA1"), make_call("CA2", started_at=T0 + MINUTE), said, absent])
    assert run("list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "ALERTS"
    assert [line.split()[0] + " " + line.split()[-1] for line in lines[1:]] == ["CA2 -", "CA1 2"]
    assert run("show", "CA1") == 0
    assert capsys.readouterr().err.splitlines()[-3:] == [
        "alerts: 2",
        "  00:00.00-00:30.00 greeting (agent): none of its phrases said in that window",
        '  01:01.50-01:03.25 cancel (caller): said "I want to cancel my account"',
    ]


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
    assert capsys.readouterr().out.splitlines()[1].split()[-4:] == ["not_streamed", "no_stream", "-", "-"]
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


async def test_analyze_runs_a_calls_analysis_by_hand_and_prints_it(tmp_path: Path) -> None:
    """`calls analyze CA1`, as a process, against the fake /v1/read: the stored analysis as JSON, exit 0; a call
    too short is printed with its reason, exit 1; an unknown call is "no call", exit 1."""
    sentence = "I would like to talk about my bill because it looks wrong to me today"
    engine = await make_database(tmp_path)
    try:
        await insert(engine, [
            make_call("CA1"), *(make_utterance("CA1", ("inbound", "outbound")[n % 2], 2.0 * n, 2.0 * n + 1, sentence)
                                for n in range(4)),
            make_call("CA2"), make_utterance("CA2", "inbound", 0.0, 1.0, "hello there"),
        ])  # fmt: skip
    finally:
        await engine.dispose()
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as read_api:
        env = {
            "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "DATABASE_URL": sqlite_file_url(tmp_path),
            "DEEPGRAM_API_KEY": DEEPGRAM_KEY, "DEEPGRAM_BATCH_URL": read_api.url, "ANALYSIS": "on",
        }  # fmt: skip

        async def analyze(call_sid: str) -> tuple[int, str, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service", "calls", "analyze", call_sid, cwd=tmp_path, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(process.communicate(), timeout=60)
            return process.returncode or 0, out.decode(), err.decode()

        done, short, missing = await analyze("CA1"), await analyze("CA2"), await analyze("CA404")
    code, out, _ = done
    printed = json.loads(out)
    assert code == 0
    assert (printed["status"], printed["summary"]) == ("done", summary_for("\n".join([sentence] * 4)))
    assert set(printed["sentiment"]["speakers"]) == {"caller", "agent"}
    code, out, err = short
    assert code == 1
    assert json.loads(out)["status"] == "skipped"
    assert err == "not analysed: 2 words: fewer than the 50 an analysis needs\n"
    assert missing == (1, "", "no call CA404\n")
    assert len(read_api.requests) == 1
