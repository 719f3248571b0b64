"""Command line (wiring): `python -m service calls list | show | analyze | erase`, the API's data for an operator
at a shell, a call's post-call analysis run by hand, and every call of a number erased on request.

Both read DATABASE_URL through `queries.py` and render through `captions.py`, the same functions behind
/api, so the shell and the API always agree. `show` prints only the transcript on stdout, in the format asked
for, so it can be redirected into a caption file: `python -m service calls show CA… --format srt > call.srt`;
what it says about the call goes to stderr: whether the transcript is complete (its coverage: what is missing
and why), why it is empty when it is, and for a call no stream of which ever started, why and what to check.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from service import captions, logs
from service.calls.coverage import short_text
from service.cli.tables import table
from service.settings import Settings, load_settings
from service.storage import queries
from service.storage.queries import CallRecord
from service.storage.schema import create_engine
from service.storage.statuses import CallStatus


def add_commands(commands: Any) -> None:
    """Register `calls list`, `calls show`, `calls analyze` and `calls erase` on the `python -m service`
    sub-command parser."""
    calls_parser = commands.add_parser("calls", help="calls and transcripts stored in DATABASE_URL")
    actions = calls_parser.add_subparsers(dest="calls_command", required=True)
    list_parser = actions.add_parser("list", help="calls, newest first")
    list_parser.add_argument("--number", help="only calls from or to this number (E.164, such as +14155550100)")
    list_parser.add_argument("--active", action="store_true", help="only calls still streaming")
    list_parser.add_argument("--limit", type=_positive, default=queries.DEFAULT_LIMIT, help="at most this many calls")
    list_parser.set_defaults(handler=list_calls)
    show_parser = actions.add_parser("show", help="one call's transcript")
    show_parser.add_argument("call_sid", metavar="CALL_SID")
    show_parser.add_argument("--format", choices=captions.FORMATS, default="text", help="default: text")
    show_parser.set_defaults(handler=show_call)
    analyze_parser = actions.add_parser(
        "analyze", help="analyse one call's transcript now (ANALYSIS's features) and print the stored analysis"
    )
    analyze_parser.add_argument("call_sid", metavar="CALL_SID")
    analyze_parser.set_defaults(handler=analyze_call)
    erase_parser = actions.add_parser(
        "erase", help="erase every call to or from a number (a data subject's request); --yes to erase, else a dry run"
    )
    erase_parser.add_argument("--number", required=True, help="the number, E.164 (+14155550100)")
    erase_parser.add_argument("--yes", action="store_true", help="erase; without it, only say what would be erased")
    erase_parser.add_argument("--by", help="who asks, for the audit log (default: cli)")
    erase_parser.set_defaults(handler=erase_calls)


def erase_calls(args: argparse.Namespace) -> int:
    """Without --yes: the calls that would be erased, exit 1. With it: the erasure's counts as JSON (the API's
    answer), exit 0; the calls still on are left, and named."""
    from service.storage import erasure  # noqa: PLC0415 - only the command that erases loads the cascade
    from service.web.erasing import StreamUnreachable  # noqa: PLC0415

    try:
        number = erasure.checked_number(args.number)
    except erasure.BadNumber as exc:
        sys.stderr.write(f"--number {exc}\n")
        return 2
    settings = load_settings()
    # The audit line (and any other) on stderr: stdout is the answer, JSON a script can read.
    logs.configure(settings.log_level, settings.log_format, stream=sys.stderr)
    try:
        if not args.yes:
            return _dry_run(*asyncio.run(_number_calls(settings, number)))
        answer = asyncio.run(_erase(settings, number, args.by))
    except SQLAlchemyError as exc:
        return _unreadable(exc)
    except StreamUnreachable as exc:
        sys.stderr.write(f"Redis (REDIS_URL) did not answer ({exc}): nothing was erased; run it again once it does\n")
        return 1
    sys.stdout.write(json.dumps(answer, indent=2) + "\n")
    if answer["in_progress"]:
        sys.stderr.write(answer["message"] + "\n")
    return 0


def _dry_run(calls: list[str], in_progress: list[str]) -> int:
    sys.stdout.write("".join(f"{call_sid}\n" for call_sid in calls))
    still = f"; {len(in_progress)} still on, which it would leave" if in_progress else ""
    sys.stderr.write(f"would erase {len(calls)} calls{still}: add --yes to erase them\n")
    return 1


async def _number_calls(settings: Settings, number: str) -> tuple[list[str], list[str]]:
    from service.storage import erasure  # noqa: PLC0415

    engine = create_engine(settings.database_url)
    try:
        return await erasure.number_calls(engine, number)
    finally:
        await engine.dispose()


async def _erase(settings: Settings, number: str, by: str | None) -> dict[str, Any]:
    """The erasure, reaching what this process can: the database, SPOOL_DIR on this machine, the shared spool's
    objects (SPOOL_URL) and the Redis Stream (REDIS_URL), whose control entry makes each running process forget."""
    from service.spool.directory import Spool  # noqa: PLC0415
    from service.storage.audit import Audited  # noqa: PLC0415
    from service.web.erasing import Eraser, erasure_json  # noqa: PLC0415

    engine = create_engine(settings.database_url)
    audio = None
    if settings.spool_url is not None:
        from service.storage.spool_objects import S3Audio  # noqa: PLC0415 - aiobotocore only where S3 is used

        audio = S3Audio(settings)
    stream = None
    if settings.redis_url is not None:
        from service.live.redis_stream import erase_from_stream  # noqa: PLC0415 - redis-py only with REDIS_URL

        stream = functools.partial(erase_from_stream, settings)
    try:
        eraser = Eraser(lambda: engine, spool=Spool(settings.spool_dir), stream=stream, audio=audio)
        return erasure_json(number, await eraser.erase_number(number, Audited.of(by, "cli")))
    finally:
        await engine.dispose()


def analyze_call(args: argparse.Namespace) -> int:
    """The call's analysis as JSON; exit 0 when it was analysed, 1 when not (the reason printed with it)."""
    settings = load_settings()
    try:
        analysis = asyncio.run(_analyze(settings, args.call_sid))
    except SQLAlchemyError as exc:
        return _unreadable(exc)
    if analysis is None:
        sys.stderr.write(f"no call {args.call_sid}\n")
        return 1
    sys.stdout.write(json.dumps(analysis, indent=2, ensure_ascii=False) + "\n")
    if analysis["status"] != "done":
        sys.stderr.write(f"not analysed: {analysis['reason']}\n")
        return 1
    return 0


async def _analyze(settings: Settings, call_sid: str) -> dict[str, Any] | None:
    from service.deepgram.text import DeepgramText  # noqa: PLC0415 - the SDK only for the command that uses it
    from service.storage.analyses import AnalysisWorker  # noqa: PLC0415

    engine = create_engine(settings.database_url)
    try:
        worker = AnalysisWorker(settings, lambda: engine, lambda: DeepgramText(settings))
        return await worker.analyze_now(call_sid)
    finally:
        await engine.dispose()


def list_calls(args: argparse.Namespace) -> int:
    database_url = load_settings().database_url
    try:
        calls, coverage = asyncio.run(_read_calls(database_url, args.number, args.active, args.limit))
    except SQLAlchemyError as exc:
        return _unreadable(exc)
    sys.stdout.write(calls_table(calls, coverage) + "\n")
    return 0


def show_call(args: argparse.Namespace) -> int:
    database_url = load_settings().database_url
    try:
        found = asyncio.run(_read_transcript(database_url, args.call_sid, args.format))
    except SQLAlchemyError as exc:
        return _unreadable(exc)
    if found is None:
        sys.stderr.write(f"no call {args.call_sid}\n")
        return 1
    transcript, call, coverage, words, alerts = found
    sys.stdout.write(transcript)
    if call.status == CallStatus.NOT_STREAMED:
        sys.stderr.write(not_streamed_note(call))  # nothing was streamed, so nothing was counted
    else:
        sys.stderr.write(coverage_lines(call, coverage, words=words))
        sys.stderr.write(alert_lines(alerts))
    return 0


def alert_lines(alerts: Sequence[queries.AlertRecord]) -> str:
    """What `show` says of the call's live alerts (ALERT_RULES) on stderr, after its coverage: none, or each one
    with where it was on the call's timeline and what fired it."""
    if not alerts:
        return "alerts: none\n"
    lines = [f"alerts: {len(alerts)}"]
    for alert in alerts:
        where = f"{captions.clock(alert.start)}-{captions.clock(alert.end)}"
        words = " ".join(alert.text.split())  # one line, as the transcript's own lines are
        what = f'said "{words}"' if alert.kind == "said" else "none of its phrases said in that window"
        lines.append(f"  {where} {alert.rule} ({alert.speaker}): {what}")
    return "".join(line + "\n" for line in lines)


def not_streamed_note(call: CallRecord) -> str:
    """Why a call has no transcript at all, and what to check: its `not_streamed` outcome."""
    reason, fix = call.summary.get("reason", ""), call.summary.get("fix", "")
    return f"call {call.call_sid} was not streamed ({call.ended_by}): {reason}\nto check: {fix}\n"


def _unreadable(exc: SQLAlchemyError) -> int:
    # The driver's own words (no such table, connection refused), never the URL: it may carry a password.
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    sys.stderr.write(
        f"cannot read the database: {reason}\n(is DATABASE_URL right, and `python -m service db upgrade` run?)\n"
    )
    return 1


async def _read_calls(
    database_url: str, number: str | None, active: bool, limit: int
) -> tuple[list[CallRecord], dict[str, dict[str, Any]]]:
    # Pages of the API's size until `limit`, so --limit may ask for more than one API page holds.
    engine = create_engine(database_url)
    calls: list[CallRecord] = []
    cursor: str | None = None
    try:
        while len(calls) < limit:
            page = await queries.list_calls(
                engine, limit=min(limit - len(calls), queries.MAX_LIMIT), cursor=cursor, number=number,
                active=True if active else None,
            )  # fmt: skip
            calls += page.calls
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        coverage = await queries.get_coverage(engine, [call.call_sid for call in calls])
    finally:
        await engine.dispose()
    return calls, coverage


async def _read_transcript(
    database_url: str, call_sid: str, fmt: captions.Format
) -> tuple[str, CallRecord, dict[str, Any] | None, int, list[queries.AlertRecord]] | None:
    """The rendered transcript, the call, its coverage, how many utterances it has and its alerts; None for no
    call."""
    engine = create_engine(database_url)
    try:
        call = await queries.get_call(engine, call_sid)
        if call is None:
            return None
        utterances = await queries.get_utterances(engine, call_sid)
        coverage = (await queries.get_coverage(engine, [call_sid])).get(call_sid)
        alerts = await queries.get_alerts(engine, call_sid)
        return captions.render(utterances, fmt), call, coverage, len(utterances), alerts
    finally:
        await engine.dispose()


def coverage_lines(call: CallRecord, coverage: dict[str, Any] | None, *, words: int) -> str:
    """What `show` says on stderr: whether the transcript is complete, what it misses and why, and why it is
    empty when it is (never an empty answer with nothing said)."""
    if coverage is None:
        said = (
            "coverage: not counted yet: the call is still on"
            if call.ended_at is None
            else "coverage: not recorded for this call (it was stored before callscribe counted coverage)"
        )
    elif coverage["complete"]:
        said = f"coverage: complete: all {coverage['audio_s']:g} s of audio transcribed"
    else:
        said = f"coverage: incomplete: {coverage['missing']}"
    lines = [said]
    if not words:
        lines.append(f"the transcript is empty: {_why_empty(call, coverage)}")
    return "".join(line + "\n" for line in lines)


def _why_empty(call: CallRecord, coverage: dict[str, Any] | None) -> str:
    if call.ended_at is None:
        return "nothing final has been said yet"
    if coverage is None:
        return "no final words were stored"
    if coverage["waiting_s"]:
        return "its audio is waiting for batch transcription (see coverage above)"
    if not coverage["audio_s"]:
        return "Twilio sent no audio"
    if not coverage["live_s"] + coverage["replayed_s"] + coverage["batch_s"]:
        return "none of its audio could be transcribed (see coverage above)"
    return "nobody said anything the engine heard as words"


def calls_table(calls: Sequence[CallRecord], coverage: Mapping[str, dict[str, Any]] | None = None) -> str:
    """The calls as an aligned table, newest first, with each one's coverage in a few words (`-`: not counted);
    "no calls" when there are none."""
    if not calls:
        return "no calls"
    coverage = coverage or {}
    header = ("CALL", "STARTED (UTC)", "DURATION", "FROM", "TO", "STATUS", "ENDED BY", "COVERAGE", "ALERTS")
    rows = [
        (
            call.call_sid, call.started_at.strftime("%Y-%m-%d %H:%M:%S"), _duration(call), call.from_number or "-",
            call.to_number or "-", call.status, call.ended_by or "-", short_text(coverage.get(call.call_sid)),
            str(call.alert_count) if call.alert_count else "-",
        )
        for call in calls
    ]  # fmt: skip
    return table(header, rows)


def _duration(call: CallRecord) -> str:
    if call.ended_at is None:
        return "-"
    seconds = round((call.ended_at - call.started_at) / datetime.timedelta(seconds=1))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _positive(value: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more, not {value!r}")
    return int(value)
