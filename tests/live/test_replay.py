"""The replay buffer and a subscriber's cursor (service/live/replay.py)."""

from __future__ import annotations

from service.live.format import TRANSCRIPT, LiveEvent
from service.live.replay import Cursor, ReplayBuffer


def event(ms: int, at: float = 0.0, call_sid: str = "CA1") -> LiveEvent:
    return LiveEvent((ms, 0), TRANSCRIPT, call_sid, at)


def ids(events: list[LiveEvent]) -> list[int]:
    return [e.id[0] for e in events]


def test_replay_is_every_event_after_the_id() -> None:
    """after(id) is the events with greater ids, oldest first; no gap while nothing after it was evicted."""
    buffer = ReplayBuffer(window_s=60, max_events=10, floor=(0, 0))
    buffer.extend(event(ms) for ms in (1, 2, 3))
    replay = buffer.after((1, 0))
    assert (ids(replay.events), replay.gap) == ([2, 3], False)
    assert buffer.after(None).events == []
    assert (buffer.last_id, len(buffer)) == ((3, 0), 3)


def test_an_event_seen_already_is_not_kept_twice() -> None:
    """An event whose id is not past the last one (an overlapping read) is ignored."""
    buffer = ReplayBuffer(window_s=60, max_events=10, floor=(0, 0))
    buffer.extend([event(1), event(2), event(2), event(1)])
    assert ids(buffer.after((0, 0)).events) == [1, 2]


def test_the_oldest_go_past_max_events_and_replay_says_so() -> None:
    """Past max_events the oldest is evicted; an id before it is told events may be missing."""
    buffer = ReplayBuffer(window_s=60, max_events=2, floor=(0, 0))
    buffer.extend(event(ms) for ms in (1, 2, 3))
    assert (ids(buffer.after((1, 0)).events), buffer.after((1, 0)).gap) == ([2, 3], False)
    assert buffer.after((0, 0)).gap


def test_events_older_than_the_window_are_evicted() -> None:
    """An event older than window_s (monotonic seconds) is gone on the next append or evict."""
    buffer = ReplayBuffer(window_s=10, max_events=100, floor=(0, 0))
    buffer.append(event(1, at=0.0))
    buffer.append(event(2, at=5.0))
    buffer.append(event(3, at=11.0))
    assert ids(buffer.after((0, 0)).events) == [2, 3]
    buffer.evict(now=16.0)
    assert ids(buffer.after((0, 0)).events) == [3]
    assert buffer.after((1, 0)).gap
    assert not buffer.after((2, 0)).gap
    buffer.evict(now=100.0)
    assert buffer.last_id is None


def test_an_id_from_before_the_buffer_began_is_a_gap() -> None:
    """A client's id from before this process started may have missed events: gap, with what is kept."""
    buffer = ReplayBuffer(window_s=60, max_events=10, floor=(50, 0))
    buffer.append(event(60))
    replay = buffer.after((10, 0))
    assert (ids(replay.events), replay.gap) == ([60], True)


def test_a_cursor_takes_each_event_once_and_only_its_calls() -> None:
    """A cursor takes events past its last id, of its call only (all calls without one)."""
    one = Cursor("CA1", (1, 0))
    every = Cursor(None, None)
    stream = [event(1), event(2), event(3, call_sid="CA2"), event(2), event(4)]
    assert [ms for ms, e in ((e.id[0], e) for e in stream) if one.takes(e)] == [2, 4]
    assert [e.id[0] for e in stream if every.takes(e)] == [1, 2, 3, 4]


def test_a_lowered_floor_makes_older_ids_whole_again() -> None:
    """set_floor moves where a gap starts: a process that loaded the whole stream owes no one a gap."""
    buffer = ReplayBuffer(window_s=60, max_events=10, floor=(50, 0))
    buffer.append(event(60))
    assert buffer.floor == (50, 0)
    assert not buffer.after(buffer.floor).gap  # replay after the floor is everything kept: the page asks that
    buffer.set_floor((0, 0))
    assert not buffer.after((10, 0)).gap
