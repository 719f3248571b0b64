"""Log rendering: a person can follow a call in text format; JSON is one object per line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from service import logs
from service.calls.observers import log_transcript
from service.calls.transcript import Transcript


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
