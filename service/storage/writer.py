"""I/O layer: calls and their final transcripts into the database, without ever slowing a call.

`TranscriptStore` is a `CallObserver`. Its methods run on the audio path, so they only turn the event into a
`Write` (`service/writes.py`) and append it to a bounded in-memory queue. One writer task drains the queue in
small batches, one transaction each, with idempotent upserts, so a retry, a journal replay or a batch delivery
after a restart never makes a second row. Interim results are not stored.

When the database is down the writer retries with full-jitter backoff, and writes wait in memory up to
DB_QUEUE_MAX. Past that they go to the journal (`service/journal.py`, DB_JOURNAL_PATH), fsynced a batch at a
time off the event loop, and from then on survive a crash. Writes keep one order: once the journal is in use,
every new write goes behind it; the writer replays it (oldest first) after what is in memory, and removes it
only when all of it is written and nothing is on its way to it. `stop` gives the writer a bounded time and
journals whatever is left, ahead of what the journal already holds. A start-up replays a journal left behind.
Retention (the hourly purge the store starts) is `retention.py`'s.

Logs name an error's type, never its text or the URL: either may carry a password or a transcript.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.calls.events import CallEnded, CallStarted
from service.calls.transcript import Transcript, speaker_for
from service.retry import backoff
from service.settings import Settings
from service.storage.journal import Journal
from service.storage.outbox import add_webhook_event
from service.storage.retention import PURGE_INTERVAL_S, purge_hourly
from service.storage.schema import create_engine
from service.storage.writes import (
    Write,
    call_ended_write,
    call_started_write,
    describe,
    is_permanent,
    statements,
    utterance_write,
)
from service.times import Clock, utc_now

log = structlog.get_logger("callscribe.store")

BATCH_MAX = 50  # writes per transaction: small, so one slow batch never holds much back
RETRY_BASE_S = 0.5
RETRY_CAP_S = 30.0  # a database that is down for hours is tried about twice a minute


@dataclass
class StoreCounters:
    """What the store has done since it was made; for tests, metrics and the log."""

    written: int = 0  # writes committed to the database, replayed ones included
    journaled: int = 0  # writes appended to the journal file
    replayed: int = 0  # journal writes committed to the database
    failures: int = 0  # transactions that failed and were retried
    rejected: int = 0  # writes the database refused as invalid: logged and dropped
    lost: int = 0  # writes neither the database nor the journal file could take


@dataclass
class _Outage:
    started: float  # time.monotonic()
    attempts: int = 0


class TranscriptStore:
    """Calls and final utterances into DATABASE_URL: never blocks a call; every write reaches the database or the
    journal (or, if the disk fails too, the log says how many did not)."""

    def __init__(
        self,
        settings: Settings,
        *,
        rng: random.Random | None = None,
        retry_base_s: float = RETRY_BASE_S,
        retry_cap_s: float = RETRY_CAP_S,
        purge_interval_s: float = PURGE_INTERVAL_S,
        batch_max: int = BATCH_MAX,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.counters = StoreCounters()
        self._journal: Journal | None = None  # claimed at start (a slot of DB_JOURNAL_PATH)
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not cryptography
        self._retry_base_s, self._retry_cap_s = retry_base_s, retry_cap_s
        self._purge_interval_s = purge_interval_s
        self._batch_max = batch_max
        self._clock = clock
        self._queue: collections.deque[Write] = collections.deque()
        self._overflow: list[Write] = []  # on their way to the journal file
        self._journaling = False  # while set, every new write goes to the journal, behind what it holds
        self._journal_offset = 0  # bytes of the journal already written to the database
        self._journal_lock = asyncio.Lock()  # an append to the journal, or the check before removing it
        self._wake = asyncio.Event()  # work for the writer
        self._flush_wanted = asyncio.Event()  # overflow for the journal task
        self._idle = asyncio.Event()  # nothing queued, nothing journaled
        self._memory_empty = asyncio.Event()
        self._memory_empty.set()
        self._stopping = asyncio.Event()
        self._failed_while_stopping = asyncio.Event()
        self._closed = False
        self._single = 0  # batches of one, to find the write the database refuses
        self._outage: _Outage | None = None
        self._engine: AsyncEngine | None = None
        self._webhooks = settings.transcript_webhook_url is not None
        self._writer: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The database engine, once started (the API reads through it)."""
        if self._engine is None:
            raise RuntimeError("the store has not started")
        return self._engine

    @property
    def journal(self) -> Journal:
        """This process's journal file (its slot of DB_JOURNAL_PATH)."""
        if self._journal is None:
            self._journal = self._claim_journal()
        return self._journal

    def _claim_journal(self) -> Journal:
        try:
            return Journal.claim(self.settings.db_journal_path)
        except OSError:
            # Calls go on; the journal is only needed if the database also fails, and then its appends say so.
            log.exception("store.journal_unclaimed", journal=str(self.settings.db_journal_path))
            return Journal(self.settings.db_journal_path)

    # --- CallObserver: on the audio path, so they only queue ---------------------------------------------------

    def call_started(self, event: CallStarted) -> None:
        self._accept(lambda: call_started_write(event))

    def transcript(self, transcript: Transcript) -> None:
        if transcript.is_final:  # interim results are not stored
            speaker = speaker_for(self.settings, transcript.track)
            self._accept(lambda: utterance_write(transcript, speaker=speaker, created_at=self._clock()))

    def call_ended(self, event: CallEnded) -> None:
        self._accept(lambda: call_ended_write(event))

    def _accept(self, make: Callable[[], Write]) -> None:
        try:
            self._put(make())
        except Exception:
            # A bug here must cost one row, never the call that reported it.
            self.counters.lost += 1
            log.exception("store.write_lost")

    def _put(self, write: Write) -> None:
        self._idle.clear()
        if self._closed:
            self._journal_now([write])  # after stop() nothing else will write it
        elif self._journaling or len(self._queue) >= self.settings.db_queue_max:
            if not self._journaling:
                log.warning(
                    "store.journaling", queue_max=self.settings.db_queue_max, journal=str(self.journal.path),
                    why="the database is not keeping up: writes go to the journal until it has caught up",
                )  # fmt: skip
                self._journaling = True
            self._overflow.append(write)
            self._flush_wanted.set()
        else:
            self._queue.append(write)
            self._memory_empty.clear()
            self._wake.set()

    # --- Lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer (which first replays a journal a previous process left) and the hourly purge."""
        if self._writer is not None or self._closed:
            return
        self._engine = create_engine(self.settings.database_url)
        if self._journal is None:
            self._journal = await asyncio.to_thread(self._claim_journal)
        left = await asyncio.to_thread(self._recover_journals)
        if left:
            log.info("store.journal_found", journal=str(self.journal.path), bytes=left)
            # What the earlier process journaled is older than anything queued since: it goes first.
            self._overflow[:0] = self._queue
            self._queue.clear()
            self._memory_empty.set()
            self._journaling = True
            self._flush_wanted.set()
        self._writer = asyncio.create_task(self._run_writer(), name="store-writer")
        self._flusher = asyncio.create_task(self._run_flusher(), name="store-journal")
        if self.settings.retention_days is not None:
            purging = purge_hourly(
                self._engine, self.settings.retention_days, clock=self._clock, interval_s=self._purge_interval_s
            )
            self._purger = asyncio.create_task(purging, name="store-purge")

    def _recover_journals(self) -> int:
        """What this slot holds from an earlier process, plus what dead processes left in the other slots."""
        try:
            return self.journal.recover() + self.journal.adopt(self.settings.db_journal_path)
        except OSError:
            log.exception("store.journal_unreadable", journal=str(self.journal.path))
            return self.journal.size()

    async def stop(self, timeout_s: float) -> None:
        """Write what is queued within `timeout_s`; what is left goes to the journal, ahead of what it holds.

        A database that was failing gets one more try, not the whole timeout: a shutdown is not held up for it.
        """
        if self._closed:
            return
        self._stopping.set()  # cuts a backoff short: one more try now
        if self._writer is not None:
            await self._wait_first((self._memory_empty.wait(), self._failed_while_stopping.wait()), timeout_s)
        for task in (self._writer, self._purger):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(task for task in (self._writer, self._purger) if task is not None), return_exceptions=True
        )
        async with self._journal_lock:  # not in the middle of an append
            if self._flusher is not None:
                self._flusher.cancel()
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        self._journal_rest()
        self._closed = True
        self.journal.release()  # another process may claim the slot and replay what is left in it
        if self._engine is not None:
            await self._engine.dispose()

    @staticmethod
    async def _wait_first(waits: tuple[Coroutine[Any, Any, Any], ...], timeout_s: float) -> None:
        tasks = [asyncio.ensure_future(wait) for wait in waits]
        await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()  # wait() leaves the others running
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Until everything given so far is in the database (the journal replayed and removed)."""
        await self._idle.wait()

    def _journal_rest(self) -> None:
        head, tail = list(self._queue), self._overflow
        self._queue.clear()
        self._overflow = []
        if not head and not tail and not self._journal_offset:
            return
        try:
            if self._writer is not None and (head or self._journal_offset):
                # Memory holds the oldest writes, and what was replayed need not be again: one atomic rewrite.
                self.journal.rewrite(head, self._journal_offset, tail)
            else:
                # Never started: a journal already there is an earlier process's, older than all of these.
                self.journal.append(head + tail)
        except OSError as exc:
            self._journal_failed(len(head) + len(tail), exc)
            return
        self.counters.journaled += len(head) + len(tail)
        self._journal_offset = 0
        if head or tail:
            log.warning("store.journaled_at_stop", writes=len(head) + len(tail), journal=str(self.journal.path))

    def _journal_now(self, writes: list[Write]) -> None:
        try:
            self.journal.append(writes)
        except OSError as exc:
            self._journal_failed(len(writes), exc)
        else:
            self.counters.journaled += len(writes)

    def _journal_failed(self, count: int, error: OSError) -> None:
        self.counters.lost += count
        log.error("store.journal_failed", writes=count, error=describe(error), why=error.strerror or "")

    # --- The journal task: overflow to disk, off the event loop -----------------------------------------------

    async def _run_flusher(self) -> None:
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            async with self._journal_lock:
                writes, self._overflow = self._overflow, []
                if not writes:
                    continue
                try:
                    # fsync can take a while on a busy disk: a thread keeps it off the calls' event loop.
                    await asyncio.to_thread(self.journal.append, writes)
                except OSError as exc:
                    self._journal_failed(len(writes), exc)
                else:
                    self.counters.journaled += len(writes)
            self._wake.set()

    # --- The writer task ------------------------------------------------------------------------------------

    async def _run_writer(self) -> None:
        while True:
            batch, journal_end = await self._next_batch()
            try:
                await self._write(batch)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any error: it retries, or drops and says so
                if not is_permanent(exc):
                    await self._retry_later(exc)
                    continue
                if len(batch) > 1:
                    self._single = len(batch)  # one at a time, to find the write the database refuses
                    continue
                self._rejected(batch[0], exc)
            else:
                self._recovered()
                self.counters.written += len(batch)
                if journal_end is not None:
                    self.counters.replayed += len(batch)
            self._single = max(0, self._single - len(batch))
            self._consumed(batch, journal_end)

    def _rejected(self, write: Write, error: Exception) -> None:
        self.counters.rejected += 1
        # No traceback: its text would carry the row (a transcript) into the log.
        log.error("store.rejected", kind=write.kind, call_sid=write.call_sid, error=describe(error))

    async def _next_batch(self) -> tuple[list[Write], int | None]:
        """The next writes in order: memory first (the oldest), then the journal; waits while there are none."""
        while True:
            self._wake.clear()
            size = 1 if self._single else self._batch_max
            if self._queue:
                return list(itertools.islice(self._queue, size)), None
            if self._journaling:
                writes, end, skipped = self.journal.read(self._journal_offset, size)
                if skipped:
                    log.error("store.journal_unreadable", lines=skipped, journal=str(self.journal.path))
                if writes:
                    return writes, end
                self._journal_offset = end
                if await self._finish_journal():
                    continue
            elif not self._overflow:
                self._idle.set()
            await self._wake.wait()

    async def _finish_journal(self) -> bool:
        """Remove the journal once all of it is written; False while writes are still on their way to it."""
        async with self._journal_lock:
            if self._overflow:
                return False  # the journal task appends them, then wakes the writer
            if self.journal.size() > self._journal_offset:
                return True  # appended while we read
            self.journal.remove()
            self._journal_offset = 0
            self._journaling = False
        log.info("store.journal_replayed", replayed=self.counters.replayed, journal=str(self.journal.path))
        return True

    def _consumed(self, batch: list[Write], journal_end: int | None) -> None:
        if journal_end is None:
            for _ in batch:
                self._queue.popleft()
            if not self._queue:
                self._memory_empty.set()
        else:
            self._journal_offset = journal_end

    async def _write(self, batch: list[Write]) -> None:
        assert self._engine is not None  # started
        now = self._clock()
        async with self._engine.begin() as connection:
            dialect = connection.dialect.name
            # One execute per row, not one executemany per batch: each await lets the event loop forward
            # audio, where a batch of 100 finals in one go held it for milliseconds (docs/benchmarks.md).
            for write in batch:
                for statement, parameters in statements(dialect, write, now):
                    await connection.execute(statement, parameters)
                if self._webhooks:
                    # The outbox: the event is committed with the data it describes, or not at all.
                    await add_webhook_event(connection, write, now)

    async def _retry_later(self, error: Exception) -> None:
        self.counters.failures += 1
        if self._outage is None:
            self._outage = _Outage(started=time.monotonic())
            log.warning(
                "store.unavailable", error=describe(error), queued=len(self._queue),
                queue_max=self.settings.db_queue_max, why="writes wait in memory, then in the journal",
            )  # fmt: skip
        self._outage.attempts += 1
        delay = backoff(self._outage.attempts, base_s=self._retry_base_s, cap_s=self._retry_cap_s, rng=self._rng)
        if self._stopping.is_set():
            self._failed_while_stopping.set()  # that was the last try: stop() journals the rest now
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopping.wait()  # stop() cuts the wait short, for one more try

    def _recovered(self) -> None:
        outage, self._outage = self._outage, None
        if outage is not None:
            log.info(
                "store.recovered", down_s=round(time.monotonic() - outage.started, 3), failures=outage.attempts,
                queued=len(self._queue), journal_pending=self._journaling,
            )  # fmt: skip
