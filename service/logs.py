"""Wiring layer: structured logs to stdout, as text a person can follow or as one JSON object per line.

Every line of a call carries its `call_sid` (bound with structlog's contextvars at `start`). Transcripts
are product output: `event="transcript"`, rendered in text mode as `[FINAL] CA… 00:01.20-00:02.40 caller: words`
(the speaker, else the track). Libraries that log through `logging` (Hypercorn, websockets, the SDK) go
through the same renderer and the same writer.

**No value can start a line of its own.** Request paths, form fields and transcripts reach the log, so:
- Text: a value (and an event name, and a key) is written bare only when it is made of ASCII letters, digits
  and `_ . , : ; / @ + - ( ) [ ] { } < > ! ? # $ % & * ^ ~ |`; anything else (empty, a space, a quote, `=`, a
  backslash, any non-ASCII character) is written as a JSON string: in double quotes, `"` and `\\` escaped, and
  every character that is not printable (`str.isprintable`: Unicode's Other and Separator categories, so
  control and format characters, U+2028/U+2029, U+00A0 and every other space but the plain one) as `\\n`,
  `\\r`, `\\t` or `\\uXXXX`. `json.loads` reads such a value back. A transcript's words stay readable (accents
  and CJK as they are) with only `\\` and the characters that are not printable escaped the same way, so the
  words can never hold a line break. The continuation lines of a record (a traceback, the next-steps block)
  are indented by four spaces and escaped the same way: only a record's first line starts unindented.
- JSON: `ensure_ascii`, so every line is plain ASCII: U+2028, U+0085 and the like arrive as `\\uXXXX`, and a
  reader that splits on more than `\\n` (Python's `str.splitlines` does) still sees one object per line.

**Each line leaves the process in one write, newline included** (`os.write` on the stream's descriptor), from
structlog and the standard library's loggers alike, and is at most `LINE_MAX` bytes: select.PIPE_BUF (4096 on
Linux), the size up to which the kernel never interleaves two processes' writes to one pipe. So with
WEB_CONCURRENCY > 1 the workers' lines never mix, buffered output or not. A longer line is shortened (`_Bounded`):
its longest values first, each cut with a marker of how many characters went (`…[log cut N chars]`), a
transcript's `text` last of all, and only when the rest cannot make room; its marker then says the whole text
is in the database, the feed and the webhooks (interims: the feed). A JSON line still parses after that.

Repeated refusals are summarised before they reach a logger: `refusals.py`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import select
import sys
import threading
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from service.settings import LogFormat, LogLevel

# The text renderer shows these first and in this order; the rest follow as key=value.
_LEADING = ("call_sid", "stream_sid", "track")
# Bytes, newline included: one write of at most PIPE_BUF is never interleaved (4096 on Linux, where it runs). macOS's
# 512 would cut every traceback on a developer's laptop, where one process writes alone: there 4096 stands.
LINE_MAX = max(select.PIPE_BUF, 4096)
_BARE = re.compile(r"[A-Za-z0-9_.,:;/@+\-()\[\]{}<>!?#$%&*^~|]+")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TEXT_CUT = "…[log cut {} chars; the whole text is in the database, the feed and the webhooks]"
_CUT = "…[log cut {} chars]"
# Never cut: short, and what a reader finds a line by.
_SHORT = 64  # characters: a field this short is never cut (the line loses its essentials instead)
_UNCUT = frozenset({"timestamp", "level", "logger", "call_sid", "stream_sid", "track"})


def configure(level: LogLevel, fmt: LogFormat, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging to `stream` (stdout by default), one write a line."""
    writer = LineWriter(stream if stream is not None else sys.stdout)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # ensure_ascii: every JSON line is ASCII, whatever a transcript or a path holds (see the docstring).
    render: Processor = (
        structlog.processors.JSONRenderer(sort_keys=False, ensure_ascii=True) if fmt == "json" else render_text
    )
    renderer = _Bounded(render, LINE_MAX - 1)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=lambda *_: LineLogger(writer),
        cache_logger_on_first_use=False,
    )
    handler = LineHandler(writer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,  # a library's traceback as text, inside the one line
                renderer,
            ],
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


class LineWriter:
    """Writes each line and its newline with one `os.write` on the stream's file descriptor.

    A stream without one (a test's StringIO) gets one `write` and a `flush`. Lines are at most LINE_MAX bytes
    (`_Bounded`), so on a pipe the one write is atomic: no other process's line lands inside it.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._fd: int | None = None
        with contextlib.suppress(AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self._fd = stream.fileno()
        self._lock = threading.Lock()  # only for the stream without a descriptor: os.write needs none

    def write(self, line: str) -> None:
        if self._fd is None:
            with self._lock:
                self._stream.write(line + "\n")
                self._stream.flush()
            return
        data = memoryview((line + "\n").encode("utf-8", "backslashreplace"))
        try:
            # Whatever was printed to the stream and is still in its buffer goes first, so the order holds (no
            # write when the buffer is empty, as it is in the service, which prints nothing).
            self._stream.flush()
            while data:  # a pipe takes a line of up to PIPE_BUF whole; a partial write is for files past a limit
                data = data[os.write(self._fd, data) :]
        except (OSError, ValueError):
            # stdout closed or full beyond repair: a log line is not worth failing a call or a request for.
            return


class LineLogger:
    """structlog's logger: each rendered line to the `LineWriter`, whatever its level."""

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


class LineHandler(logging.Handler):
    """The standard library's handler: each record, rendered by the same renderer, to the same `LineWriter`."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.write(self.format(record))
        except Exception:  # noqa: BLE001  logging's convention: a record that cannot be written is reported
            self.handleError(record)


def render_text(_logger: Any, _method: str, event_dict: EventDict) -> str:
    """One readable line; transcripts get their own shape so a person can follow the call."""
    if event_dict.get("event") == "transcript":
        return _transcript_line(event_dict)
    if event_dict.get("event") == "service.next_steps" and "lines" in event_dict:
        # A block to read and copy from: its lines as they are, under the usual line (which carries the rest).
        block = _continued("\n".join(str(line) for line in event_dict.pop("lines", [])))
        return f"{render_text(_logger, _method, event_dict)}\n{block}"
    timestamp = event_dict.pop("timestamp", "")
    level = str(event_dict.pop("level", "")).upper()
    event = _value(event_dict.pop("event", ""))
    exception = event_dict.pop("exception", None)
    fields = [f"{_value(key)}={_value(event_dict.pop(key))}" for key in _LEADING if key in event_dict]
    fields += [f"{_value(key)}={_value(value)}" for key, value in event_dict.items()]
    line = f"{timestamp} {level:<7} {event} {' '.join(fields)}".rstrip()
    return f"{line}\n{_continued(str(exception))}" if exception else line


def _transcript_line(event: EventDict) -> str:
    kind = "FINAL" if event.get("is_final") else "INTERIM"
    if event.get("batch"):
        kind += "/BATCH"
    start, end = float(event.get("start", 0.0)), float(event.get("end", 0.0))
    speaker = event.get("speaker") or event.get("track", "")
    return (
        f"{event.get('timestamp', '')} [{kind}] {_value(event.get('call_sid', ''))} "
        f"{_clock(start)}-{_clock(end)} {_value(speaker)}: {_words(str(event.get('text', '')))}"
    )


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes):02d}:{rest:05.2f}"


def _value(value: object) -> str:
    """Bare when it is plain ASCII that cannot be mistaken for anything else, else a JSON string."""
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _escaped(quoted) + '"'


def _words(text: str) -> str:
    """A transcript's words as a person reads them, with nothing in them that could break the line."""
    return _escaped(text.replace("\\", "\\\\"))


def _continued(block: str) -> str:
    """A record's continuation lines: each escaped and indented, so none can pass for a record of its own."""
    return "\n".join(f"    {_escaped(line)}" for line in block.split("\n"))


def _escaped(text: str) -> str:
    """Every character that is not printable (control, format, separators but the plain space) as an escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # as JSON writes it: a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


class _Bounded:
    """A renderer whose lines are at most `limit` bytes in UTF-8: longer ones are shortened, saying by how much.

    Fields are cut longest first, `text` (a transcript's words) last; `exception` keeps its end, where the error
    is; the others keep their start. If the line is still too long with every field cut (hundreds of keys), it
    becomes its timestamp, level, event and call, with `log_line_cut` giving the bytes the whole line had.
    """

    def __init__(self, render: Processor, limit: int) -> None:
        self._render = render
        self._limit = limit

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        line = self._line(logger, method, event_dict)
        if _size(line) <= self._limit:
            return line
        fields = dict(event_dict)
        for key in _cut_order(fields):
            line = self._cut(logger, method, fields, key)
            if _size(line) <= self._limit:
                return line
        return self._line(logger, method, _essentials(event_dict, _size(line)))

    def _line(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        rendered = self._render(logger, method, dict(event_dict))  # renderers pop from what they are given
        return rendered if isinstance(rendered, str) else str(rendered)

    def _cut(self, logger: WrappedLogger, method: str, fields: EventDict, key: str) -> str:
        """Cut `fields[key]` as little as fits (a binary search on what it keeps); the line as it is then."""
        whole = str(fields[key])
        low, high = 0, len(whole)  # keeping `low` characters fits, or nothing does
        while low < high:
            keep = (low + high + 1) // 2
            fields[key] = _shortened(key, whole, keep)
            if _size(self._line(logger, method, fields)) <= self._limit:
                low = keep
            else:
                high = keep - 1
        fields[key] = _shortened(key, whole, low)
        return self._line(logger, method, fields)


def _size(line: str) -> int:
    return len(line) if line.isascii() else len(line.encode("utf-8", "backslashreplace"))


def _cut_order(fields: EventDict) -> list[str]:
    """The fields that may be cut, in the order they are: longest first, a transcript's text last.

    A short field is left whole: cutting it gains little and loses what it says (an event name, a status).
    """
    cuttable = [
        key
        for key, value in fields.items()
        if key not in _UNCUT and isinstance(value, str) and (len(value) > _SHORT or key == "text")
    ]
    return sorted(cuttable, key=lambda key: (key == "text", -len(fields[key])))


def _shortened(key: str, whole: str, keep: int) -> str:
    cut = len(whole) - keep
    if key == "exception":
        return _CUT.format(cut) + whole[cut:]
    return whole[:keep] + (_TEXT_CUT if key == "text" else _CUT).format(cut)


def _essentials(event_dict: EventDict, size: int) -> EventDict:
    kept = {key: event_dict[key] for key in ("timestamp", "level", "logger", "call_sid") if key in event_dict}
    event = str(event_dict.get("event", ""))
    return kept | {"event": event[:200], "log_line_cut": f"{size} bytes, fields left out"}
