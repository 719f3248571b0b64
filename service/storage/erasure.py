"""Storage layer: erasing calls, the one list of where a call's data lives in the database (`PLACES`) and the one
cascade that removes it, for `DELETE /api/calls/{sid}`, an erasure by number (`calls erase`, `DELETE
/api/numbers/{number}`) and RETENTION_DAYS alike.

`cascade` deletes, in the caller's transaction, every row of the calls it is given, children first: explicit
deletes rather than ON DELETE CASCADE, because webhook deliveries, coverage, jobs, streams, controls and spool
segments have no foreign key, and an engine made without `schema.create_engine` leaves SQLite's foreign keys off.
The search index goes with the utterances: FTS5's triggers on SQLite, the GIN index on PostgreSQL (an index of
rows, so a deleted row is in it no more). What stays is each call's row in `streamed_calls` (its CallSid and a
time, never a number or a word: it refuses a replayed `/voice` request's stream for good, `storage/streams.py`)
and the `audit` log, which holds counts and masked numbers only.

A shared spool segment's WAV in S3 lives outside the transaction: its object is deleted after the commit
(`AudioStore.discard`), and one that cannot be deleted then (S3 down) is an orphan, which the shared spool's
sweep (`DatabaseSpool.purge`, every batch pass) deletes once it is older than the claim lease. What lives
outside the database and this package (the local spool directory, the live feed, Redis) is the wiring's to
erase (`web/erasing.py`), with the CallSids this module chose.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

from sqlalchemy import ColumnElement, Select, Table, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.storage.audit import Audited, masked_number, record
from service.storage.schema import (
    AlertRow,
    Analysis,
    Call,
    CallControl,
    CoveragePart,
    Job,
    SpoolChunk,
    SpoolSegment,
    Stream,
    Utterance,
    WebhookDelivery,
)
from service.storage.spool_segments import AudioStore
from service.storage.statuses import AuditAction, CallStatus

CALLS: Final = cast(Table, Call.__table__)
SEGMENTS: Final = cast(Table, SpoolSegment.__table__)
CHUNKS: Final = cast(Table, SpoolChunk.__table__)

# Where a call's rows live, by CallSid, in the order they are deleted (children before the call's own row).
PLACES: Final[tuple[tuple[str, Table], ...]] = (
    ("utterances", cast(Table, Utterance.__table__)),  # the words; the search index follows them
    ("alerts", cast(Table, AlertRow.__table__)),  # the words that fired each alert
    ("webhook_deliveries", cast(Table, WebhookDelivery.__table__)),  # every event, sent or not: payloads hold words
    ("analyses", cast(Table, Analysis.__table__)),  # a summary, topics, sentiment: the call's words, retold
    ("jobs", cast(Table, Job.__table__)),  # work after the call (its analysis), keyed by the CallSid
    ("coverage", cast(Table, CoveragePart.__table__)),  # seconds per stream and track, with spool reasons
    ("streams", cast(Table, Stream.__table__)),  # the streams that were let in
    ("call_controls", cast(Table, CallControl.__table__)),  # paused or not, and who asked
)
# Every count an erasure answers with, in this order: the database's, then what lies outside it.
DATABASE_KINDS: Final = ("calls", *(name for name, _ in PLACES), "spool_segments", "spool_chunks")
KINDS: Final = (*DATABASE_KINDS, "spool_objects", "spool_local", "live_events", "redis_entries")

MAX_NUMBER_DIGITS: Final = 15  # E.164: at most 15 digits, the country code included
MIN_NUMBER_DIGITS: Final = 3  # short codes and service numbers are shorter than a country's numbers, never below 3
_NUMBER: Final = re.compile(r"\+?[0-9]+")


class BadNumber(ValueError):
    """A number an erasure cannot go by; the message says why, to the person who typed it."""


def checked_number(number: str) -> str:
    """`number` as given when it is E.164-like (digits, an optional leading +); BadNumber saying what is wrong."""
    if number != number.strip():
        raise BadNumber("starts or ends with a space: a + in a URL's query is a space; send it as %2B")
    if not number:
        raise BadNumber("is empty")
    if not number.isascii() or _NUMBER.fullmatch(number) is None:
        raise BadNumber("must be digits with an optional leading +, as Twilio writes numbers (E.164: +14155550100)")
    digits = len(number.removeprefix("+"))
    if not MIN_NUMBER_DIGITS <= digits <= MAX_NUMBER_DIGITS:
        raise BadNumber(f"has {digits} digits: a number has {MIN_NUMBER_DIGITS} to {MAX_NUMBER_DIGITS} (E.164)")
    return number


def number_forms(number: str) -> tuple[str, str]:
    """The two ways a number may be stored: with its + and without (Twilio writes E.164; a hand-made row may not)."""
    digits = number.removeprefix("+")
    return "+" + digits, digits


@dataclass(frozen=True, slots=True)
class Erasure:
    """What an erasure removed, by kind (`KINDS`), and the calls it left because they are still on."""

    counts: dict[str, int]
    call_sids: tuple[str, ...] = ()  # the calls erased
    in_progress: tuple[str, ...] = ()  # calls still on (status active): not erased; ask again once they end
    objects: tuple[str, ...] = field(default=(), repr=False)  # spool segments whose audio lived outside


def no_counts() -> dict[str, int]:
    """Every kind at zero."""
    return dict.fromkeys(KINDS, 0)


async def cascade(connection: AsyncConnection, calls: Sequence[str] | Select[Any]) -> tuple[dict[str, int], list[str]]:
    """Delete every row of `calls` (CallSids, or a SELECT of them) in the caller's transaction: their counts by
    kind, and the spool segments whose audio the caller discards after the commit."""
    counts = no_counts()
    segments = list(await connection.scalars(select(SEGMENTS.c.id).where(SEGMENTS.c.call_sid.in_(calls))))
    if connection.dialect.name == "sqlite":
        # Deleted pages are overwritten with zeros, not left in the file's free list, for this connection's deletes.
        await connection.exec_driver_sql("PRAGMA secure_delete = ON")
    for name, table in PLACES:
        counts[name] = await _deleted(connection, table, table.c.call_sid.in_(calls))
    if segments:
        counts["spool_chunks"] = await _deleted(connection, CHUNKS, CHUNKS.c.segment_id.in_(segments))
        counts["spool_segments"] = await _deleted(connection, SEGMENTS, SEGMENTS.c.id.in_(segments))
    counts["calls"] = await _deleted(connection, CALLS, CALLS.c.call_sid.in_(calls))
    if counts["utterances"] and connection.dialect.name == "sqlite":
        # FTS5 marks a deleted row's terms as deleted in a new segment; the old segment keeps them until a merge.
        # `optimize` merges every segment into one now, so no erased word stays in the index's own tables.
        await connection.exec_driver_sql("INSERT INTO utterances_fts(utterances_fts) VALUES ('optimize')")
    return counts, segments


async def _deleted(connection: AsyncConnection, table: Table, where: ColumnElement[bool]) -> int:
    return int((await connection.execute(delete(table).where(where))).rowcount)


async def discard(audio: AudioStore | None, segments: Sequence[str]) -> None:
    """After the commit: the segments' audio outside the database (S3), best effort; what stays is an orphan the
    shared spool's sweep deletes."""
    if audio is not None and segments:
        await audio.discard(segments)


@dataclass(frozen=True, slots=True)
class Request:
    """Who asked for an erasure, and when: its audit entry's who and when."""

    who: Audited
    at: datetime.datetime


async def number_calls(engine: AsyncEngine, number: str) -> tuple[list[str], list[str]]:
    """The calls to or from `number` (in either stored form): (those ended, to erase; those still on)."""
    forms = number_forms(number)
    statement = select(CALLS.c.call_sid, CALLS.c.status).where(
        or_(CALLS.c.from_number.in_(forms), CALLS.c.to_number.in_(forms))
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(statement.order_by(CALLS.c.started_at, CALLS.c.call_sid))).all()
    ended = [str(row.call_sid) for row in rows if row.status != CallStatus.ACTIVE]
    return ended, [str(row.call_sid) for row in rows if row.status == CallStatus.ACTIVE]


async def erase_number(
    engine: AsyncEngine,
    number: str,
    calls: Sequence[str],
    *,
    in_progress: Sequence[str],
    request: Request,
    audio: AudioStore | None,
    outside: Mapping[str, int],
) -> Erasure:
    """Erase `calls` (`number_calls`'s ended ones) in one transaction with the request's audit entry (subject: the
    number masked; detail: the counts, `outside`'s included, and the calls left in progress); then their audio in
    S3. The second time: zero counts, and an audit entry all the same (each request is recorded)."""
    async with engine.begin() as connection:
        counts, segments = await cascade(connection, list(calls))
        counts |= dict(outside)
        counts["spool_objects"] = len(segments) if audio is not None and audio.outside else 0
        detail = {**counts, "in_progress": len(in_progress)}
        await record(connection, AuditAction.ERASE_NUMBER, request.who, masked_number(number), detail=detail,
                     at=request.at)  # fmt: skip
    await discard(audio, segments)
    return Erasure(counts, tuple(calls), tuple(in_progress), tuple(segments))


async def delete_call(
    engine: AsyncEngine,
    call_sid: str,
    *,
    request: Request | None = None,
    audio: AudioStore | None = None,
    outside: Mapping[str, int] | None = None,
) -> Erasure:
    """Erase one call whatever its status (a call a dead process left `active` included), with its audit entry
    (`DELETE_CALL`, when a request is given and the call was there) in the same transaction."""
    async with engine.begin() as connection:
        counts, segments = await cascade(connection, [call_sid])
        counts |= dict(outside or {})
        counts["spool_objects"] = len(segments) if audio is not None and audio.outside else 0
        if request is not None and counts["calls"]:
            await record(connection, AuditAction.DELETE_CALL, request.who, call_sid, detail=counts, at=request.at)
    await discard(audio, segments)
    return Erasure(counts, (call_sid,) if counts["calls"] else (), (), tuple(segments))


async def erase_older_than(
    engine: AsyncEngine, cutoff: datetime.datetime, *, audio: AudioStore | None = None
) -> Erasure:
    """RETENTION_DAYS: the calls that started before `cutoff`, in one transaction, and the streams that never got
    a call row (refused later, or their process died) once they started before it too: long past any token that
    could let their `start` in again."""
    old = select(CALLS.c.call_sid).where(CALLS.c.started_at < cutoff)
    async with engine.begin() as connection:
        sids = list(await connection.scalars(old))
        counts, segments = await cascade(connection, old)
        streams = cast(Table, Stream.__table__)
        counts["streams"] += await _deleted(connection, streams, streams.c.started_at < cutoff)
    await discard(audio, segments)
    return Erasure(counts, tuple(sids), (), tuple(segments))
