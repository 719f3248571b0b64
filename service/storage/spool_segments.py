"""Storage layer: the spool every process shares, in the database (PostgreSQL in production), as the batch
worker's `SharedSpool` port (`spool/worker.py`).

Heroku's dyno disk is erased at every restart, so a spool entry on it outlives only the process's crash, not
the dyno. Each complete local entry is put here (`put`: one `spool_segments` row and its WAV in
`spool_chunks` of CHUNK_BYTES, in one transaction), then removed from the disk. Any process's batch worker
then claims the oldest segment no one holds (`claim`: a conditional UPDATE that only one process can win, the
lease `claimed_until` moved LEASE_S on), transcribes it, and removes it; a failure gives it back (`failed`). A
process that dies holding a claim gives it back by its lease running out.

Where the audio lives is the `AudioStore` seam: `ChunkAudio`, the `spool_chunks` table (the default), or
`S3Audio` (`storage/spool_objects.py`, SPOOL_URL=s3://...), one object per segment. The rows (the claims, the
bound, retention) stay in the database either way. An object is written before its row's transaction opens,
so a row never names audio that is not there (and an upload holds no database lock); it is deleted after its
row, and an object left without a row (a commit or a delete that failed) is deleted by `purge` once it is older
than the lease.

Bounded: past `max_bytes` of audio waiting here, `put` says no and the entry stays on the local disk (and is
transcribed there, as without a shared spool). Retention: segments older than `retention_days` are deleted by
`purge`, and each is logged. Logs name an error's type, never its text or the URL.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import Table, delete, func, insert, make_url, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.calls.coverage import Category, Lost, spool_key
from service.storage.schema import CoveragePart, SpoolChunk, SpoolSegment, async_url
from service.times import Clock, as_utc, utc_now

log = structlog.get_logger("callscribe.spool")

SEGMENTS: Table = cast(Table, SpoolSegment.__table__)
CHUNKS: Table = cast(Table, SpoolChunk.__table__)
CHUNK_BYTES = 256 * 1024  # a row per quarter megabyte: 16 s of μ-law audio
_FIELDS = ("id", "call_sid", "stream_sid", "track", "start_s", "duration_s", "reason", "created_at", "attempts",
           "last_error")  # fmt: skip


def is_postgresql(database_url: str) -> bool:
    """Whether DATABASE_URL names PostgreSQL: the database every dyno shares, so the spool goes there."""
    return make_url(async_url(database_url)).get_backend_name() == "postgresql"


class AudioStore(Protocol):
    """Where a shared segment's WAV is kept, beside its row."""

    outside: bool  # kept outside the database (`discard` deletes it), rather than in the row's transaction

    async def stage(self, segment_id: str, wav: bytes) -> None:
        """Before the row's transaction: keep the WAV outside the database (raises if it cannot)."""
        ...

    async def write(self, connection: AsyncConnection, segment_id: str, wav: bytes) -> None:
        """In the transaction that inserts the row, after the insert: keep the WAV in the database."""
        ...

    async def read(self, connection: AsyncConnection, segment_id: str) -> bytes:
        """The WAV, whole."""
        ...

    async def forget(self, connection: AsyncConnection, segment_id: str) -> None:
        """In the transaction that deletes the row: what goes with it there."""
        ...

    async def discard(self, segment_ids: Sequence[str]) -> None:
        """After the rows are gone: what lives outside the database goes."""
        ...

    async def listed(self) -> list[tuple[str, datetime.datetime]]:
        """The segments this store holds outside the database, with when each was written."""
        ...


class ChunkAudio:
    """The WAV in `spool_chunks`, CHUNK_BYTES a row, in the row's own transaction."""

    outside = False

    async def stage(self, segment_id: str, wav: bytes) -> None:
        return None  # all of it goes in with the row (`write`)

    async def write(self, connection: AsyncConnection, segment_id: str, wav: bytes) -> None:
        chunks = [
            {"segment_id": segment_id, "seq": seq, "data": wav[start : start + CHUNK_BYTES]}
            for seq, start in enumerate(range(0, len(wav), CHUNK_BYTES))
        ]
        if chunks:
            await connection.execute(insert(CHUNKS), chunks)

    async def read(self, connection: AsyncConnection, segment_id: str) -> bytes:
        rows = await connection.scalars(
            select(CHUNKS.c.data).where(CHUNKS.c.segment_id == segment_id).order_by(CHUNKS.c.seq)
        )
        return b"".join(rows)

    async def forget(self, connection: AsyncConnection, segment_id: str) -> None:
        await connection.execute(delete(CHUNKS).where(CHUNKS.c.segment_id == segment_id))

    async def discard(self, segment_ids: Sequence[str]) -> None:
        return None  # the chunks went with their rows

    async def listed(self) -> list[tuple[str, datetime.datetime]]:
        return []  # nothing outside the database


class DatabaseSpool:
    """Spool segments in the database, claimed by one process at a time."""

    def __init__(
        self,
        engine: Callable[[], AsyncEngine],
        *,
        owner: str,
        max_bytes: int,
        lease_s: float,
        retention_days: int | None,
        clock: Clock = utc_now,
        audio: AudioStore | None = None,
    ) -> None:
        self._engine = engine
        self.owner = owner
        self._max_bytes = max_bytes
        self._lease = datetime.timedelta(seconds=lease_s)
        self._retention_days = retention_days
        self._clock = clock
        self._audio: AudioStore = audio or ChunkAudio()
        self._swept_at: datetime.datetime | None = None

    async def put(self, segment: Mapping[str, Any], wav: bytes) -> bool:
        """Keep `segment` (its `_FIELDS`) and its WAV; False when that would pass the bound. Putting the same
        segment again is a no-op (True). Raises, keeping nothing, if the audio cannot be kept."""
        async with self._engine().connect() as connection:
            if await connection.scalar(select(SEGMENTS.c.id).where(SEGMENTS.c.id == segment["id"])) is not None:
                return True
            waiting = int(await connection.scalar(select(func.coalesce(func.sum(SEGMENTS.c.bytes), 0))) or 0)
        if waiting + len(wav) > self._max_bytes:
            return False
        # Staged before the row's transaction opens: an upload never holds a database lock (SQLite's is the file's).
        await self._audio.stage(segment["id"], wav)
        row = {name: segment[name] for name in _FIELDS}
        row["created_at"] = as_utc(row["created_at"])
        async with self._engine().begin() as connection:
            await connection.execute(insert(SEGMENTS).values(**row, bytes=len(wav)))
            await self._audio.write(connection, segment["id"], wav)
        return True

    async def claim(self) -> dict[str, Any] | None:
        """The oldest segment no live claim holds, now held by this process for the lease; None if none is."""
        now = as_utc(self._clock())
        free = or_(SEGMENTS.c.claimed_until.is_(None), SEGMENTS.c.claimed_until < now)
        async with self._engine().connect() as connection:
            candidates = (
                await connection.execute(
                    select(*(SEGMENTS.c[name] for name in _FIELDS)).where(free).order_by(SEGMENTS.c.created_at).limit(5)
                )
            ).mappings().all()  # fmt: skip
        for candidate in candidates:
            async with self._engine().begin() as connection:
                won = await connection.execute(
                    update(SEGMENTS)
                    .where(SEGMENTS.c.id == candidate["id"], free)
                    .values(claimed_by=self.owner, claimed_until=now + self._lease)
                )
            if won.rowcount == 1:  # another process may have taken it between the look and the update
                return dict(candidate)
        return None

    async def wav(self, segment_id: str) -> bytes:
        """The segment's WAV."""
        async with self._engine().connect() as connection:
            return await self._audio.read(connection, segment_id)

    async def remove(self, segment_id: str) -> None:
        """Transcribed and delivered: the segment and its chunks go."""
        async with self._engine().begin() as connection:
            await self._audio.forget(connection, segment_id)
            await connection.execute(delete(SEGMENTS).where(SEGMENTS.c.id == segment_id))
        await self._audio.discard([segment_id])

    async def kept(self, segment_id: str) -> bool:
        """Whether the segment is still here: an erasure may have removed it while batch transcribed it."""
        async with self._engine().connect() as connection:
            return await connection.scalar(select(SEGMENTS.c.id).where(SEGMENTS.c.id == segment_id)) is not None

    async def failed(self, segment_id: str, error: str, *, retry_s: float) -> int:
        """The attempt failed: the error kept, and no process claims the segment again for `retry_s` (the next
        pass); the attempts so far."""
        retry_at = as_utc(self._clock()) + datetime.timedelta(seconds=retry_s)
        async with self._engine().begin() as connection:
            await connection.execute(
                update(SEGMENTS)
                .where(SEGMENTS.c.id == segment_id)
                .values(
                    attempts=SEGMENTS.c.attempts + 1, last_error=error[:2000], claimed_by=None, claimed_until=retry_at
                )
            )
            return int(await connection.scalar(select(SEGMENTS.c.attempts).where(SEGMENTS.c.id == segment_id)) or 0)

    async def waiting(self) -> int:
        """Segments waiting (claimed or not)."""
        async with self._engine().connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(SEGMENTS)) or 0)

    async def purge(self) -> int:
        """Delete the segments older than the retention limit, each logged (their audio is lost), and the audio
        no row names any more; how many segments expired."""
        expired = await self._expire()
        await self._sweep()
        return expired

    async def _expire(self) -> int:
        if self._retention_days is None:
            return 0
        cutoff = as_utc(self._clock()) - datetime.timedelta(days=self._retention_days)
        async with self._engine().begin() as connection:
            expired = select(SEGMENTS.c.id, SEGMENTS.c.call_sid).where(SEGMENTS.c.created_at < cutoff)
            old = (await connection.execute(expired)).all()
            for segment_id, call_sid in old:
                await self._audio.forget(connection, segment_id)
                await connection.execute(delete(SEGMENTS).where(SEGMENTS.c.id == segment_id))
                await _coverage_lost(connection, call_sid, segment_id, as_utc(self._clock()))
                log.warning(
                    "spool.expired", spool_id=segment_id, call_sid=call_sid, why="older than SPOOL_RETENTION_DAYS"
                )
        await self._audio.discard([segment_id for segment_id, _ in old])
        return len(old)

    async def _sweep(self) -> int:
        """Delete the audio whose row is gone (or never committed), once older than the lease: younger, its row
        may still be on its way. At most once a lease (a listing of the bucket is a billed request). How many went."""
        now = as_utc(self._clock())
        if self._swept_at is not None and now - self._swept_at < self._lease:
            return 0
        self._swept_at = now
        settled = now - self._lease
        held = [segment_id for segment_id, written in await self._audio.listed() if as_utc(written) < settled]
        if not held:
            return 0
        async with self._engine().connect() as connection:
            known = set(await connection.scalars(select(SEGMENTS.c.id).where(SEGMENTS.c.id.in_(held))))
        orphans = [segment_id for segment_id in held if segment_id not in known]
        if orphans:
            await self._audio.discard(orphans)
            log.info("spool.orphans_deleted", count=len(orphans), why="audio whose row is gone")
        return len(orphans)


async def _coverage_lost(connection: AsyncConnection, call_sid: str, segment_id: str, now: datetime.datetime) -> None:
    """The call's coverage says so: the segment's seconds move from waiting to lost (`spool_expired`)."""
    table = cast(Table, CoveragePart.__table__)
    await connection.execute(
        update(table)
        .where(
            table.c.call_sid == call_sid,
            table.c.part == spool_key(segment_id),
            table.c.category == str(Category.WAITING),
        )
        .values(category=str(Category.LOST), reason=str(Lost.SPOOL_EXPIRED), updated_at=now)
    )
