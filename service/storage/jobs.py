"""Storage layer: the durable job mechanism, in the database (`jobs`): the work after a call (the analysis).

A job is keyed by its kind and key (`analysis`, `<call_sid>:<transcript version>`): `enqueue` inside the
transaction that makes the work needed, so the job exists exactly when its cause does, and asking twice adds one.
Any process's worker `claim`s the oldest due job no live claim holds: a conditional UPDATE only one process can
win (the shared spool's claim, `spool_segments.py`), on PostgreSQL for every dyno, on SQLite for the processes of
one machine (the file's lock serialises the UPDATEs). The claim is a lease: a process that dies mid-job leaves it
to whichever process claims after `claimed_until`. `finish` records what the attempt meant (`job_policy.py`:
done, skipped, again after a backoff, failed), in the caller's transaction, and only while the claim is still
this process's: a holder whose lease was taken over stores nothing.

Nothing here knows what a job does; the worker of each kind (`analyses.py`) does.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import structlog
from sqlalchemy import ColumnElement, Table, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.storage.job_policy import Decision, Outcome, Policy, abandoned, decide
from service.storage.schema import Job
from service.storage.statuses import JobStatus
from service.times import Clock, as_utc, utc_now

log = structlog.get_logger("callscribe.jobs")

JOBS: Table = cast(Table, Job.__table__)
CANDIDATES = 5  # looked at per claim: another process may win the first


class LostClaim(RuntimeError):
    """The job's lease ran out and another process holds it now: this attempt's result is not stored."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job this process holds until `claimed_until`."""

    kind: str
    key: str
    call_sid: str
    attempts: int  # this attempt included
    claimed_until: datetime.datetime


async def enqueue(connection: AsyncConnection, *, kind: str, key: str, call_sid: str, now: datetime.datetime) -> None:
    """The job, due now, in the caller's transaction; nothing if it exists already (whatever its status)."""
    insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(JOBS)
    await connection.execute(
        insert.values(
            kind=kind, key=key, call_sid=call_sid, status=JobStatus.PENDING, attempts=0, run_after=as_utc(now),
            created_at=as_utc(now),
        ).on_conflict_do_nothing(index_elements=["kind", "key"])
    )  # fmt: skip


class Jobs:
    """One process's claims on one kind of job."""

    def __init__(
        self,
        engine: Callable[[], AsyncEngine],
        *,
        kind: str,
        owner: str,
        policy: Policy | None = None,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self._engine = engine
        self.kind = kind
        self.owner = owner
        self.policy = policy or Policy()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography

    def _free(self, now: datetime.datetime) -> ColumnElement[bool]:
        return and_(
            JOBS.c.kind == self.kind,
            JOBS.c.status == JobStatus.PENDING,
            JOBS.c.run_after <= now,
            or_(JOBS.c.claimed_until.is_(None), JOBS.c.claimed_until < now),
        )

    async def claim(self) -> Claimed | None:
        """The oldest due job no live claim holds, now this process's for the lease; None if there is none."""
        while True:
            now = as_utc(self._clock())
            async with self._engine().connect() as connection:
                candidates = [
                    (str(key), str(call_sid), int(attempts))
                    for key, call_sid, attempts in await connection.execute(
                        select(JOBS.c.key, JOBS.c.call_sid, JOBS.c.attempts)
                        .where(self._free(now))
                        .order_by(JOBS.c.run_after, JOBS.c.key)
                        .limit(CANDIDATES)
                    )
                ]
            if not candidates:
                return None
            claimed = await self._first_won(candidates, now)
            if claimed is None or not await self._given_up(claimed):
                return claimed
            # Abandoned too often: recorded as failed, and the next one is looked for.

    async def _first_won(self, candidates: list[tuple[str, str, int]], now: datetime.datetime) -> Claimed | None:
        until = now + datetime.timedelta(seconds=self.policy.lease_s)
        for key, call_sid, attempts in candidates:
            async with self._engine().begin() as connection:
                won = await connection.execute(
                    update(JOBS)
                    .where(JOBS.c.key == key, self._free(now))
                    .values(claimed_by=self.owner, claimed_until=until, attempts=JOBS.c.attempts + 1)
                )
            if won.rowcount == 1:  # another process may have taken it between the look and the update
                return Claimed(self.kind, key, call_sid, attempts + 1, until)
        return None

    async def _given_up(self, claimed: Claimed) -> bool:
        decision = abandoned(claimed.attempts, self.policy)
        if decision is None:
            return False
        async with self._engine().begin() as connection:
            await self._record(connection, claimed, decision)
        log.error("jobs.failed", kind=self.kind, key=claimed.key, call_sid=claimed.call_sid, reason=decision.reason)
        return True

    async def finish(self, connection: AsyncConnection, claimed: Claimed, outcome: Outcome) -> Decision:
        """Record the attempt's `outcome` in the caller's transaction; LostClaim (roll it back) when the claim is no
        longer this process's."""
        decision = decide(outcome, claimed.attempts, self.policy, self._rng)
        await self._record(connection, claimed, decision)
        return decision

    async def _record(self, connection: AsyncConnection, claimed: Claimed, decision: Decision) -> None:
        now = as_utc(self._clock())
        values: dict[str, object] = {"status": decision.status, "reason": decision.reason, "claimed_by": None,
                                     "claimed_until": None}  # fmt: skip
        if decision.retry_in_s is not None:
            values["run_after"] = now + datetime.timedelta(seconds=decision.retry_in_s)
        else:
            values["finished_at"] = now
        mine = and_(JOBS.c.kind == self.kind, JOBS.c.key == claimed.key, JOBS.c.claimed_by == self.owner)
        result = await connection.execute(
            update(JOBS).where(mine, JOBS.c.claimed_until == claimed.claimed_until).values(**values)
        )
        if result.rowcount != 1:
            raise LostClaim(f"the claim on {self.kind} job {claimed.key} passed to another process")

    async def give_back(self, claimed: Claimed) -> None:
        """Stopping mid-job: the job is due again at once, for whichever process looks next (the attempt still
        counts)."""
        async with self._engine().begin() as connection:
            await connection.execute(
                update(JOBS)
                .where(JOBS.c.kind == self.kind, JOBS.c.key == claimed.key, JOBS.c.claimed_by == self.owner,
                       JOBS.c.claimed_until == claimed.claimed_until)
                .values(claimed_by=None, claimed_until=None)
            )  # fmt: skip
