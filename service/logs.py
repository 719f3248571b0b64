"""Wiring layer: structured logs to stdout, as text a person can follow or as one JSON object per line.

Every line of a call carries its `call_sid` (bound with structlog's contextvars at `start`). Transcripts
are product output: `event="transcript"`, rendered in text mode as `[FINAL] CA… 00:01.20-00:02.40 caller: words`
(the speaker, else the track). Libraries that log through `logging` (Hypercorn, websockets, the SDK) go
through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from service.settings import LogFormat, LogLevel

# The text renderer shows these first and in this order; the rest follow as key=value.
_LEADING = ("call_sid", "stream_sid", "track")


def configure(level: LogLevel, fmt: LogFormat, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging to `stream` (stdout by default)."""
    out = stream if stream is not None else sys.stdout
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = structlog.processors.JSONRenderer(sort_keys=False) if fmt == "json" else render_text
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # websockets logs every frame at DEBUG; keep it at INFO even when callscribe is at DEBUG.
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.getLevelName(level)))
    # botocore (the S3 spool) logs every request's headers at DEBUG, the access key and signature among them.
    for name in ("botocore", "aiobotocore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def render_text(_logger: Any, _method: str, event_dict: EventDict) -> str:
    """One readable line; transcripts get their own shape so a person can follow the call."""
    if event_dict.get("event") == "transcript":
        return _transcript_line(event_dict)
    if event_dict.get("event") == "service.next_steps" and "lines" in event_dict:
        # A block to read and copy from: its lines as they are, under the usual line (which carries the rest).
        block = "\n".join(f"    {line}" for line in event_dict.pop("lines", []))
        return f"{render_text(_logger, _method, event_dict)}\n{block}"
    timestamp = event_dict.pop("timestamp", "")
    level = str(event_dict.pop("level", "")).upper()
    event = event_dict.pop("event", "")
    exception = event_dict.pop("exception", None)
    fields = [f"{key}={_value(event_dict.pop(key))}" for key in _LEADING if key in event_dict]
    fields += [f"{key}={_value(value)}" for key, value in event_dict.items()]
    line = f"{timestamp} {level:<7} {event} {' '.join(fields)}".rstrip()
    return f"{line}\n{exception}" if exception else line


def _transcript_line(event: EventDict) -> str:
    kind = "FINAL" if event.get("is_final") else "INTERIM"
    if event.get("batch"):
        kind += "/BATCH"
    start, end = float(event.get("start", 0.0)), float(event.get("end", 0.0))
    speaker = event.get("speaker") or event.get("track", "")
    return (
        f"{event.get('timestamp', '')} [{kind}] {event.get('call_sid', '')} "
        f"{_clock(start)}-{_clock(end)} {speaker}: {event.get('text', '')}"
    )


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes):02d}:{rest:05.2f}"


def _value(value: object) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text
