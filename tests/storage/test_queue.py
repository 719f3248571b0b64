"""The store's write order (service/storage/queue.py), pure: placements, steps, closing, and whole sequences.

`Model` plays the store's tasks over two lists, the database and the journal file (one write a line, so an
offset counts lines), and checks the store's promises after every step: no write overtakes an older one, none
is written twice, the journal is never removed while a write is on its way to it, and none is lost at stop.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.storage.queue import Batch, Closing, Placement, ReadJournal, RemoveJournal, WriteQueue


def queue(queue_max: int = 2, batch_max: int = 3) -> WriteQueue[int]:
    return WriteQueue(queue_max=queue_max, batch_max=batch_max)


def filled(count: int, *, queue_max: int = 2, batch_max: int = 3, started: bool = True) -> WriteQueue[int]:
    """A queue given writes 0..count-1."""
    writes = queue(queue_max, batch_max)
    if started:
        writes.start(journal_left=False)
    for write in range(count):
        writes.put(write)
    return writes


class Model:
    """The writer task, the journal task and stop, over a list for the database and one for the journal."""

    def __init__(self, *, queue_max: int = 3, batch_max: int = 2, refused: frozenset[int] = frozenset()) -> None:
        self.queue: WriteQueue[int] = WriteQueue(queue_max=queue_max, batch_max=batch_max)
        self.made = 0
        self.database: list[int] = []
        self.dropped: list[int] = []
        self.journal: list[int] = []
        self.appending: tuple[int, ...] = ()  # taken by the journal task, not yet in the file
        self.refused = refused
        self.down = False

    def put(self) -> Placement:
        write, self.made = self.made, self.made + 1
        placement = self.queue.put(write)
        if placement is Placement.JOURNAL_NOW:
            self.journal.append(write)
        return placement

    def writer_step(self) -> str:
        step = self.queue.next_step()
        if step is None:
            return "wait"
        if isinstance(step, RemoveJournal):
            return self._remove_journal()
        if isinstance(step, ReadJournal):
            lines = self.journal[step.offset : step.offset + step.limit]
            batch = self.queue.journal_read(lines, step.offset + len(lines))
            if batch is None:
                return "read to the end"
            step = batch
        return self._commit(step)

    def _remove_journal(self) -> str:
        assert not self.appending, "the journal was removed while an append was on its way to it"
        unwritten = [write for write in self.journal if write not in self.database and write not in self.dropped]
        assert not unwritten, f"the journal was removed before {unwritten} were written"
        self.journal.clear()
        self.queue.journal_removed()
        return "removed"

    def _commit(self, batch: Batch[int]) -> str:
        if self.down:
            self.queue.write_failed()
            return "failed"
        if any(write in self.refused for write in batch.writes):  # a transaction is all or nothing
            if not self.queue.refused(batch):
                self.dropped.extend(batch.writes)
            return "refused"
        self.database.extend(batch.writes)
        self.queue.written(batch)
        return "written"

    def journal_take(self) -> None:
        if self.queue.for_journal:
            assert not self.appending, "a second append while one is on its way"
            self.appending = self.queue.take_for_journal()

    def journal_done(self) -> None:
        if self.appending:
            self.journal.extend(self.appending)
            self.appending = ()
            self.queue.appended()

    def close(self) -> None:
        """As `TranscriptStore.stop` does once the writer is cancelled: finish the append, then journal the rest."""
        self.queue.stop()
        self.journal_done()
        closing = self.queue.close()
        if closing.rewrite:
            self.journal[:] = [*closing.head, *self.journal[closing.offset :], *closing.tail]
        elif closing.needed:
            self.journal.extend(closing.writes)

    def drain(self) -> None:
        """The database is up: run both tasks until everything is written."""
        self.down = False
        for _ in range(10 * self.made + 10):
            self.journal_take()
            self.journal_done()
            if self.writer_step() == "wait" and self.queue.idle:
                return
        raise AssertionError("the writer never became idle")

    def check(self) -> None:
        """No write overtook an older one or was written twice: the database is a prefix of the order made."""
        assert self.database == sorted(set(self.database)), f"out of order or twice: {self.database}"
        assert sorted(self.database + self.dropped) == list(range(len(self.database) + len(self.dropped)))
        assert set(self.dropped) <= self.refused

    def kept(self) -> list[int]:
        """Every write made but the ones dropped: what the database and the journal must hold between them."""
        return [write for write in range(self.made) if write not in self.dropped]


# --- Where a write goes ------------------------------------------------------------------------------------------

M, J, B, N = Placement.MEMORY, Placement.JOURNAL, Placement.JOURNAL_BEGUN, Placement.JOURNAL_NOW


@pytest.mark.parametrize(
    ("queue_max", "placements"),
    [(0, [B, J, J]), (1, [M, B, J]), (2, [M, M, B, J, J])],
)
def test_memory_up_to_queue_max_then_the_journal(queue_max: int, placements: list[Placement]) -> None:
    writes = queue(queue_max=queue_max)
    assert [writes.put(write) for write in range(len(placements))] == placements


def test_once_the_journal_is_in_use_every_write_goes_behind_it() -> None:
    writes = filled(3)  # 0 and 1 in memory, 2 on its way to the journal
    writes.written(Batch((0, 1)))  # memory has room again, but 3 must not overtake 2
    assert writes.put(3) is J


def test_after_close_a_write_is_journaled_at_once() -> None:
    writes = filled(1)
    writes.close()
    assert [writes.put(1), writes.put(2)] == [N, N]
    assert writes.next_step() is None


def test_memory_is_used_again_once_the_journal_is_gone() -> None:
    model = Model(queue_max=1)
    assert [model.put(), model.put()] == [M, B]
    model.drain()  # 0 written, 1 journaled, replayed, and the journal removed
    assert [model.put(), model.put(), model.put()] == [M, B, J]


# --- What the writer does next --------------------------------------------------------------------------------


def test_memory_goes_first_in_batches_then_the_journal_from_where_it_left_off() -> None:
    writes = filled(6, queue_max=4, batch_max=3)  # 0-3 in memory, 4 and 5 on their way to the journal
    assert writes.next_step() == Batch((0, 1, 2))
    writes.written(Batch((0, 1, 2)))
    assert writes.next_step() == Batch((3,))
    writes.written(Batch((3,)))
    assert writes.next_step() is None  # 4 and 5 are not in the file yet
    assert writes.take_for_journal() == (4, 5)
    assert writes.next_step() is None  # being appended: neither readable nor removable
    writes.appended()
    assert writes.next_step() == ReadJournal(offset=0, limit=3)
    assert writes.journal_read([4, 5], end=20) == Batch((4, 5), journal_end=20)
    writes.written(Batch((4, 5), journal_end=20))
    assert writes.next_step() == ReadJournal(offset=20, limit=3)
    assert writes.journal_read([], end=20) is None
    assert writes.next_step() == RemoveJournal()
    writes.journal_removed()
    assert (writes.next_step(), writes.idle) == (None, True)


@pytest.mark.parametrize(
    ("prepare", "expected"),
    [
        pytest.param(lambda q: None, None, id="nothing queued"),
        pytest.param(lambda q: q.put(7), Batch((7,)), id="memory"),
        pytest.param(lambda q: [q.put(7), q.put(8), q.put(9)], Batch((7, 8)), id="batch_max at a time"),
        pytest.param(
            lambda q: [q.put(7), q.put(8), q.put(9), q.refused(Batch((7, 8)))],
            Batch((7,)),
            id="one at a time after a refused batch",
        ),
        pytest.param(
            lambda q: [q.put(7), q.put(8), q.put(9), q.refused(Batch((7, 8))), q.written(Batch((7,)))],
            Batch((8,)),
            id="still one at a time through the refused batch",
        ),
        pytest.param(
            lambda q: [q.put(n) for n in (7, 8, 9)] + [q.refused(Batch((7, 8))), q.refused(Batch((7,)))],
            Batch((8,)),
            id="the refused write is dropped alone",
        ),
        pytest.param(
            lambda q: (
                [q.put(n) for n in (7, 8, 9)]
                + [q.refused(Batch((7, 8))), q.written(Batch((7,))), q.written(Batch((8,)))]
            ),
            Batch((9,)),
            id="back to batches after it",
        ),
        pytest.param(
            lambda q: [q.put(n) for n in (1, 2, 3, 4, 5)] + [q.written(Batch((1, 2)))],
            Batch((3,)),
            id="memory before the journal",
        ),
        pytest.param(
            lambda q: q.start(journal_left=True),
            ReadJournal(offset=0, limit=2),
            id="a journal left by a process before",
        ),
        pytest.param(
            lambda q: [q.put(1), q.start(journal_left=True)],
            ReadJournal(offset=0, limit=2),
            id="the journal left goes first",
        ),
        pytest.param(lambda q: [q.put(1), q.close()], None, id="nothing after close"),
    ],
)
def test_the_writers_next_step(prepare: Callable[[WriteQueue[int]], object], expected: object) -> None:
    writes = queue(queue_max=3, batch_max=2)
    prepare(writes)
    assert writes.next_step() == expected
    assert writes.has_work == (expected is not None)


def test_a_journal_appended_while_it_was_read_is_read_again_not_removed() -> None:
    writes = filled(2, queue_max=0)
    writes.take_for_journal()
    writes.appended()
    writes.put(2)  # on its way to the journal while the writer reads it
    assert writes.journal_read([0, 1], end=2) == Batch((0, 1), journal_end=2)
    writes.written(Batch((0, 1), journal_end=2))
    assert writes.next_step() == ReadJournal(offset=2, limit=3)
    assert writes.journal_read([], end=2) is None
    assert writes.next_step() is None  # 2 is still to be appended: the journal stays
    assert writes.take_for_journal() == (2,)
    writes.appended()
    assert writes.next_step() == ReadJournal(offset=2, limit=3)


def test_a_failed_append_is_read_over_and_the_journal_still_goes() -> None:
    """The journal task counts a failed append's writes lost; the file may hold part of it, so it is read again."""
    writes = filled(1, queue_max=0)
    writes.take_for_journal()
    writes.appended()  # failed: nothing in the file
    assert writes.next_step() == ReadJournal(offset=0, limit=3)
    assert writes.journal_read([], end=0) is None
    assert writes.next_step() == RemoveJournal()


def test_an_outage_is_retried_until_stop_then_the_last_failure_gives_up() -> None:
    writes = filled(1)
    assert (writes.write_failed(), writes.ready_to_close) == (False, False)
    assert writes.next_step() == Batch((0,))  # the same batch again
    writes.stop()
    assert writes.stopping
    assert (writes.write_failed(), writes.ready_to_close) == (True, True)


def test_stop_waits_for_nothing_once_memory_is_written() -> None:
    writes = filled(3)  # one of them on its way to the journal: stop does not wait for the database to take it
    writes.written(Batch((0, 1)))
    writes.stop()
    assert writes.ready_to_close


def test_one_append_at_a_time_keeps_the_journal_in_order() -> None:
    writes = filled(3)
    assert (writes.journaling, writes.idle, writes.in_memory, writes.for_journal) == (True, False, 2, True)
    writes.take_for_journal()
    assert (writes.for_journal, writes.appending) == (False, True)
    writes.put(3)
    assert writes.for_journal is False  # one append at a time keeps the journal in order
    writes.appended()
    assert (writes.for_journal, writes.appending) == (True, False)


# --- What stop journals, and in which order --------------------------------------------------------------------


def closing_of(prepare: Callable[[WriteQueue[int]], object], *, started: bool = True) -> Closing[int]:
    writes = queue(queue_max=2, batch_max=2)
    if started:
        writes.start(journal_left=False)
    prepare(writes)
    return writes.close()


@pytest.mark.parametrize(
    ("prepare", "started", "expected"),
    [
        pytest.param(lambda q: None, True, Closing((), 0, (), rewrite=False), id="nothing"),
        pytest.param(lambda q: q.put(0), True, Closing((0,), 0, (), rewrite=True), id="memory"),
        pytest.param(lambda q: q.put(0), False, Closing((0,), 0, (), rewrite=False), id="never started: append"),
        pytest.param(
            lambda q: [q.put(n) for n in range(4)], True, Closing((0, 1), 0, (2, 3), rewrite=True),
            id="memory ahead of the journal, what was on its way behind it",
        ),
        pytest.param(
            lambda q: [*map(q.put, range(4)), q.written(Batch((0, 1)))], True, Closing((), 0, (2, 3), rewrite=False),
            id="nothing in memory, nothing replayed: append",
        ),
        pytest.param(
            lambda q: [*map(q.put, range(3)), q.written(Batch((0, 1))), q.take_for_journal(), q.appended(), q.put(3),
                       q.written(Batch((2,), journal_end=9))],
            True, Closing((), 9, (3,), rewrite=True), id="what was replayed is left out",
        ),
    ],
)  # fmt: skip
def test_what_stop_journals(
    prepare: Callable[[WriteQueue[int]], object], started: bool, expected: Closing[int]
) -> None:
    assert closing_of(prepare, started=started) == expected


def test_close_refuses_while_an_append_is_on_its_way() -> None:
    writes = filled(3)
    writes.take_for_journal()
    with pytest.raises(RuntimeError, match="on its way"):
        writes.close()


def test_a_store_that_journaled_at_stop_is_not_idle() -> None:
    writes = filled(1)
    writes.close()
    assert not writes.idle
    emptied = filled(1)
    emptied.written(Batch((0,)))
    emptied.close()
    assert emptied.idle
    emptied.put(1)  # journaled at once: never reaches this process's database
    assert not emptied.idle


# --- Waking the store's tasks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "wakes"),
    [
        pytest.param(lambda q: q.put(9), "the writer, or the journal task", id="put"),
        pytest.param(lambda q: q.written(Batch((0, 1))), "stop and wait_idle", id="written"),
        pytest.param(lambda q: q.refused(Batch((0,))), "stop and wait_idle", id="refused"),
        pytest.param(lambda q: q.take_for_journal(), "nobody, but every change says so", id="taken"),
        pytest.param(lambda q: [q.take_for_journal(), q.appended()], "the writer, and stop", id="appended"),
        pytest.param(lambda q: q.stop(), "a writer in backoff", id="stop"),
        pytest.param(lambda q: [q.stop(), q.write_failed()], "stop", id="the last try failed"),
        pytest.param(lambda q: q.journal_removed(), "wait_idle", id="journal removed"),
        pytest.param(lambda q: q.close(), "nobody, but every change says so", id="close"),
    ],
)
def test_every_change_wakes_the_tasks(change: Callable[[WriteQueue[int]], object], wakes: str) -> None:
    """A change the tasks miss would leave one of them waiting for ever."""
    changes: list[None] = []
    writes: WriteQueue[int] = WriteQueue(queue_max=2, batch_max=2, on_change=lambda: changes.append(None))
    for write in range(3):
        writes.put(write)
    changes.clear()
    change(writes)
    assert changes, f"no change announced: {wakes} would not wake"


# --- Whole sequences ----------------------------------------------------------------------------------------------


def test_an_outage_then_stop_then_the_next_process_keeps_one_order() -> None:
    first = Model(queue_max=3, batch_max=2)
    first.queue.start(journal_left=False)
    for _ in range(2):
        first.put()
    first.writer_step()
    first.down = True
    for _ in range(6):
        first.put()  # 2-4 wait in memory, 5-7 go to the journal
    first.journal_take()
    first.journal_done()
    assert first.writer_step() == "failed"
    first.queue.stop()
    assert first.writer_step() == "failed"
    assert first.queue.ready_to_close
    first.put()  # 8: on its way to the journal at stop
    first.close()
    assert (first.database, first.journal) == ([0, 1], [2, 3, 4, 5, 6, 7, 8])
    second = Model(queue_max=3, batch_max=2)
    second.journal = first.journal
    second.database = first.database
    second.made = 9
    second.queue.start(journal_left=True)
    second.drain()
    second.check()
    assert (second.database, second.journal) == (list(range(9)), [])


ACTIONS = ("put", "put", "put", "writer", "writer", "take", "done", "down", "up", "stop")


@settings(max_examples=400, deadline=None)
@given(
    actions=st.lists(st.sampled_from(ACTIONS), max_size=60),
    refused=st.frozensets(st.integers(min_value=0, max_value=40), max_size=4),
    queue_max=st.integers(min_value=0, max_value=4),
    batch_max=st.integers(min_value=1, max_value=3),
    left=st.integers(min_value=0, max_value=3),
    before=st.integers(min_value=0, max_value=6),
    finish=st.sampled_from(("drain", "close")),
)
def test_any_interleaving_keeps_one_order_and_loses_nothing(
    *, actions: list[str], refused: frozenset[int], queue_max: int, batch_max: int, left: int, before: int, finish: str
) -> None:
    """Whatever the tasks do in whatever order, the database gets the writes in the order they were made, each
    once; drained, it has them all but the refused; closed, the database then the journal has them all, in order.

    An earlier process may have left `left` writes in the journal, and calls may have given `before` more before
    the store started: those are older, and newer, than everything else."""
    model = Model(queue_max=queue_max, batch_max=batch_max, refused=refused)
    model.journal, model.made = list(range(left)), left
    for _ in range(before):
        model.put()
    model.queue.start(journal_left=left > 0)
    run = {
        "put": model.put, "writer": model.writer_step, "take": model.journal_take, "done": model.journal_done,
        "down": lambda: setattr(model, "down", True), "up": lambda: setattr(model, "down", False),
        "stop": model.queue.stop,
    }  # fmt: skip
    for action in actions:
        run[action]()
        model.check()
    if finish == "drain":
        model.drain()
        model.check()
        assert (model.database, model.journal, model.appending) == (model.kept(), [], ())
        assert model.dropped == [write for write in range(model.made) if write in refused]
        return
    model.close()
    model.put()  # journaled at once, behind everything
    model.check()
    assert model.database + model.journal == model.kept()
