"""Storage layer: RETENTION_DAYS, that is calls older than that deleted with their utterances, alerts,
deliveries, analyses, jobs, coverage and streams. A call's row in `streamed_calls` (its CallSid and a time,
nothing more) stays: it is what refuses a replayed `/voice` request's stream for good (`storage/streams.py`).

`purge` is one pass on its own engine (`python -m service db purge`); `purge_hourly` is the loop the running
service keeps (`TranscriptStore.start`), on the store's engine. Logs name an error's type, never its text.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any, cast

import structlog
from sqlalchemy import Table, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.settings import Settings
from service.storage.schema import Analysis, Job, Stream, WebhookDelivery, create_engine
from service.storage.writes import ALERTS, CALLS, COVERAGE, UTTERANCES, describe
from service.times import Clock, as_utc, utc_now

log = structlog.get_logger("callscribe.store")

PURGE_INTERVAL_S = 3600.0

WEBHOOK_DELIVERIES: Table = cast(Table, WebhookDelivery.__table__)
STREAMS: Table = cast(Table, Stream.__table__)
ANALYSES: Table = cast(Table, Analysis.__table__)
JOBS: Table = cast(Table, Job.__table__)


async def purge(settings: Settings, *, now: datetime.datetime | None = None) -> int:
    """Delete calls that started more than RETENTION_DAYS ago, with their utterances, webhook deliveries and
    streams."""
    if settings.retention_days is None:
        raise ValueError("RETENTION_DAYS is not set: nothing to purge by")
    engine = create_engine(settings.database_url)
    try:
        return await purge_older_than(engine, settings.retention_days, now or utc_now())
    finally:
        await engine.dispose()


async def purge_hourly(
    engine: AsyncEngine, days: int, *, clock: Clock = utc_now, interval_s: float = PURGE_INTERVAL_S
) -> None:
    """Purge now, then every `interval_s`, until cancelled; a failed pass is logged and the next one tries again."""
    while True:
        try:
            deleted = await purge_older_than(engine, days, clock())
        except Exception as exc:  # noqa: BLE001 - the next pass tries again; the error is logged
            log.warning("store.purge_failed", error=describe(exc))
        else:
            if deleted:
                log.info("store.purged", calls=deleted, retention_days=days)
        await asyncio.sleep(interval_s)


async def purge_older_than(engine: AsyncEngine, days: int, now: datetime.datetime) -> int:
    """One transaction; returns the calls deleted. Children go explicitly: SQLite enforces no CASCADE without
    its foreign-key pragma, and webhook deliveries and streams have no foreign key at all."""
    cutoff = as_utc(now) - datetime.timedelta(days=days)
    old = select(CALLS.c.call_sid).where(CALLS.c.started_at < cutoff)
    async with engine.begin() as connection:
        await _delete_children(connection, old)
        await _delete_streams(connection, old, cutoff)
        result = await connection.execute(delete(CALLS).where(CALLS.c.started_at < cutoff))
    return int(result.rowcount)


async def _delete_children(connection: AsyncConnection, calls: Any) -> None:
    await connection.execute(delete(UTTERANCES).where(UTTERANCES.c.call_sid.in_(calls)))
    await connection.execute(delete(ALERTS).where(ALERTS.c.call_sid.in_(calls)))
    await connection.execute(delete(WEBHOOK_DELIVERIES).where(WEBHOOK_DELIVERIES.c.call_sid.in_(calls)))
    await connection.execute(delete(ANALYSES).where(ANALYSES.c.call_sid.in_(calls)))
    await connection.execute(delete(JOBS).where(JOBS.c.call_sid.in_(calls)))
    await connection.execute(delete(COVERAGE).where(COVERAGE.c.call_sid.in_(calls)))


async def _delete_streams(connection: AsyncConnection, calls: Any, cutoff: datetime.datetime) -> None:
    # A stream is claimed before its call row is written, so one whose call never got a row (refused later, or
    # the process died) goes by its own start: long past any token that could let its `start` in again.
    old = or_(STREAMS.c.call_sid.in_(calls), STREAMS.c.started_at < cutoff)
    await connection.execute(delete(STREAMS).where(old))
