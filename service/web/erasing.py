"""Wiring: an erasure in one process, from the database to the live feed: `DELETE /api/calls/{sid}`,
`DELETE /api/numbers/{number}` and `calls erase` all go through `Eraser`.

The database's part is `storage/erasure.py`'s cascade, in one transaction with its audit entry. What lives
outside it is erased first, so that the audit entry's counts are the whole erasure's and a failure leaves the
database as it was, for the request to be made again: this process's SPOOL_DIR entries of the calls (another
machine's disk cannot be reached; the shared spool is in the database), this process's live feed (replay buffer,
the board of calls on now, subscribers' queues) and, with REDIS_URL, the Redis Stream's entries and, through a
control entry there, every other process's buffer. Without Redis another worker's buffer cannot be reached: it
lets those calls' events go within LIVE_REPLAY_S. The shared spool's objects in S3 go after the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.live.hub import LiveHub
from service.spool.directory import Spool
from service.storage import erasure
from service.storage.audit import Audited, masked_number
from service.storage.erasure import Erasure, Request
from service.storage.spool_segments import AudioStore
from service.times import utc_now

log = structlog.get_logger("callscribe.erase")

# With REDIS_URL: the stream's entries of the calls deleted, every process told to forget them; how many went.
ForgetInStream = Callable[[Collection[str]], Awaitable[int]]


class StreamUnreachable(Exception):
    """Redis could not be asked to forget the calls: nothing of the database was erased; ask again."""


@dataclass(frozen=True, slots=True)
class Eraser:
    """The parts of one process an erasure reaches."""

    engine: Callable[[], AsyncEngine]
    spool: Spool | None = None  # this process's SPOOL_DIR
    hub: LiveHub | None = None  # this process's live feed
    stream: ForgetInStream | None = None  # REDIS_URL's stream
    audio: AudioStore | None = None  # the shared spool's audio, when it lives outside the database (S3)

    async def erase_number(self, number: str, who: Audited) -> Erasure:
        """Every ended call to or from `number` (checked by `erasure.checked_number` first); the calls still on are
        left and named (`in_progress`)."""
        engine = self.engine()
        calls, in_progress = await erasure.number_calls(engine, number)
        outside = await self._outside(calls)
        return await erasure.erase_number(
            engine, number, calls, in_progress=in_progress, request=Request(who, utc_now()), audio=self.audio,
            outside=outside,
        )  # fmt: skip

    async def delete_call(self, call_sid: str, who: Audited) -> Erasure:
        """One call, whatever its status; its counts (`calls` 0: there was none)."""
        outside = await self._outside([call_sid])
        return await erasure.delete_call(
            self.engine(), call_sid, request=Request(who, utc_now()), audio=self.audio, outside=outside
        )

    async def _outside(self, call_sids: Collection[str]) -> dict[str, int]:
        """What this process reaches of the calls outside the database, erased; StreamUnreachable if Redis is not
        answering."""
        counts = {"spool_local": 0, "live_events": 0, "redis_entries": 0}
        if not call_sids:
            return counts
        if self.spool is not None:
            counts["spool_local"] = await asyncio.to_thread(self.spool.erase, call_sids)
        if self.hub is not None:
            counts["live_events"] = self.hub.forget(call_sids)
        if self.stream is not None:
            try:
                counts["redis_entries"] = await self.stream(call_sids)
            except Exception as exc:  # redis-py's errors are the stream adapter's to know; any means "not done"
                log.warning("erase.stream_unreachable", error=type(exc).__name__, calls=len(call_sids))
                raise StreamUnreachable(type(exc).__name__) from exc
        return counts


def erasure_json(number: str, erased: Erasure) -> dict[str, Any]:
    """An erasure by number as the API's JSON object (the `Erasure` schema in openapi.json): the counts, the calls
    left because they are still on, and what that means. The number only masked, as the audit log keeps it."""
    calls = erased.counts["calls"]
    message = f"erased {calls} call{'s' * (calls != 1)} to or from {masked_number(number)}"
    if erased.in_progress:
        message += (
            f"; {len(erased.in_progress)} still on, not erased (its live session would write it again): "
            "erase again once it has ended"
        )
    return {
        "subject": masked_number(number),
        "counts": {kind: erased.counts[kind] for kind in erasure.KINDS},
        "in_progress": list(erased.in_progress),
        "message": message,
    }
