"""Storage layer: RETENTION_DAYS, that is calls older than that deleted with everything the database keeps of
them, through the one cascade an erasure uses (`erasure.py`: utterances and their search index, alerts,
deliveries, analyses, jobs, coverage, streams, controls, spool segments). A call's row in `streamed_calls` (its
CallSid and a time, nothing more) stays: it is what refuses a replayed `/voice` request's stream for good
(`storage/streams.py`). A spool segment's object in S3 is left to the shared spool's sweep, which deletes audio
whose row is gone.

`purge` is one pass on its own engine (`python -m service db purge`); `purge_hourly` is the loop the running
service keeps (`TranscriptStore.start`), on the store's engine. Logs name an error's type, never its text.
"""

from __future__ import annotations

import asyncio
import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.settings import Settings
from service.storage import erasure
from service.storage.schema import create_engine
from service.storage.writes import describe
from service.times import Clock, as_utc, utc_now

log = structlog.get_logger("callscribe.store")

PURGE_INTERVAL_S = 3600.0


async def purge(settings: Settings, *, now: datetime.datetime | None = None) -> int:
    """Delete calls that started more than RETENTION_DAYS ago, with everything the database keeps of them."""
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
    """One transaction; returns the calls deleted."""
    erased = await erasure.erase_older_than(engine, as_utc(now) - datetime.timedelta(days=days))
    return erased.counts["calls"]
