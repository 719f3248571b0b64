"""I/O layer: calls and their final transcripts into the database, without ever slowing a call.

`TranscriptStore` is a `CallObserver`. Its methods run on the audio path, so they only turn the event into a
`Write` (`writes.py`) and put it in the store's `WriteQueue` (`queue.py`), which decides every question of
order: memory first, then the journal; what goes to the journal, and when it may be removed; what `stop`
journals. Two tasks here do what it decides. The writer task takes its batches to the database, one
transaction each (finals and alerts gather for GATHER_S first), with idempotent upserts, so a retry, a journal
replay or a batch delivery after a restart never makes a second row; it retries an outage with full-jitter
backoff. The journal task appends what the queue sends
to the journal (`journal.py`, DB_JOURNAL_PATH), fsynced a batch at a time in a thread, off the event loop; from
then on those writes survive a crash. Interim results are not stored. Retention is `retention.py`'s.

When the database is down, writes wait in memory up to DB_QUEUE_MAX, then in the journal, which the writer
replays (oldest first) once memory is written. `stop` gives the writer a bounded time and journals whatever is
left, ahead of what the journal already holds. A start-up replays a journal left behind.

Logs name an error's type, never its text or the URL: either may carry a password or a transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.alerts.matching import Alert
from service.calls.coverage import Outcome
from service.calls.events import CallEnded, CallStarted, CallStateChanged, TurnChanged
from service.calls.transcript import Transcript, speaker_for
from service.retry import Outage, backoff
from service.settings import Settings
from service.storage.analyses import analysis_due, enqueue_version
from service.storage.journal import Journal
from service.storage.outbox import add_webhook_event
from service.storage.queue import Batch, Closing, Placement, ReadJournal, RemoveJournal, WriteQueue
from service.storage.retention import PURGE_INTERVAL_S, purge_hourly
from service.storage.schema import create_engine
from service.storage.statuses import NotStreamed
from service.storage.writes import (
    GROUPED,
    Write,
    alert_write,
    call_answered_write,
    call_ended_write,
    call_not_streamed_write,
    call_started_write,
    decision,
    describe,
    grouped_statements,
    is_permanent,
    outcome_write,
    runs,
    statements,
    utterance_write,
)
from service.times import Clock, utc_now

log = structlog.get_logger("callscribe.store")

BATCH_MAX = 50  # writes per transaction: small, so one slow batch never holds much back
# How long an idle writer lets finals and alerts gather before its next transaction: they come one at a time,
# dozens a second while the calls talk, and a transaction for each (on SQLite a dozen hand-offs to aiosqlite's
# thread, each waking the event loop) made most of the loop's wake-ups beyond the audio's (docs/benchmarks.md).
# A final is in the database this much later at most; the live feed does not wait for it, and its webhook event
# (written with it) waits as long, beside the sender's poll of a second. `stop` and `wait_idle` cut it short.
GATHER_S = 0.25
RETRY_BASE_S = 0.5
RETRY_CAP_S = 30.0  # a database that is down for hours is tried about twice a minute


@dataclass
class StoreCounters:
    """What the store has done since it was made; for tests, metrics and the log."""

    written: int = 0  # writes committed to the database, replayed ones included
    journaled: int = 0  # writes appended to the journal file
    replayed: int = 0  # journal writes committed to the database
    failures: int = 0  # transactions that failed and were retried
    journal_failures: int = 0  # journal reads or removals that failed and were retried
    rejected: int = 0  # writes the database refused as invalid: logged and dropped
    lost: int = 0  # writes neither the database nor the journal file could take


class _Changes:
    """Wakes the store's tasks whenever its queue changes; each one waits for the state it needs."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if self._event.is_set():
                self._event = asyncio.Event()  # what it announced has just been looked at
            await self._event.wait()


def _journal_failed(counters: StoreCounters, count: int, error: OSError) -> None:
    counters.lost += count
    log.error("store.journal_failed", writes=count, error=describe(error), why=error.strerror or "")


class _DatabaseWriter:
    """The writer task: the queue's next batch into the database, one transaction each. An outage is retried with
    full-jitter backoff; a write the database refuses is dropped alone; the journal is replayed, then removed."""

    def __init__(
        self,
        queue: WriteQueue[Write],
        changes: _Changes,
        journal: Journal,
        counters: StoreCounters,
        engine: AsyncEngine,
        *,
        clock: Clock,
        delay: Callable[[int], float],
        webhooks: bool,
        analysis: bool = False,
        gather_s: float = GATHER_S,
        hurry: Callable[[], bool] = lambda: False,
    ) -> None:
        self._queue, self._changes, self._journal, self._counters = queue, changes, journal, counters
        self._gather_s, self._hurry = gather_s, hurry  # hurry: somebody waits for what is queued (wait_idle)
        self._engine, self._clock, self._delay = engine, clock, delay
        self._webhooks = webhooks  # the outbox: an event for each write, in its transaction
        self._analysis = analysis  # ANALYSIS: a job when a call is complete, in its transaction (analyses.py)
        self._outage = Outage()  # no limit: the store waits for its database however long it takes

    async def run(self) -> None:
        while True:
            step = self._queue.next_step()
            if step is None:
                await self._changes.until(lambda: self._queue.has_work)
                await self._gather()
            elif isinstance(step, RemoveJournal | ReadJournal):
                try:
                    batch = self._journal_step(step)
                except OSError as exc:
                    await self._journal_step_failed(exc)
                else:
                    if batch is not None:
                        await self._write(batch)
            else:
                await self._write(step)

    async def _gather(self) -> None:
        """Let more finals and alerts join the first one that woke the writer, for GATHER_S at most."""
        if self._gather_s <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._gather_s):
                await self._changes.until(self._gathered)

    def _gathered(self) -> bool:
        """Time to write: a whole batch waits, or the store stops, or somebody waits for the writes, or a write that
        is not a final or an alert waits. A call's start or end goes at once, as it did before writes gathered:
        a transaction of SQLite holds its one write lock, and the streams starting beside it wait for that lock
        to claim their calls (`storage/streams.py`)."""
        if self._queue.batch_full or self._queue.stopping or self._hurry():
            return True
        step = self._queue.next_step()
        return not isinstance(step, Batch) or any(write.kind not in GROUPED for write in step.writes)

    def _journal_step(self, step: RemoveJournal | ReadJournal) -> Batch[Write] | None:
        if isinstance(step, RemoveJournal):
            self._remove_journal()
            return None
        return self._read_journal(step)

    async def _journal_step_failed(self, error: OSError) -> None:
        # The queue is unchanged, so the same step comes again: replayed writes are keyed, and a second try of
        # the journal's read or removal costs nothing but the wait.
        self._counters.journal_failures += 1
        log.error(
            "store.journal_retry", journal=str(self._journal.path), error=describe(error),
            why="the journal could not be read or removed; its writes stay in it and are tried again",
        )  # fmt: skip
        await asyncio.sleep(self._delay(self._counters.journal_failures))

    def _read_journal(self, step: ReadJournal) -> Batch[Write] | None:
        writes, end, skipped = self._journal.read(step.offset, step.limit)
        if skipped:
            log.error("store.journal_unreadable", lines=skipped, journal=str(self._journal.path))
        return self._queue.journal_read(writes, end)

    def _remove_journal(self) -> None:
        # Not in a thread: nothing may be queued for the journal between the queue's decision and the unlink.
        self._journal.remove()
        self._queue.journal_removed()
        log.info("store.journal_replayed", replayed=self._counters.replayed, journal=str(self._journal.path))

    async def _write(self, batch: Batch[Write]) -> None:
        try:
            await self._commit(batch.writes)
        except Exception as exc:  # noqa: BLE001 - the writer must outlive any error: it retries, or drops and says so
            await self._failed(batch, exc)
        else:
            self._recovered()
            self._counters.written += len(batch.writes)
            if batch.replayed:
                self._counters.replayed += len(batch.writes)
            self._queue.written(batch)

    async def _commit(self, writes: tuple[Write, ...]) -> None:
        now = self._clock()
        due: dict[str, None] = {}  # calls whose analysis the batch made due, in order
        async with self._engine.begin() as connection:
            dialect = connection.dialect.name
            index = 0  # the write's place in the batch: its outbox event's order
            for run in runs(writes):
                # Finals and alerts in a row go in as one executemany per table: on SQLite each execute is three
                # hops to aiosqlite's thread and back, each waking the event loop (docs/benchmarks.md). A batch is
                # at most BATCH_MAX rows, so the loop is never held for long.
                if len(run) > 1:
                    for statement, rows in grouped_statements(dialect, run, now):
                        await connection.execute(statement, rows)
                    applied = run
                else:
                    applied = run if await _apply(connection, dialect, run[0], now) else ()
                for write in applied:
                    if self._webhooks:
                        # The outbox: the event is committed with the data it describes, or not at all. Its time
                        # moves on a microsecond per write, so the outbox's (created_at, event_id) order is the
                        # batch's order: a call's last finals go before its call.completed.
                        await add_webhook_event(connection, write, now + datetime.timedelta(microseconds=index))
                    if self._analysis and await analysis_due(connection, write):
                        due[write.call_sid] = None
                    index += 1
            # Once per call, for its transcript after the whole batch: batch's finals of an ended call come
            # together, and each one's own version (read whole) would queue an analysis of every step between.
            for call_sid in due:
                await enqueue_version(connection, call_sid, now)

    async def _failed(self, batch: Batch[Write], error: Exception) -> None:
        if not is_permanent(error):
            await self._retry_later(error)
        elif not self._queue.refused(batch):  # a batch of one: the write the database refuses
            self._counters.rejected += 1
            # No traceback: its text would carry the row (a transcript) into the log.
            write = batch.writes[0]
            log.error("store.rejected", kind=write.kind, call_sid=write.call_sid, error=describe(error))

    async def _retry_later(self, error: Exception) -> None:
        self._counters.failures += 1
        if self._outage.started_at is None:
            log.warning(
                "store.unavailable", error=describe(error), queued=self._queue.in_memory,
                queue_max=self._queue.queue_max, why="writes wait in memory, then in the journal",
            )  # fmt: skip
        self._outage.failed(time.monotonic())
        delay = self._delay(self._outage.attempts)
        if self._queue.write_failed():  # that was the last try: stop() journals the rest now
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._changes.until(lambda: self._queue.stopping)  # stop() cuts the wait short: one more try

    def _recovered(self) -> None:
        if self._outage.started_at is not None:
            log.info(
                "store.recovered", down_s=round(time.monotonic() - self._outage.started_at, 3),
                failures=self._outage.attempts, queued=self._queue.in_memory,
                journal_pending=self._queue.journaling,
            )  # fmt: skip
            self._outage.recovered()


async def _apply(connection: AsyncConnection, dialect: str, write: Write, now: datetime.datetime) -> bool:
    """`write`'s statements, one execute each; False when its `decision` says it does not apply."""
    decides = decision(dialect, write)
    if decides is not None and (await connection.execute(*decides)).first() is None:
        # The call already has its outcome: a stream of it started (here or in another process), or it was
        # recorded as not streamed (then a /voice answer for it is a replay, or came late).
        log.debug("store.write_skipped", kind=write.kind, call_sid=write.call_sid)
        return False
    for statement, parameters in statements(dialect, write, now):
        await connection.execute(statement, parameters)
    return True


class _JournalAppender:
    """The journal task: what the queue sends to the journal, appended and fsynced in a thread, off the event loop."""

    def __init__(self, queue: WriteQueue[Write], changes: _Changes, journal: Journal, counters: StoreCounters) -> None:
        self._queue, self._changes, self._journal, self._counters = queue, changes, journal, counters

    async def run(self) -> None:
        while True:
            await self._changes.until(lambda: self._queue.for_journal)
            writes = self._queue.take_for_journal()
            try:
                # fsync can take a while on a busy disk: a thread keeps it off the calls' event loop.
                await asyncio.to_thread(self._journal.append, writes)
            except OSError as exc:
                _journal_failed(self._counters, len(writes), exc)
            else:
                self._counters.journaled += len(writes)
            finally:
                self._queue.appended()  # whatever happened, stop() must not wait for this append forever


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
        gather_s: float = GATHER_S,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self._gather_s = gather_s
        self._waiting = 0  # wait_idle calls in progress: the writer does not let writes gather for them
        self.counters = StoreCounters()
        self._clock = clock
        self._changes = _Changes()
        self._queue: WriteQueue[Write] = WriteQueue(
            queue_max=settings.db_queue_max, batch_max=batch_max, on_change=self._changes.notify
        )
        jitter = rng or random.Random()  # noqa: S311 - retry jitter, not cryptography
        self._delay = functools.partial(backoff, base_s=retry_base_s, cap_s=retry_cap_s, rng=jitter)
        self._purge_interval_s = purge_interval_s
        self._journal: Journal | None = None  # claimed at start (a slot of DB_JOURNAL_PATH)
        self._engine: AsyncEngine | None = None
        self._writer: asyncio.Task[None] | None = None
        self._appender: asyncio.Task[None] | None = None
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

    def call_state(self, event: CallStateChanged) -> None:
        pass  # a track's state is live news only; how the call ended is in call_ended's summary

    def turn(self, event: TurnChanged) -> None:
        pass  # live news only: the turn itself is stored as its final utterance

    def call_ended(self, event: CallEnded) -> None:
        self._accept(lambda: call_ended_write(event))  # with the stream's coverage

    def spool_outcome(self, outcome: Outcome) -> None:
        self._accept(lambda: outcome_write(outcome))

    def alert(self, alert: Alert) -> None:
        """An `AlertSink` too (`service/alerts/watch.py`): the alert's row, and with it its `call.alert` webhook."""
        self._accept(lambda: alert_write(alert))

    # --- What /voice answered: off the audio path, and queued the same way --------------------------------------

    def call_answered(
        self, *, call_sid: str, account_sid: str, from_number: str, to_number: str, direction: str
    ) -> None:
        """/voice answered the call (with a stream or without): its row, before any stream of it starts."""
        self._accept(
            lambda: call_answered_write(
                call_sid=call_sid,
                account_sid=account_sid,
                from_number=from_number,
                to_number=to_number,
                direction=direction,
                answered_at=self._clock(),
            )
        )

    def call_not_streamed(
        self, call_sid: str, *, how: NotStreamed, reason: str, fix: str, answered_at: datetime.datetime | None = None
    ) -> None:
        """No stream of the call started: its outcome and its `call.not_streamed` event, unless a stream of it is
        recorded first (the database decides, `writes.decision`)."""
        now = self._clock()
        self._accept(
            lambda: call_not_streamed_write(
                call_sid, how=how, reason=reason, fix=fix, answered_at=answered_at or now, at=now
            )
        )

    def _accept(self, make: Callable[[], Write]) -> None:
        try:
            self._put(make())
        except Exception:
            # A bug here must cost one row, never the call that reported it.
            self.counters.lost += 1
            log.exception("store.write_lost")

    def _put(self, write: Write) -> None:
        placement = self._queue.put(write)
        if placement is Placement.JOURNAL_NOW:
            self._journal_now([write])  # after stop() nothing else will write it
        elif placement is Placement.JOURNAL_BEGUN:
            log.warning(
                "store.journaling", queue_max=self.settings.db_queue_max, journal=str(self.journal.path),
                why="the database is not keeping up: writes go to the journal until it has caught up",
            )  # fmt: skip

    # --- Lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer (which first replays a journal a previous process left) and the hourly purge."""
        if self._queue.started or self._queue.closed:
            return
        self._engine = create_engine(self.settings.database_url)
        if self._journal is None:
            self._journal = await asyncio.to_thread(self._claim_journal)
        left = await asyncio.to_thread(self._recover_journals)
        if left:
            log.info("store.journal_found", journal=str(self.journal.path), bytes=left)
        self._queue.start(journal_left=bool(left))  # older than anything queued since: it goes first
        self._start_tasks(self._engine, self.journal)

    def _recover_journals(self) -> int:
        """What this slot holds from an earlier process, plus what dead processes left in the other slots."""
        try:
            return self.journal.recover() + self.journal.adopt(self.settings.db_journal_path)
        except OSError:
            log.exception("store.journal_unreadable", journal=str(self.journal.path))
            return self.journal.size()

    def _start_tasks(self, engine: AsyncEngine, journal: Journal) -> None:
        writer = _DatabaseWriter(
            self._queue, self._changes, journal, self.counters, engine,
            clock=self._clock, delay=self._delay, webhooks=self.settings.transcript_webhook_url is not None,
            analysis=bool(self.settings.analysis), gather_s=self._gather_s, hurry=lambda: self._waiting > 0,
        )  # fmt: skip
        appender = _JournalAppender(self._queue, self._changes, journal, self.counters)
        self._writer = asyncio.create_task(writer.run(), name="store-writer")
        self._appender = asyncio.create_task(appender.run(), name="store-journal")
        days = self.settings.retention_days
        if days is not None:
            purging = purge_hourly(engine, days, clock=self._clock, interval_s=self._purge_interval_s)
            self._purger = asyncio.create_task(purging, name="store-purge")

    async def stop(self, timeout_s: float) -> None:
        """Write what is queued within `timeout_s`; what is left goes to the journal, ahead of what it holds.

        A database that was failing gets one more try, not the whole timeout: a shutdown is not held up for it.
        """
        if self._queue.closed:
            return
        self._queue.stop()  # cuts a backoff short: one more try now
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._changes.until(lambda: self._queue.ready_to_close)
        await _cancel(self._writer, self._purger)
        await self._changes.until(lambda: not self._queue.appending)  # an append is never cut short
        await _cancel(self._appender)
        self._journal_at_stop(self._queue.close())
        self.journal.release()  # another process may claim the slot and replay what is left in it
        if self._engine is not None:
            await self._engine.dispose()

    async def wait_idle(self) -> None:
        """Until everything given so far is in the database (the journal replayed and removed)."""
        self._waiting += 1
        self._changes.notify()  # a writer letting writes gather takes them now
        try:
            await self._changes.until(lambda: self._queue.idle)
        finally:
            self._waiting -= 1

    def _journal_at_stop(self, closing: Closing[Write]) -> None:
        if not closing.needed:
            return
        writes = closing.writes
        try:
            if closing.rewrite:
                # Memory holds the oldest writes, and what was replayed need not be again: one atomic rewrite.
                self.journal.rewrite(closing.head, closing.offset, closing.tail)
            else:
                # Nothing of the journal replayed yet, memory empty or never started: these go after it.
                self.journal.append(writes)
        except OSError as exc:
            _journal_failed(self.counters, len(writes), exc)
            return
        self.counters.journaled += len(writes)
        if writes:
            log.warning("store.journaled_at_stop", writes=len(writes), journal=str(self.journal.path))

    def _journal_now(self, writes: list[Write]) -> None:
        try:
            self.journal.append(writes)
        except OSError as exc:
            _journal_failed(self.counters, len(writes), exc)
        else:
            self.counters.journaled += len(writes)


async def _cancel(*tasks: asyncio.Task[None] | None) -> None:
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
