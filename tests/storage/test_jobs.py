"""The job mechanism (`storage/jobs.py`) on SQLite and PostgreSQL: one job per key, one holder at a time, a lapsed
lease taken over, retries after a backoff, and an end (skipped, failed) that is never tried again."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.storage.job_policy import Done, Fail, Policy, Retry, Skip
from service.storage.jobs import JOBS, Claimed, Jobs, LostClaim, enqueue
from service.storage.schema import create_engine
from service.storage.statuses import JobStatus
from tests.helpers.databases import SQLITE_BUSY_TIMEOUT_S, database_url, migrated_url
from tests.helpers.spool import Clock, engine

__all__ = ["database_url", "engine", "migrated_url"]  # fixtures: SQLite and PostgreSQL

KIND = "analysis"


def jobs(engine: AsyncEngine, owner: str, clock: Clock, **policy: float) -> Jobs:
    return Jobs(lambda: engine, kind=KIND, owner=owner, clock=clock, rng=random.Random(7), policy=Policy(**policy))  # type: ignore[arg-type]


async def add(engine: AsyncEngine, key: str, clock: Clock) -> None:
    async with engine.begin() as connection:
        await enqueue(connection, kind=KIND, key=key, call_sid=key.split(":", maxsplit=1)[0], now=clock.now)


async def row(engine: AsyncEngine, key: str) -> dict[str, object]:
    async with engine.connect() as connection:
        found = (await connection.execute(select(JOBS).where(JOBS.c.key == key))).mappings().one()
    return dict(found)


async def finish(worker: Jobs, engine: AsyncEngine, claimed: Claimed, outcome: Done | Skip | Retry | Fail) -> object:
    async with engine.begin() as connection:
        return await worker.finish(connection, claimed, outcome)


async def test_enqueueing_twice_adds_one_job_and_a_finished_one_is_not_revived(engine: AsyncEngine) -> None:
    """The same kind and key twice is one job; enqueued again after it is done, it stays done."""
    clock = Clock()
    await add(engine, "CA1:v1", clock)
    await add(engine, "CA1:v1", clock)
    worker = jobs(engine, "one", clock)
    claimed = await worker.claim()
    assert claimed is not None
    assert (claimed.key, claimed.attempts) == ("CA1:v1", 1)
    assert await worker.claim() is None  # the only job is held
    await finish(worker, engine, claimed, Done())
    await add(engine, "CA1:v1", clock)
    assert (await row(engine, "CA1:v1"))["status"] == JobStatus.DONE
    assert await worker.claim() is None


async def test_two_claimers_at_once_never_hold_one_job(migrated_url: str) -> None:
    """Two processes (two engines, two pools) claiming concurrently: every job is claimed by exactly one."""
    clock = Clock()
    # SQLite: the processes of one machine wait for the file's lock as the service's engines do (sqlite3's 5 s), not
    # the tests' short timeout, which is there to show an outage quickly.
    url = migrated_url.replace(f"timeout={SQLITE_BUSY_TIMEOUT_S}", "timeout=5")
    first, second = create_engine(url), create_engine(url)
    try:
        for number in range(12):
            await add(first, f"CA{number}:v", clock)

        async def drain(worker: Jobs) -> list[str]:
            taken = []
            while (claimed := await worker.claim()) is not None:
                taken.append(claimed.key)
            return taken

        one, other = await asyncio.gather(drain(jobs(first, "one", clock)), drain(jobs(second, "other", clock)))
        assert sorted(one + other) == sorted(f"CA{number}:v" for number in range(12))
        assert not set(one) & set(other)
    finally:
        await first.dispose()
        await second.dispose()


async def test_a_lapsed_lease_is_taken_over_and_the_old_holder_stores_nothing(engine: AsyncEngine) -> None:
    """A holder that outlives its lease (it died, or hung) loses the job to the next claimer, and its late finish
    is refused (LostClaim) while the new holder's is kept."""
    clock = Clock()
    await add(engine, "CA1:v1", clock)
    dead, alive = jobs(engine, "dead", clock, lease_s=60), jobs(engine, "alive", clock, lease_s=60)
    held = await dead.claim()
    assert held is not None
    clock.advance(59)
    assert await alive.claim() is None  # still leased
    clock.advance(2)
    taken = await alive.claim()
    assert taken is not None
    assert (taken.key, taken.attempts) == ("CA1:v1", 2)
    with pytest.raises(LostClaim):
        await finish(dead, engine, held, Done())
    await finish(alive, engine, taken, Skip("nothing to say"))
    stored = await row(engine, "CA1:v1")
    assert (stored["status"], stored["reason"], stored["claimed_by"]) == (JobStatus.SKIPPED, "nothing to say", None)


async def test_a_failure_that_may_pass_is_retried_after_a_backoff_then_given_up(engine: AsyncEngine) -> None:
    """Retry: pending again, not claimable until its backoff has passed, the error kept; the last attempt fails it."""
    clock = Clock()
    await add(engine, "CA1:v1", clock)
    worker = jobs(engine, "one", clock, max_attempts=2, base_s=10, cap_s=10)
    claimed = await worker.claim()
    assert claimed is not None
    decision = await finish(worker, engine, claimed, Retry("HTTP 429"))
    stored = await row(engine, "CA1:v1")
    assert (stored["status"], stored["reason"], stored["attempts"]) == (JobStatus.PENDING, "HTTP 429", 1)
    delay = decision.retry_in_s  # type: ignore[attr-defined]
    assert 0 <= delay <= 10
    clock.advance(delay - 0.001)
    if delay > 0.001:
        assert await worker.claim() is None
    clock.advance(0.002)
    again = await worker.claim()
    assert again is not None
    assert again.attempts == 2
    await finish(worker, engine, again, Retry("HTTP 503"))
    stored = await row(engine, "CA1:v1")
    assert stored["status"] == JobStatus.FAILED
    assert stored["reason"] == "gave up after 2 attempts: HTTP 503"
    clock.advance(3600)
    assert await worker.claim() is None


async def test_a_permanent_failure_is_recorded_and_never_claimed_again(engine: AsyncEngine) -> None:
    clock = Clock()
    await add(engine, "CA1:v1", clock)
    worker = jobs(engine, "one", clock)
    claimed = await worker.claim()
    assert claimed is not None
    await finish(worker, engine, claimed, Fail("HTTP 400: text intelligence supports English only"))
    stored = await row(engine, "CA1:v1")
    assert (stored["status"], stored["reason"]) == (
        JobStatus.FAILED,
        "HTTP 400: text intelligence supports English only",
    )
    assert stored["finished_at"] is not None
    clock.advance(86400)
    assert await worker.claim() is None


async def test_a_job_whose_holders_keep_dying_fails_instead_of_looping(engine: AsyncEngine) -> None:
    """Every claim counts: after max_attempts claims that ended without an answer, the next claimer records it as
    failed and moves on to the next job."""
    clock = Clock()
    await add(engine, "CA1:v1", clock)
    worker = jobs(engine, "one", clock, max_attempts=2, lease_s=60)
    for _ in range(2):
        assert await worker.claim() is not None
        clock.advance(61)  # the holder died: its lease runs out
    clock.advance(1)
    await add(engine, "CA2:v1", clock)
    nxt = await worker.claim()
    assert nxt is not None
    assert nxt.key == "CA2:v1"
    stored = await row(engine, "CA1:v1")
    assert stored["status"] == JobStatus.FAILED
    assert "gave up after 2 attempts" in str(stored["reason"])


async def test_a_job_given_back_at_shutdown_is_claimable_at_once(engine: AsyncEngine) -> None:
    clock = Clock()
    await add(engine, "CA1:v1", clock)
    stopping, other = jobs(engine, "stopping", clock), jobs(engine, "other", clock)
    claimed = await stopping.claim()
    assert claimed is not None
    await stopping.give_back(claimed)
    taken = await other.claim()
    assert taken is not None
    assert (taken.key, taken.attempts) == ("CA1:v1", 2)
