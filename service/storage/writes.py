"""Protocol layer (no I/O): a call's events as database writes, journal lines and idempotent upserts.

A `Write` is one change (a call answered by /voice, a call started, a final utterance, a call ended, a call
recorded as never streamed) as the row's values. The store
queues it, `encode`/`decode` make it a journal line and back, and `statements` turns it into upserts for
SQLite or PostgreSQL (`grouped_statements` a run of finals and alerts, one executemany per table) that give the
same rows however often, and in whatever order, they are applied: calls are
keyed by call SID, utterances by `utterance_key` (call, stream, track, start); call_started never overwrites how
a call ended, and an utterance whose call row is not there yet makes a stand-in one so its foreign key holds.

A call has one outcome, and the database decides it: `call_not_streamed` applies only if it is first to record
the call in `streamed_calls`, where a stream's claim (`storage/streams.py`) and a started stream's
`call_started` record it too (`decision`): whichever comes first, in whichever process, is the call's outcome.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from sqlalchemy import Table, Text, bindparam, exists, func, literal, select, update
from sqlalchemy import case as sql_case
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql import Executable

from service.alerts.matching import Alert
from service.calls.coverage import SPOOL_PREFIX, Category, Outcome, spool_key
from service.calls.events import CallEnded, CallStarted
from service.calls.stream.pause import is_marker
from service.calls.transcript import Transcript, transcript_data
from service.storage.schema import AlertRow, Call, CoveragePart, Stream, StreamedCall, Utterance
from service.storage.statuses import CallStatus, NotStreamed
from service.times import as_utc

Kind = Literal[
    "call_started", "utterance", "call_ended", "alert", "spool_outcome", "call_answered", "call_not_streamed"
]
JOURNAL_VERSION = 1

CALLS: Table = cast(Table, Call.__table__)
UTTERANCES: Table = cast(Table, Utterance.__table__)
STREAMS: Table = cast(Table, Stream.__table__)
STREAMED_CALLS: Table = cast(Table, StreamedCall.__table__)
ALERTS: Table = cast(Table, AlertRow.__table__)
COVERAGE: Table = cast(Table, CoveragePart.__table__)
HANDED_OVER = "handed_over"  # EndedBy.HANDED_OVER: the call goes on in another process

# What call_started may fill in on a row an utterance or call_ended created first; the rest is theirs to keep.
_FILLED_TEXT = ("stream_sid", "account_sid", "from_number", "to_number", "direction")
_FILLED_JSON = ("custom_parameters", "tracks")
_ENDED = ("ended_at", "status", "ended_by", "deepgram_request_ids", "audio_s_inbound", "audio_s_outbound", "summary")
_NOT_STREAMED = ("ended_at", "status", "ended_by", "summary")
# A later delivery of the same utterance (same call, stream, track and start) replaces its content; created_at stays.
_UTTERANCE_CONTENT = ("speaker", "end", "text", "confidence", "words", "source", "languages")
_UTTERANCE_COLUMNS = frozenset(UTTERANCES.c.keys())
# The fields of `transcript_data` an utterances row has no column for, and why. Every other field must have one:
# tests/storage/test_writes.py fails for a Transcript field that is in neither.
NOT_STORED = {
    "is_final": "only finals are stored",
    "speech_final": "the engine's endpointing, of no use once the words are final",
    "from_finalize": "the engine's bookkeeping: whether the final answered our Finalize",
    "request_id": "the call row keeps every request id (deepgram_request_ids)",
    "batch": "stored as `source` (live | batch)",
}
# What a journal line written before a column existed reads as (the column's default).
_UTTERANCE_DEFAULTS: dict[str, Any] = {"languages": []}
_DATETIMES = frozenset({"started_at", "ended_at", "created_at", "raised_at"})
_ROW_ERRORS = frozenset({"22", "23"})  # SQLSTATE classes: data exception, integrity constraint violation


@dataclass(frozen=True, slots=True)
class Write:
    """One change to the database: what the queue holds, what a journal line records, what a transaction applies."""

    kind: Kind
    row: dict[str, Any]  # the calls row (call_started, call_ended) or the utterances row; datetimes in UTC
    stream_sid: str  # for the stand-in call row an utterance may need

    @property
    def call_sid(self) -> str:
        return str(self.row["call_sid"])


class JournalError(ValueError):
    """A journal line this version cannot read: skipped, never guessed at."""


def utterance_key(call_sid: str, stream_sid: str, track: str, start: float, *, pause: bool = False) -> str:
    """One utterance per stretch of one stream's track, whichever path (live or batch) delivered it: a batch
    transcript carries the stream its spool entry was recorded from, so it lands on the live final's key, while
    another stream claiming the same call gets keys of its own and overwrites nothing.

    A pause's `[paused]` marker (`pause`) has keys of its own: the engine's final that starts where the pause did
    (its silence, then the words after it) must not overwrite it, and sorts after it ("!" before any digit)."""
    if pause:
        return f"{call_sid}/{stream_sid}/{track}/!paused/{round(start * 1000)}"
    return f"{call_sid}/{stream_sid}/{track}/{round(start * 1000)}"


def call_started_write(event: CallStarted) -> Write:
    row = {
        "call_sid": event.call_sid, "stream_sid": event.stream_sid, "account_sid": event.account_sid,
        "from_number": event.from_number, "to_number": event.to_number, "direction": event.direction,
        "custom_parameters": _jsonable(event.custom_parameters), "tracks": list(event.tracks),
        "started_at": as_utc(event.started_at), "status": CallStatus.ACTIVE,
    }  # fmt: skip
    return Write("call_started", row, event.stream_sid)


def call_ended_write(event: CallEnded) -> Write:
    """The stream's end; a stream handed over ends only itself: the call goes on, and says it was handed over."""
    if event.ended_by == HANDED_OVER:
        row = {"call_sid": event.call_sid, "stream_sid": event.stream_sid, "ended_at": as_utc(event.ended_at),
               "handed_over": True, "coverage": _coverage_rows(event)}  # fmt: skip
        return Write("call_ended", row, event.stream_sid)
    row = {
        "call_sid": event.call_sid, "stream_sid": event.stream_sid, "ended_at": as_utc(event.ended_at),
        "status": CallStatus.COMPLETED, "ended_by": event.ended_by,
        "deepgram_request_ids": list(event.deepgram_request_ids),
        "audio_s_inbound": float(event.audio_s_by_track.get("inbound", 0.0)),
        "audio_s_outbound": float(event.audio_s_by_track.get("outbound", 0.0)),
        "summary": _jsonable(event.summary), "coverage": _coverage_rows(event),
    }  # fmt: skip
    return Write("call_ended", row, event.stream_sid)


def _coverage_rows(event: CallEnded) -> list[dict[str, Any]]:
    """The stream's coverage parts (`calls/coverage.py`), written with its end: `call.completed` carries them."""
    return [
        {"track": part.track, "part": part.key, "category": str(part.category), "ms": part.ms, "reason": part.reason}
        for part in event.coverage
    ]


def outcome_write(outcome: Outcome) -> Write:
    """Batch transcribed a spool entry (or gave up on it): its part moves from waiting to batch (or lost)."""
    row = {
        "call_sid": outcome.call_sid, "stream_sid": outcome.stream_sid, "track": outcome.track,
        "part": spool_key(outcome.entry_id), "category": str(Category.LOST if outcome.lost_reason else Category.BATCH),
        "ms": 0, "reason": outcome.lost_reason,
    }  # fmt: skip
    return Write("spool_outcome", row, outcome.stream_sid)


def call_answered_write(
    *,
    call_sid: str,
    account_sid: str,
    from_number: str,
    to_number: str,
    direction: str,
    answered_at: datetime.datetime,
) -> Write:
    """/voice answered the call: its row, on (`active`) with no stream yet (an empty `stream_sid`), which the
    stream's `call_started` fills in, or `call_not_streamed` ends."""
    row = {
        "call_sid": call_sid, "stream_sid": "", "account_sid": account_sid, "from_number": from_number,
        "to_number": to_number, "direction": direction, "custom_parameters": {}, "tracks": [],
        "started_at": as_utc(answered_at), "status": CallStatus.ACTIVE,
    }  # fmt: skip
    return Write("call_answered", row, "")


def call_not_streamed_write(
    call_sid: str,
    *,
    how: NotStreamed,
    reason: str,
    fix: str,
    answered_at: datetime.datetime,
    at: datetime.datetime,
) -> Write:
    """No stream of the call started (`how`): its outcome, with why (`reason`) and what to check (`fix`), unless a
    stream of it is recorded first (`decision`)."""
    row = {
        "call_sid": call_sid, "stream_sid": "", "started_at": as_utc(answered_at), "ended_at": as_utc(at),
        "status": CallStatus.NOT_STREAMED, "ended_by": str(how), "summary": {"reason": reason, "fix": fix},
    }  # fmt: skip
    return Write("call_not_streamed", row, "")


def utterance_write(transcript: Transcript, *, speaker: str, created_at: datetime.datetime) -> Write:
    """A final as its utterances row, made from `transcript_data`: every field that has a column goes in as it is
    (a new field with a new column needs nothing here); the rest is what `NOT_STORED` says."""
    data = transcript_data(transcript)
    row = {name: value for name, value in data.items() if name in _UTTERANCE_COLUMNS}
    row.update(
        key=utterance_key(
            data["call_sid"], data["stream_sid"], data["track"], data["start"], pause=is_marker(transcript)
        ),
        speaker=data["speaker"] or speaker,
        source="batch" if data["batch"] else "live",
        created_at=as_utc(created_at),
    )
    return Write("utterance", row, transcript.stream_sid)


def alert_write(alert: Alert) -> Write:
    """An alert as its alerts row: every column is the `Alert`'s field of that name."""
    row: dict[str, Any] = {name: getattr(alert, name) for name in ALERTS.c.keys()}  # noqa: SIM118 - a Table's columns
    row["raised_at"] = as_utc(alert.raised_at)
    return Write("alert", row, "")


def encode(write: Write) -> bytes:
    """One journal line: everything needed to apply the write again, as ASCII JSON."""
    row = {
        name: value.isoformat() if isinstance(value, datetime.datetime) else value for name, value in write.row.items()
    }
    record = {"v": JOURNAL_VERSION, "kind": write.kind, "stream_sid": write.stream_sid, "row": row}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Write:
    """The write a journal line records; JournalError for a line this version did not write."""
    try:
        record = json.loads(line)
        version, kind, stream_sid = record["v"], record["kind"], record["stream_sid"]
        row = {
            name: datetime.datetime.fromisoformat(value) if name in _DATETIMES and isinstance(value, str) else value
            for name, value in dict(record["row"]).items()
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise JournalError(f"unreadable journal line: {type(exc).__name__}") from exc
    if version != JOURNAL_VERSION or kind not in get_args(Kind):
        raise JournalError("not a journal line of this version")
    if kind == "utterance":
        row = {**_UTTERANCE_DEFAULTS, **row}
    return Write(kind, row, str(stream_sid))


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    # Summary counts and custom parameters as JSON has them, so the journal and the database take them as they are.
    result: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return result


# --- Statements: idempotent upserts for SQLite and PostgreSQL ------------------------------------------------


Step = tuple[Executable, dict[str, Any]]  # a statement and the parameters of one row
GroupStep = tuple[Executable, list[dict[str, Any]]]  # a statement and the parameters of each of its rows


def statements(dialect: str, write: Write, now: datetime.datetime) -> list[Step]:
    """The upserts that apply `write`; applying them again, or out of order, leaves the same rows.

    The statements are built once per dialect and take the row as parameters: nothing is rebuilt per write.
    """
    if write.kind == "call_started":
        streamed = {"call_sid": write.call_sid, "first_stream_at": write.row["started_at"]}
        return [(_call_started(dialect), write.row), (_call_streamed(dialect), streamed)]
    if write.kind == "call_ended":
        return _call_ended_steps(dialect, write, now)
    if write.kind == "spool_outcome":
        return [(_spool_outcome(dialect), {**write.row, "updated_at": as_utc(now)})]
    if write.kind in ("call_answered", "call_not_streamed"):
        outcome = _call_answered if write.kind == "call_answered" else _call_not_streamed
        return [(outcome(dialect), write.row)]
    # An utterance or an alert: the call's row first (a stand-in, if its call_started has not come yet).
    return [(_stand_in_call(dialect), _stand_in(write, now)), (_row_insert(dialect, write.kind), write.row)]


# Kinds whose writes in a row are applied together, one executemany per statement (`grouped_statements`), in
# this order: the finals, which come many to a batch while the calls talk, and the alerts their words raise.
# Every other write is applied on its own.
_GROUPED_ORDER: tuple[Kind, ...] = ("utterance", "alert")
GROUPED: frozenset[Kind] = frozenset(_GROUPED_ORDER)


def _row_insert(dialect: str, kind: Kind) -> Executable:
    """The upsert of a grouped kind's own row (after its call's stand-in)."""
    return _alert(dialect) if kind == "alert" else _utterance(dialect)


def runs(writes: Sequence[Write]) -> list[tuple[Write, ...]]:
    """`writes` in their order, cut into runs: consecutive writes of the kinds in `GROUPED` make one run, any
    other write is a run of its own."""
    cut: list[list[Write]] = []
    for write in writes:
        if cut and write.kind in GROUPED and cut[-1][0].kind in GROUPED:
            cut[-1].append(write)
        else:
            cut.append([write])
    return [tuple(run) for run in cut]


def grouped_statements(dialect: str, run: Sequence[Write], now: datetime.datetime) -> list[GroupStep]:
    """A run of finals and alerts as one statement per table, each with all of its rows: the stand-in call rows
    (each call's from its first write in the run), then the utterances, then the alerts, each in the run's order.

    The same rows as `statements` applied write by write: a stand-in changes nothing where the call has a row, so
    each call's is the one its first write would make; utterances and alerts touch only their own tables; and the
    rows of each keep their order, so a later delivery of the same utterance still wins (both drivers run an
    executemany row by row)."""
    stand_ins: dict[str, dict[str, Any]] = {}
    for write in run:
        stand_ins.setdefault(write.call_sid, _stand_in(write, now))
    steps: list[GroupStep] = [(_stand_in_call(dialect), list(stand_ins.values()))]
    for kind in _GROUPED_ORDER:
        rows = [write.row for write in run if write.kind == kind]
        if rows:
            steps.append((_row_insert(dialect, kind), rows))
    return steps


def _stand_in(write: Write, now: datetime.datetime) -> dict[str, Any]:
    return {
        "call_sid": write.call_sid, "stream_sid": write.stream_sid, "started_at": as_utc(now),
        "status": CallStatus.ACTIVE,
    }  # fmt: skip


def _call_ended_steps(dialect: str, write: Write, now: datetime.datetime) -> list[Step]:
    """The stream's coverage (a journal line written before coverage was counted has none), then its end."""
    keys = {"call_sid": write.call_sid, "stream_sid": write.stream_sid, "updated_at": as_utc(now)}
    steps: list[Step] = [(_coverage_part(dialect), {**keys, **part}) for part in write.row.get("coverage", ())]
    ended = {"ended_stream_sid": write.stream_sid, "stream_ended_at": write.row["ended_at"]}
    if write.row.get("handed_over"):
        handed = {
            "call_sid": write.call_sid, "stream_sid": write.stream_sid, "started_at": write.row["ended_at"],
            "status": CallStatus.ACTIVE, "handed_over": True,
        }  # fmt: skip
        return [*steps, (_call_handed_over(dialect), handed), (_stream_ended(), ended)]
    row = {name: value for name, value in write.row.items() if name != "coverage"}
    return [*steps, (_call_ended(dialect), {**row, "started_at": write.row["ended_at"]}), (_stream_ended(), ended)]


def decision(dialect: str, write: Write) -> Step | None:
    """The statement that decides whether `write` applies at all (it does when the statement gives a row), None
    for a write that always does.

    A call is recorded as not streamed only if this puts it first into `streamed_calls`, where a stream's claim
    or its `call_started` would have put it otherwise: the database's key answers for every process at once (on
    PostgreSQL a claim in flight is waited for). /voice's answer makes a row only for a call `streamed_calls`
    does not hold: a captured `/voice` request replayed after the call's deletion must not store it again.
    """
    if write.kind == "call_answered":
        return _not_yet_streamed(), {"call_sid": write.call_sid}
    if write.kind == "call_not_streamed":
        return _first_outcome(dialect), {"call_sid": write.call_sid, "first_stream_at": write.row["ended_at"]}
    return None


def dialect_insert(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT with the dialect's ON CONFLICT (PostgreSQL's, or SQLite's)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


@functools.cache
def _call_started(dialect: str) -> Executable:
    """Insert the call; on a row made first by an utterance or call_ended, fill in only what that row lacks."""
    statement = dialect_insert(dialect, CALLS)
    new, old = statement.excluded, CALLS.c
    fill: dict[str, Any] = {name: func.coalesce(func.nullif(old[name], ""), new[name]) for name in _FILLED_TEXT}
    for name in _FILLED_JSON:
        # PostgreSQL's json type has no equality; its text is what we stored ("[]" or "{}" when empty).
        fill[name] = sql_case((sql_cast(old[name], Text).in_(("[]", "{}", "null")), new[name]), else_=old[name])
    # A stand-in row's start is when it was written, so the real one is earlier; a row /voice wrote (no stream
    # yet) takes the stream's start, which the call's timeline and duration count from.
    fill["started_at"] = sql_case(
        (old.stream_sid == "", new.started_at),
        (new.started_at < old.started_at, new.started_at),
        else_=old.started_at,
    )
    return statement.on_conflict_do_update(index_elements=["call_sid"], set_=fill)


@functools.cache
def _call_streamed(dialect: str) -> Executable:
    """The call's lasting record of its stream, when the stream's claim did not write it (the database did not
    answer in time, `storage/streams.py`): a stream that started counts, however it was let in."""
    return dialect_insert(dialect, STREAMED_CALLS).on_conflict_do_nothing(index_elements=["call_sid"])


@functools.cache
def _call_ended(dialect: str) -> Executable:
    """Record how the call ended; if its call_started never arrived, the ending makes the row (starting then).

    A call already recorded as not streamed keeps that outcome (its terminal event went out): only a stream let
    in while the database could not answer its claim gets here (`decision`)."""
    statement = dialect_insert(dialect, CALLS)
    return statement.on_conflict_do_update(
        index_elements=["call_sid"],
        set_={name: statement.excluded[name] for name in _ENDED},
        where=CALLS.c.status != CallStatus.NOT_STREAMED,
    )


@functools.cache
def _call_answered(dialect: str) -> Executable:
    """The call as /voice answered it, unless a row is there already (its stream's, from another process)."""
    return dialect_insert(dialect, CALLS).on_conflict_do_nothing(index_elements=["call_sid"])


@functools.cache
def _call_not_streamed(dialect: str) -> Executable:
    """The call's outcome when no stream of it started; makes the row if /voice's write has not arrived."""
    statement = dialect_insert(dialect, CALLS)
    return statement.on_conflict_do_update(
        index_elements=["call_sid"], set_={name: statement.excluded[name] for name in _NOT_STREAMED}
    )


@functools.cache
def _not_yet_streamed() -> Executable:
    """A row when the call has no outcome in `streamed_calls` yet (no stream, not recorded as not streamed)."""
    recorded = exists().where(STREAMED_CALLS.c.call_sid == bindparam("call_sid"))
    return select(literal(1)).where(~recorded)


@functools.cache
def _first_outcome(dialect: str) -> Executable:
    """The call into `streamed_calls`, returning it only if it was not there (`decision`)."""
    statement = dialect_insert(dialect, STREAMED_CALLS).on_conflict_do_nothing(index_elements=["call_sid"])
    return statement.returning(STREAMED_CALLS.c.call_sid)


@functools.cache
def _call_handed_over(dialect: str) -> Executable:
    """Say the call was handed over, and nothing more: it goes on in another process, which will end it."""
    return dialect_insert(dialect, CALLS).on_conflict_do_update(index_elements=["call_sid"], set_={"handed_over": True})


@functools.cache
def _stream_ended() -> Executable:
    """The stream's end, after its last words (none for a stream the database never recorded)."""
    return (
        update(STREAMS)
        .where(STREAMS.c.stream_sid == bindparam("ended_stream_sid"), STREAMS.c.ended_at.is_(None))
        .values(ended_at=bindparam("stream_ended_at"))
    )


@functools.cache
def _coverage_part(dialect: str) -> Executable:
    """A stream's part, written again as often as it comes; batch's outcome for a spool entry, if it came first
    (the entry was transcribed while its stream was still on), keeps its category and reason: only the seconds
    are the stream's to say."""
    statement = dialect_insert(dialect, COVERAGE)
    new, old = statement.excluded, COVERAGE.c
    settled = (old.part.startswith(SPOOL_PREFIX)) & (old.category != str(Category.WAITING))
    return statement.on_conflict_do_update(
        index_elements=["call_sid", "stream_sid", "track", "part"],
        set_={
            "ms": new.ms,
            "category": sql_case((settled, old.category), else_=new.category),
            "reason": sql_case((settled, old.reason), else_=new.reason),
            "updated_at": new.updated_at,
        },
    )


@functools.cache
def _spool_outcome(dialect: str) -> Executable:
    """A spool entry's outcome: its part's category and reason (its seconds stay the stream's; a part not
    written yet starts at 0 ms, which its stream's coverage fills in)."""
    statement = dialect_insert(dialect, COVERAGE)
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["call_sid", "stream_sid", "track", "part"],
        set_={"category": new.category, "reason": new.reason, "updated_at": new.updated_at},
    )


@functools.cache
def _stand_in_call(dialect: str) -> Executable:
    """A minimal call row, if there is none yet, so the utterance's foreign key holds (call_started fills it in)."""
    return dialect_insert(dialect, CALLS).on_conflict_do_nothing(index_elements=["call_sid"])


@functools.cache
def _utterance(dialect: str) -> Executable:
    statement = dialect_insert(dialect, UTTERANCES)
    return statement.on_conflict_do_update(
        index_elements=["key"], set_={name: statement.excluded[name] for name in _UTTERANCE_CONTENT}
    )


@functools.cache
def _alert(dialect: str) -> Executable:
    """An alert once: the same id again (a retry, another process that heard the same words) changes nothing."""
    return dialect_insert(dialect, ALERTS).on_conflict_do_nothing(index_elements=["alert_id"])


def is_permanent(error: BaseException) -> bool:
    """A write that fails however often it is tried (the row itself is wrong), as opposed to an outage.

    An outage is a connection that failed (OSError, a timeout, SQLAlchemy's pool) or a database error about the
    database's state, a missing table included: someone can fix those, so the writes wait. asyncpg's errors reach
    us as SQLAlchemy's generic DBAPIError, so PostgreSQL's SQLSTATE tells the row's faults apart: class 22 (data
    exception, such as a value too long for its column) and 23 (integrity constraint violation). Anything else,
    such as a value that cannot even be bound, would fail again on every try.
    """
    if isinstance(error, IntegrityError | DataError):
        return True
    if isinstance(error, DBAPIError):
        return str(getattr(error.orig, "sqlstate", None) or "")[:2] in _ROW_ERRORS
    return not isinstance(error, OSError | TimeoutError | PoolTimeoutError | DisconnectionError)


def describe(error: BaseException) -> str:
    """The error's type and its causes' types ("OperationalError <- ConnectionRefusedError"): never its text."""
    names: list[str] = []
    current: BaseException | None = error
    while current is not None and len(names) < 4:
        if type(current).__name__ not in names:
            names.append(type(current).__name__)
        current = current.__cause__ or current.__context__
    return " <- ".join(names)
