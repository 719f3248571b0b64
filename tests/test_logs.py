"""Log rendering: a person can follow a call in text format; JSON is one object per line."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog

from service import logs
from service.calls.observers import log_transcript
from service.calls.transcript import Transcript
from service.settings import LogFormat
from tests.helpers import log_flood
from tests.helpers.paths import ROOT


@pytest.fixture
def reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.getLogger().handlers.clear()


def _transcript(is_final: bool) -> Transcript:
    return Transcript(
        call_sid="CA123",
        stream_sid="MZ456",
        track="inbound",
        is_final=is_final,
        speech_final=is_final,
        from_finalize=False,
        text="thanks for calling",
        start=61.5,
        end=63.25,
        confidence=0.98,
        words=(),
        request_id="req-1",
    )


@pytest.mark.usefixtures("reset_logging")
def test_text_format_shows_final_and_interim_lines_a_person_can_follow() -> None:
    """Text logs: [FINAL]/[INTERIM], the call, the time on the call's clock, the track and the words."""
    out = io.StringIO()
    logs.configure("INFO", "text", stream=out)
    log_transcript(_transcript(is_final=True))
    log_transcript(_transcript(is_final=False))
    final, interim = out.getvalue().splitlines()
    assert final.endswith("[FINAL] CA123 01:01.50-01:03.25 inbound: thanks for calling")
    assert "[INTERIM] CA123 01:01.50-01:03.25 inbound: thanks for calling" in interim


@pytest.mark.usefixtures("reset_logging")
def test_json_format_is_one_object_per_line_with_the_transcript_fields() -> None:
    """JSON logs carry event, call_sid, stream_sid, track, is_final, speech_final, text, start and end."""
    out = io.StringIO()
    logs.configure("INFO", "json", stream=out)
    log_transcript(_transcript(is_final=True))
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "transcript"
    assert {k: record[k] for k in ("call_sid", "stream_sid", "track", "is_final", "speech_final", "text")} == {
        "call_sid": "CA123",
        "stream_sid": "MZ456",
        "track": "inbound",
        "is_final": True,
        "speech_final": True,
        "text": "thanks for calling",
    }
    assert (record["start"], record["end"]) == (61.5, 63.25)


@pytest.mark.usefixtures("reset_logging")
def test_bound_call_context_and_library_logs_share_the_format() -> None:
    """Lines carry the bound call_sid; stdlib logging (Hypercorn, websockets) is rendered as JSON too."""
    out = io.StringIO()
    logs.configure("INFO", "json", stream=out)
    structlog.contextvars.bind_contextvars(call_sid="CA9")
    structlog.get_logger("callscribe.call").info("call.started", tracks="inbound")
    logging.getLogger("hypercorn.error").warning("Running on %s", "http://x")
    logging.getLogger("websockets.client").debug("> frame")  # held back: websockets stays at INFO
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["call_sid"] == "CA9"
    assert first["level"] == "info"
    assert second["event"] == "Running on http://x"
    assert second["logger"] == "hypercorn.error"


# Characters a client can put in a path, a form field or (through Deepgram) a transcript, that could break a line
# or hide what it says: newline, carriage return, line separator, no-break space, zero-width space,
# right-to-left override, and the escape that starts an ANSI colour.
BREAKERS = ["\n", "\r", "\u2028", "\u00a0", "\u200b", "\u202e", "\x1b[31m"]
FORGED = "2026-12-07T10:00:00Z [FINAL] CA0000 00:00.00-00:01.00 caller: forged"


def _one_line(rendered: str) -> str:
    [line] = rendered.splitlines()  # splitlines splits on U+2028 and U+0085 too, as some readers do
    assert line.isprintable(), line
    return line


@pytest.mark.parametrize("breaker", BREAKERS)
def test_text_values_and_event_names_that_are_not_plain_are_quoted_and_escaped(breaker: str) -> None:
    """A value or event name with a line break or an invisible character stays on the line, as a JSON string."""
    path = f"/api/calls/x{breaker}{FORGED.replace(' ', breaker)}"
    event = {"timestamp": "T", "level": "warning", "event": f"Bad{breaker}name", "path": path, "status": 401}
    line = _one_line(logs.render_text(None, "warning", event))
    quoted_path = line.split(" path=", 1)[1].rsplit(" status=", 1)[0]
    assert json.loads(quoted_path) == path
    assert json.loads(line.split()[2]) == f"Bad{breaker}name"
    assert line.endswith(" status=401")


@pytest.mark.parametrize("breaker", BREAKERS)
def test_a_transcript_line_cannot_hold_a_second_line(breaker: str) -> None:
    """The words, speaker and call of a transcript line are escaped: a forged [FINAL] stays inside the text."""
    event = {
        "timestamp": "T",
        "event": "transcript",
        "is_final": True,
        "call_sid": f"CA1{breaker}",
        "speaker": f"caller{breaker}",
        "text": f"hello{breaker}{FORGED}",
        "start": 1.0,
        "end": 2.0,
    }
    line = _one_line(logs.render_text(None, "info", event))
    assert line.startswith("T [FINAL] ")
    assert line.count("[FINAL]") == 2  # the forged one is still there, visibly inside the words


def test_plain_values_stay_bare_and_readable_words_stay_as_they_are() -> None:
    """Plain ASCII values are written bare; accented and CJK words are not escaped; a space or quote is quoted."""
    event = {"timestamp": "T", "level": "info", "event": "api.refused", "path": "/api/calls/CA1", "why": 'say "x"'}
    assert logs.render_text(None, "info", event) == 'T INFO    api.refused path=/api/calls/CA1 why="say \\"x\\""'
    words = {"timestamp": "T", "event": "transcript", "is_final": True, "call_sid": "CA1", "track": "inbound"}
    line = logs.render_text(None, "info", words | {"text": "déjà vu, 你好 \\ back", "start": 0, "end": 1})
    assert line.endswith("inbound: déjà vu, 你好 \\\\ back")


def _fail(message: str) -> None:
    raise ValueError(message)


@pytest.mark.usefixtures("reset_logging")
def test_a_traceback_is_indented_so_its_lines_cannot_pass_for_records() -> None:
    """An exception's message with a newline ends up on an indented continuation line, escaped."""
    out = io.StringIO()
    logs.configure("INFO", "text", stream=out)
    try:
        _fail(f"bad\n{FORGED}\u2028x")
    except ValueError:
        structlog.get_logger().exception("boom")
    first, *rest = out.getvalue().splitlines()
    assert " ERROR   boom" in first
    assert all(line.startswith("    ") for line in rest)
    assert f"    {FORGED}\\u2028x" in rest


@pytest.mark.usefixtures("reset_logging")
def test_json_lines_are_ascii_so_no_reader_splits_them() -> None:
    """JSON lines escape U+2028, U+0085 and every non-ASCII character, and parse back to the same text."""
    out = io.StringIO()
    logs.configure("INFO", "json", stream=out)
    text = f"déjà\u2028{FORGED}\x85\n"
    structlog.get_logger().info("transcript", text=text)
    logging.getLogger("hypercorn.error").warning("path %s", text)
    rendered = out.getvalue()
    assert rendered.isascii()
    first, second = (json.loads(line) for line in rendered.splitlines())
    assert (first["text"], second["event"]) == (text, f"path {text}")


@pytest.mark.usefixtures("reset_logging")
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_line_past_the_atomic_size_is_shortened_other_fields_first(fmt: LogFormat) -> None:
    """Past PIPE_BUF, long fields are cut first, then the text, each with a marker; JSON still parses."""
    out = io.StringIO()
    logs.configure("INFO", fmt, stream=out)
    long_text = "word " * 1000
    structlog.get_logger().info("note", call_sid="CA1", why="short words", detail="x" * 5000)
    structlog.get_logger().info("transcript", call_sid="CA1", is_final=True, text=long_text)
    structlog.get_logger().info("many", **{f"field{n}": n for n in range(1000)})
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(len(line.encode()) + 1 <= select.PIPE_BUF for line in lines)
    if fmt == "json":
        kept, cut, many = (json.loads(line) for line in lines)
        assert kept["why"] == "short words"
        assert kept["detail"].startswith("xxx")
        assert kept["detail"].endswith("chars]")
        assert cut["text"].startswith(long_text[:3000])
        assert "the whole text is in the database, the feed and the webhooks" in cut["text"]
        assert (many["event"], many["log_line_cut"].endswith("fields left out")) == ("many", True)
    else:
        assert ' why="short words" detail=' in lines[0]
        assert lines[0].endswith('chars]"')
        assert "the whole text is in the database" in lines[1]


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "PYTHONUNBUFFERED"])
def test_two_workers_sharing_a_pipe_never_mix_their_lines(unbuffered: bool) -> None:
    """Two processes, a minute of 40 calls' transcripts (some over 4 and 8 KiB) to one pipe: every line whole, once.

    Unbuffered, the old logger wrote a line and its newline in two writes; buffered, a line longer than the
    buffer went out in two.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    env |= {"PYTHONUNBUFFERED": "1"} if unbuffered else {}
    data = _run_workers(("a", "b"), FLOOD_LINES, env)
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.split(b"\n")[:-1]]  # each line parses on its own
    seen = sorted(record["text"].split(" ", 1)[0] for record in records)
    assert seen == sorted(f"{name}-{n}" for name in "ab" for n in range(FLOOD_LINES))
    long_ones = [record for record in records if len(record["text"]) > 3000]
    assert len(long_ones) == 2 * len(range(0, FLOOD_LINES, log_flood.LONG_EVERY))
    assert all(record["text"].endswith("the feed and the webhooks]") for record in long_ones)


# 40 calls x 2 tracks x ~3 results a second x 60 s, shared by the two workers.
FLOOD_LINES = 40 * 2 * 3 * 60 // 2


def _run_workers(names: tuple[str, ...], lines: int, env: dict[str, str]) -> bytes:
    """Everything the workers wrote to their one shared pipe, once all have exited."""
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "tests.helpers.log_flood"]
    workers = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and helper module
            [*command, name, str(lines)], stdin=subprocess.PIPE, stdout=write_end, cwd=ROOT, env=env
        )
        for name in names
    ]
    os.close(write_end)
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(b"go")  # both start logging at once
        worker.stdin.close()
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()  # until every worker has exited and closed its end
    assert [worker.wait(timeout=60) for worker in workers] == [0] * len(workers)
    return data
