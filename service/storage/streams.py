"""Storage layer: the database's record of the streams that were let in (`calls/stream/admission.py`'s
`StreamClaims`).

A claim is one row in `streams`, inserted with the claims that came with it in one short transaction. The
database's constraints answer the question for every process at once: the primary key says a streamSid starts
once, the partial unique index on `call_sid` where `first_stream` says a call has one first stream (hand-overs
are not limited). When a row is refused, a look at the table tells which of the two it was.

A first stream also needs its call to be new to `streamed_calls` (the CallSid and a time, nothing else), which
neither deleting the call nor RETENTION_DAYS touches: `streams` goes with its call, and a captured `/voice`
request replayed later gets a fresh token, so without that record the call could be planted again after its
deletion and a restart. Its primary key answers for every process as the index on `streams` does. A call
recorded as not streamed (no stream within STREAM_START_TIMEOUT_S of /voice's answer) is put there too, by the
same key (`writes.decision`): a stream of it that comes later is refused, with that reason (`NOT_STREAMED`),
so the call keeps the one outcome, and the one terminal event, it was given.

It is also `calls/handover/passing.py`'s `StreamRecords`: where a stream started on its call's timeline (its
`started_at` less the call's first stream's), and whether the streams a hand-over's new stream took over from
have ended.

A claim never raises: an outage, a missing table or an answer slower than `timeout_s` is `UNCHECKED`, and the
gate lets the stream in on its other checks. Logs name an error's type, never its text or the URL.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.calls.stream.admission import ClaimOutcome
from service.storage.statuses import CallStatus
from service.storage.writes import CALLS, STREAMED_CALLS, STREAMS, describe, dialect_insert
from service.times import Clock, as_utc, utc_now

log = structlog.get_logger("callscribe.store")

GROUP_MAX = 500  # claims per statement: far below SQLite's limit on bound parameters (32766)
CLAIM_TIMEOUT_S = 2.0  # a start waits no longer than this for the database before it is let in unchecked


class DatabaseStreamClaims:
    """`StreamClaims` on the store's database; `engine` is asked for at each claim (the store opens it at start).

    Claims that arrive while a transaction is on its way go together in the next one: when many calls start at
    once (a burst after a deploy, the benchmark's 100), each start waits for one commit, not for a queue of
    commits, each with its own fsync.
    """

    def __init__(
        self, engine: Callable[[], AsyncEngine], *, timeout_s: float = CLAIM_TIMEOUT_S, clock: Clock = utc_now
    ) -> None:
        self._engine = engine
        self._timeout_s = timeout_s
        self._clock = clock
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[ClaimOutcome]]] = []
        self._writer: asyncio.Task[None] | None = None  # the task committing claims, while there are any

    async def claim(
        self, *, call_sid: str, stream_sid: str, purpose: str, track: str, first_stream: bool
    ) -> ClaimOutcome:
        """Record the stream as started, unless the database says it or its call's first stream already did."""
        row = {
            "stream_sid": stream_sid, "call_sid": call_sid, "purpose": purpose, "track": track,
            "first_stream": first_stream, "started_at": as_utc(self._clock()),
        }  # fmt: skip
        answer: asyncio.Future[ClaimOutcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, answer))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_claims(), name="stream-claims")
        # The writer goes on past a timeout: a cancelled SQLAlchemy connection still rolls back before it lets
        # go, and SQLite's driver can only do that once its thread is free of the lock it waits for. The start
        # must not wait for that too.
        done, _ = await asyncio.wait({answer}, timeout=self._timeout_s)
        if answer in done:
            return answer.result()
        log.warning("store.claim_timed_out", timeout_s=self._timeout_s)
        return ClaimOutcome.UNCHECKED

    async def offset_s(self, call_sid: str, stream_sid: str) -> float | None:
        """Seconds from the call's first stream's start to this stream's; None while either has no row."""
        async with self._engine().connect() as connection:
            rows = await connection.execute(
                select(STREAMS.c.stream_sid, STREAMS.c.first_stream, STREAMS.c.started_at).where(
                    STREAMS.c.call_sid == call_sid,
                    (STREAMS.c.stream_sid == stream_sid) | STREAMS.c.first_stream,
                )
            )
            found = list(rows)
        first = next((as_utc(row.started_at) for row in found if row.first_stream), None)
        own = next((as_utc(row.started_at) for row in found if row.stream_sid == stream_sid), None)
        if first is None or own is None:
            return None
        return (own - first).total_seconds()

    async def others_live(self, call_sid: str, stream_sid: str) -> bool:
        """Whether a stream of the call that started before this one has no end recorded yet."""
        own = select(STREAMS.c.started_at).where(STREAMS.c.stream_sid == stream_sid).scalar_subquery()
        earlier_live = exists().where(
            STREAMS.c.call_sid == call_sid,
            STREAMS.c.stream_sid != stream_sid,
            STREAMS.c.ended_at.is_(None),
            STREAMS.c.started_at <= own,
        )
        async with self._engine().connect() as connection:
            return bool(await connection.scalar(select(earlier_live)))

    async def settle(self) -> None:
        """Wait until the claims in flight have let go of their connections (before the engine is disposed)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_claims(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:GROUP_MAX], self._waiting[GROUP_MAX:]
                outcomes = await self._attempt([row for row, _ in group])
                for (_, answer), outcome in zip(group, outcomes, strict=True):
                    if not answer.done():
                        answer.set_result(outcome)
        finally:
            self._writer = None

    async def _attempt(self, rows: list[dict[str, Any]]) -> list[ClaimOutcome]:
        try:
            return await self._insert(rows)
        except Exception as exc:  # noqa: BLE001 - a claim never fails a start: the gate decides without it
            log.warning("store.claim_failed", error=describe(exc))
            return [ClaimOutcome.UNCHECKED] * len(rows)

    async def _insert(self, rows: list[dict[str, Any]]) -> list[ClaimOutcome]:
        """One transaction for the group: the first streams' calls into `streamed_calls`, then into `streams`
        every row whose call was new there (hand-overs need not be); each goes in unless a constraint refuses it
        (then nothing happens to it, and the others still go in), and the rows that went in come back."""
        engine = self._engine()
        async with engine.begin() as connection:
            firsts = [row for row in rows if row["first_stream"]]
            new_calls = await _record_calls(connection, firsts)
            allowed = [row for row in rows if not row["first_stream"] or row["call_sid"] in new_calls]
            inserted: list[Any] = []
            if allowed:
                statement = dialect_insert(connection.dialect.name, STREAMS).values(allowed).on_conflict_do_nothing()
                returned = STREAMS.c.stream_sid, STREAMS.c.call_sid, STREAMS.c.first_stream
                inserted = list(await connection.execute(statement.returning(*returned)))
            claimed = {str(row.stream_sid) for row in inserted}
            # A call recorded here whose first stream did not go in (its streamSid was taken) had no stream.
            unused = new_calls - {str(row.call_sid) for row in inserted if row.first_stream}
            if unused:
                await connection.execute(delete(STREAMED_CALLS).where(STREAMED_CALLS.c.call_sid.in_(unused)))
        outcomes = []
        for row in rows:
            stream_sid = str(row["stream_sid"])
            if stream_sid in claimed:
                claimed.discard(stream_sid)  # a streamSid claimed twice in one group is in only once
                outcomes.append(ClaimOutcome.CLAIMED)
            else:
                outcomes.append(await self._taken(engine, stream_sid, str(row["call_sid"])))
        return outcomes

    async def _taken(self, engine: AsyncEngine, stream_sid: str, call_sid: str) -> ClaimOutcome:
        """Which constraint refused the row: the stream's own row, if there is one, or else the call's first stream,
        or the call's outcome without one (recorded as not streamed)."""
        async with engine.connect() as connection:
            found = await connection.scalar(select(STREAMS.c.stream_sid).where(STREAMS.c.stream_sid == stream_sid))
            if found is not None:
                return ClaimOutcome.STREAM_TAKEN
            status = await connection.scalar(select(CALLS.c.status).where(CALLS.c.call_sid == call_sid))
        return ClaimOutcome.NOT_STREAMED if status == CallStatus.NOT_STREAMED else ClaimOutcome.CALL_TAKEN


async def _record_calls(connection: AsyncConnection, firsts: list[dict[str, Any]]) -> set[str]:
    """The first streams' calls put in `streamed_calls`; returns those that were not there before."""
    if not firsts:
        return set()
    values = [{"call_sid": row["call_sid"], "first_stream_at": row["started_at"]} for row in firsts]
    statement = dialect_insert(connection.dialect.name, STREAMED_CALLS).values(values).on_conflict_do_nothing()
    return set((await connection.scalars(statement.returning(STREAMED_CALLS.c.call_sid))).all())


async def call_has_stream(engine: AsyncEngine, call_sid: str) -> bool:
    """Whether any process has recorded a stream of `call_sid` (the watch for streams that never came asks), even
    one whose call has since been deleted: a replay of its `/voice` request is refused at `/media`, and that
    refusal's own log line says so, not a guess about an unreachable URL."""
    streamed = exists().where(STREAMED_CALLS.c.call_sid == call_sid)
    streaming = exists().where(STREAMS.c.call_sid == call_sid)
    async with engine.connect() as connection:
        return bool(await connection.scalar(select(streamed | streaming)))


async def calls_awaiting_stream(engine: AsyncEngine, limit: int) -> list[tuple[str, datetime.datetime]]:
    """The calls /voice answered whose stream has not started (on, with no stream yet, and none recorded), oldest
    first, at most `limit`: what a restart's watch resumes (`web/stream_watch.py`), with when each was answered."""
    statement = (
        select(CALLS.c.call_sid, CALLS.c.started_at)
        .where(
            CALLS.c.status == CallStatus.ACTIVE,
            CALLS.c.stream_sid == "",
            ~exists().where(STREAMED_CALLS.c.call_sid == CALLS.c.call_sid),
        )
        .order_by(CALLS.c.started_at)
        .limit(limit)
    )
    async with engine.connect() as connection:
        return [(str(row.call_sid), as_utc(row.started_at)) for row in await connection.execute(statement)]
