"""Protocol layer (no I/O, no asyncio): which write goes where, and in what order, for the transcript store.

The store never blocks a call, so a call's write is only ever queued here. The store's tasks (`writer.py`) ask
this queue what to do next, do it, and report back; the queue decides, they do. The rules:

- Writes wait in memory, up to `queue_max`. Past that they go to the journal, and once the journal is in use
  every new write goes there too, behind what it holds, until all of it is in the database: one order.
- The writer takes memory first (the oldest writes), then the journal from where it left off, `batch_max` at a
  time. After a batch the database refused as invalid it goes through that batch one write at a time, so only
  the write it refuses is dropped.
- The journal may be removed only when all of it is in the database and no write is on its way to it: neither
  waiting for the journal task nor being appended by it.
- `stop` asks the writer for one more try; the store waits until memory is empty or that try failed, and
  `close` then says what to journal: memory first (the oldest), then what the journal still holds, then what
  was on its way to it. After that a write is journaled at once: nothing else would write it.

Writes are opaque here (`T`): the queue only orders them.
"""

from __future__ import annotations

import collections
import enum
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class Placement(enum.Enum):
    """Where `put` placed a write, and so what the store does about it."""

    MEMORY = "memory"  # the writer takes it from memory
    JOURNAL = "journal"  # the journal task appends it, behind what the journal holds
    JOURNAL_BEGUN = "journal begun"  # as JOURNAL, the first since memory was full: the database is not keeping up
    JOURNAL_NOW = "journal now"  # the store is closed: the caller appends it at once, nothing else will


class _Phase(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"  # the writer has one more try, then the store closes
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    """Writes for one transaction, oldest first."""

    writes: tuple[T, ...]
    journal_end: int | None = None  # None: from memory; else the journal offset just after them

    @property
    def replayed(self) -> bool:
        return self.journal_end is not None


@dataclass(frozen=True, slots=True)
class ReadJournal:
    """Read up to `limit` writes from byte `offset` of the journal and hand them to `journal_read`."""

    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class RemoveJournal:
    """All of the journal is in the database and nothing is on its way to it: remove it, then `journal_removed`."""


Step = Batch[T] | ReadJournal | RemoveJournal


@dataclass(frozen=True, slots=True)
class Closing(Generic[T]):
    """What `stop` journals: `head` (memory: the oldest), the journal from `offset` on, then `tail`."""

    head: tuple[T, ...]
    offset: int  # journal bytes already in the database: a rewrite leaves them out
    tail: tuple[T, ...]  # on their way to the journal when the store stopped
    rewrite: bool  # True: make the journal head + journal[offset:] + tail; False: append head + tail to it

    @property
    def writes(self) -> tuple[T, ...]:
        return self.head + self.tail

    @property
    def needed(self) -> bool:
        return bool(self.head or self.tail or self.offset)


class WriteQueue(Generic[T]):
    """The order of the store's writes: memory, then the journal; and when the journal may go."""

    def __init__(self, *, queue_max: int, batch_max: int, on_change: Callable[[], None] = lambda: None) -> None:
        self._queue_max, self._batch_max = queue_max, batch_max
        self._on_change = on_change  # called after every change: the store wakes its tasks, each waits for its state
        self._memory: collections.deque[T] = collections.deque()
        self._overflow: list[T] = []  # for the journal task, not yet taken
        self._appending = 0  # writes the journal task took and has not yet appended
        self._journaling = False  # while set, every new write goes to the journal, behind what it holds
        self._offset = 0  # bytes of the journal already in the database
        self._unread = False  # the journal may hold writes past `_offset`
        self._one_at_a_time = 0  # writes left to take singly, to find the one the database refuses
        self._started = False
        self._phase = _Phase.RUNNING
        self._gave_up = False  # the writer's last try, while stopping, failed

    # --- What the store asks ---------------------------------------------------------------------------------

    @property
    def queue_max(self) -> int:
        return self._queue_max

    @property
    def started(self) -> bool:
        return self._started

    @property
    def closed(self) -> bool:
        return self._phase is _Phase.CLOSED

    @property
    def stopping(self) -> bool:
        return self._phase is not _Phase.RUNNING

    @property
    def in_memory(self) -> int:
        return len(self._memory)

    @property
    def journaling(self) -> bool:
        return self._journaling

    @property
    def idle(self) -> bool:
        """Everything queued so far is in the database: nothing in memory, no journal to replay."""
        return not self._memory and not self._journaling

    @property
    def ready_to_close(self) -> bool:
        """Memory is empty, or the writer's last try failed: `close` may journal the rest."""
        return not self._memory or self._gave_up

    @property
    def appending(self) -> bool:
        """The journal task is appending: closing now would cut it short."""
        return self._appending > 0

    # --- A call's write ------------------------------------------------------------------------------------

    def put(self, write: T) -> Placement:
        if self._phase is _Phase.CLOSED:
            self._journaling = True  # in the journal, not the database: not idle
            self._on_change()
            return Placement.JOURNAL_NOW
        if not self._journaling and len(self._memory) < self._queue_max:
            self._memory.append(write)
            self._on_change()
            return Placement.MEMORY
        begun = not self._journaling
        self._journaling = True
        self._overflow.append(write)
        self._on_change()
        return Placement.JOURNAL_BEGUN if begun else Placement.JOURNAL

    # --- The writer task -----------------------------------------------------------------------------------

    def start(self, *, journal_left: bool) -> None:
        """The writer starts. `journal_left`: an earlier process left writes in the journal, older than any
        queued since, so those go behind it."""
        self._started = True
        if journal_left:
            self._overflow[:0] = self._memory
            self._memory.clear()
            self._journaling = self._unread = True
        self._on_change()

    @property
    def batch_full(self) -> bool:
        """Memory holds a whole batch: a writer letting writes gather need not wait for more."""
        return len(self._memory) >= self._batch_max

    @property
    def has_work(self) -> bool:
        return self.next_step() is not None

    def next_step(self) -> Step[T] | None:
        """The writer's next step: memory first (the oldest), then the journal; None while there is nothing."""
        if self._phase is _Phase.CLOSED:
            return None
        size = 1 if self._one_at_a_time else self._batch_max
        if self._memory:
            return Batch(tuple(itertools.islice(self._memory, size)))
        if not self._journaling:
            return None
        if self._unread:
            return ReadJournal(self._offset, size)
        if self._overflow or self._appending:
            return None  # the journal task appends them, then the journal is read again
        return RemoveJournal()

    def journal_read(self, writes: Sequence[T], end: int) -> Batch[T] | None:
        """What a `ReadJournal` found (`end`: the offset after it): a batch, or None when there was nothing new."""
        if writes:
            return Batch(tuple(writes), journal_end=end)
        self._offset, self._unread = end, False  # past lines it could not read, too
        self._on_change()
        return None

    def journal_removed(self) -> None:
        self._journaling, self._offset = False, 0
        self._on_change()

    def written(self, batch: Batch[T]) -> None:
        """The database committed `batch`."""
        self._consume(batch)

    def refused(self, batch: Batch[T]) -> bool:
        """The database refused `batch` as invalid. True: it is retried one write at a time. False: it was that
        one write, which is dropped."""
        if len(batch.writes) > 1:
            self._one_at_a_time = len(batch.writes)
            self._on_change()
            return True
        self._consume(batch)
        return False

    def write_failed(self) -> bool:
        """A batch failed for a reason that may pass (an outage); it is retried. True when that was the last try:
        the store is stopping, and journals the rest instead."""
        if self._phase is not _Phase.STOPPING:
            return False
        self._gave_up = True
        self._on_change()
        return True

    def _consume(self, batch: Batch[T]) -> None:
        if batch.journal_end is None:
            for _ in batch.writes:
                self._memory.popleft()
        else:
            self._offset = batch.journal_end
        self._one_at_a_time = max(0, self._one_at_a_time - len(batch.writes))
        self._on_change()

    # --- The journal task ----------------------------------------------------------------------------------

    @property
    def for_journal(self) -> bool:
        """Writes wait for the journal task, and it is not appending already (appends keep their order)."""
        return bool(self._overflow) and not self._appending

    def take_for_journal(self) -> tuple[T, ...]:
        """The writes to append now, oldest first; `appended` once that is done (or failed)."""
        writes, self._overflow = tuple(self._overflow), []
        self._appending += len(writes)
        self._on_change()
        return writes

    def appended(self) -> None:
        """The journal task's append is done; if it failed, the caller counts its writes lost. Either way the
        file may have grown, so it is read again."""
        self._appending, self._unread = 0, True
        self._on_change()

    # --- Stopping ------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Cut a backoff short: the writer has one more try."""
        if self._phase is _Phase.RUNNING:
            self._phase = _Phase.STOPPING
            self._on_change()

    def close(self) -> Closing[T]:
        """What to journal now that the writer and the journal task have stopped; every later write is `put` as
        JOURNAL_NOW."""
        if self._appending:
            raise RuntimeError("an append is on its way to the journal: close after it is done")
        head, tail = tuple(self._memory), tuple(self._overflow)
        # A journal the writer never read is an earlier process's, older than all of these: append after it.
        rewrite = self._started and bool(head or self._offset)
        closing = Closing(head=head, offset=self._offset, tail=tail, rewrite=rewrite)
        self._memory.clear()
        self._overflow = []
        self._offset = 0
        self._journaling = self._journaling or bool(head or tail)
        self._phase = _Phase.CLOSED
        self._on_change()
        return closing
