"""Storage layer: the database's record of the streams that were let in, as `calls/admission.py`'s `StreamClaims`.

A claim is one row in `streams`, inserted in its own short transaction. The database's constraints answer the
question for every process at once: the primary key says a streamSid starts once, the partial unique index on
`call_sid` where `first_stream` says a call has one first stream (hand-overs are not limited). When the insert
is refused, a look at the table tells which of the two it was.

A claim never raises: an outage, a missing table or an answer slower than `timeout_s` is `UNCHECKED`, and the
gate lets the stream in on its other checks. Logs name an error's type, never its text or the URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import structlog
from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.calls.admission import ClaimOutcome
from service.storage.schema import Stream
from service.storage.writes import describe
from service.times import Clock, as_utc, utc_now

log = structlog.get_logger("callscribe.store")

STREAMS: Table = cast(Table, Stream.__table__)
CLAIM_TIMEOUT_S = 2.0  # a start waits no longer than this for the database before it is let in unchecked


class DatabaseStreamClaims:
    """`StreamClaims` on the store's database; `engine` is asked for at each claim (the store opens it at start)."""

    def __init__(
        self, engine: Callable[[], AsyncEngine], *, timeout_s: float = CLAIM_TIMEOUT_S, clock: Clock = utc_now
    ) -> None:
        self._engine = engine
        self._timeout_s = timeout_s
        self._clock = clock
        self._given_up: set[asyncio.Task[ClaimOutcome]] = set()  # claims past their timeout, still cleaning up

    async def claim(
        self, *, call_sid: str, stream_sid: str, purpose: str, track: str, first_stream: bool
    ) -> ClaimOutcome:
        """Record the stream as started, unless the database says it or its call's first stream already did."""
        row = {
            "stream_sid": stream_sid, "call_sid": call_sid, "purpose": purpose, "track": track,
            "first_stream": first_stream, "started_at": as_utc(self._clock()),
        }  # fmt: skip
        # A task waited on, not a timeout around the await: a cancelled SQLAlchemy connection still rolls back
        # before it lets go, and SQLite's driver can only do that once its thread is free of the lock it waits
        # for. The start must not wait for that too.
        attempt = asyncio.create_task(self._attempt(row))
        try:
            done, _ = await asyncio.wait({attempt}, timeout=self._timeout_s)
        finally:
            if not attempt.done():
                self._give_up(attempt)
        if attempt in done:
            return attempt.result()
        log.warning("store.claim_timed_out", timeout_s=self._timeout_s)
        return ClaimOutcome.UNCHECKED

    async def settle(self) -> None:
        """Wait until the claims given up on have let go of their connections (before the engine is disposed)."""
        await asyncio.gather(*self._given_up, return_exceptions=True)

    def _give_up(self, attempt: asyncio.Task[ClaimOutcome]) -> None:
        attempt.cancel()
        self._given_up.add(attempt)  # kept until done: the event loop holds only a weak reference to a task
        attempt.add_done_callback(self._given_up.discard)

    async def _attempt(self, row: dict[str, Any]) -> ClaimOutcome:
        try:
            return await self._insert(row)
        except Exception as exc:  # noqa: BLE001 - a claim never fails a start: the gate decides without it
            log.warning("store.claim_failed", error=describe(exc))
            return ClaimOutcome.UNCHECKED

    async def _insert(self, row: dict[str, Any]) -> ClaimOutcome:
        engine = self._engine()
        try:
            async with engine.begin() as connection:
                await connection.execute(insert(STREAMS), row)
        except IntegrityError:
            return await self._taken(engine, str(row["stream_sid"]))
        return ClaimOutcome.CLAIMED

    async def _taken(self, engine: AsyncEngine, stream_sid: str) -> ClaimOutcome:
        """Which constraint refused the row: the stream's own row, if there is one, or else the call's first stream.
        (A separate transaction: PostgreSQL's is aborted by the refused insert.)"""
        async with engine.connect() as connection:
            found = await connection.scalar(select(STREAMS.c.stream_sid).where(STREAMS.c.stream_sid == stream_sid))
        return ClaimOutcome.STREAM_TAKEN if found is not None else ClaimOutcome.CALL_TAKEN
