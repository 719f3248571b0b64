"""Protocol layer (pure, no I/O): the feed's replay buffer, what `Last-Event-ID` is answered from.

Events are kept for LIVE_REPLAY_S (and at most LIVE_REPLAY_MAX_EVENTS), in id order. `after(last_id)` is every
kept event with a greater id, and whether some may be missing: the id is older than what was evicted, or than
this process's first event. Ids only grow, so a subscriber that remembers the last id it sent can never be sent
an event twice (`Cursor`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from service.live.format import EventId, LiveEvent


@dataclass(frozen=True, slots=True)
class Replay:
    events: list[LiveEvent]
    gap: bool  # events after last_id were evicted (or came before this buffer began): the client may have missed some


class ReplayBuffer:
    """The last `window_s` seconds of events (at most `max_events`), oldest first."""

    def __init__(self, *, window_s: float, max_events: int, floor: EventId) -> None:
        self._window_s = window_s
        self._max_events = max_events
        self._events: deque[LiveEvent] = deque()
        self._floor = floor  # ids up to here are not (or no longer) kept

    def append(self, event: LiveEvent) -> None:
        events = self._events
        if events and event.id <= events[-1].id:
            return  # seen already (a Redis read that overlapped the last one)
        events.append(event)
        if len(events) > self._max_events:
            self._floor = events.popleft().id
        self.evict(event.at)

    def evict(self, now: float) -> None:
        events, oldest = self._events, now - self._window_s
        while events and events[0].at < oldest:
            self._floor = events.popleft().id

    def forget(self, call_sids: Collection[str]) -> int:
        """Drop every kept event of `call_sids` (their erasure); how many. The floor stays: a client replaying
        from before them is owed no gap, there is nothing of those calls to miss any more."""
        kept = deque(event for event in self._events if event.call_sid not in call_sids)
        forgotten = len(self._events) - len(kept)
        self._events = kept
        return forgotten

    def set_floor(self, floor: EventId) -> None:
        """Ids up to `floor` may be missing here (a process that loaded its buffer from a longer stream)."""
        self._floor = floor

    def after(self, last_id: EventId | None) -> Replay:
        """Events after `last_id` (none for None: a new subscriber starts from now)."""
        if last_id is None:
            return Replay([], gap=False)
        return Replay([event for event in self._events if event.id > last_id], gap=last_id < self._floor)

    def extend(self, events: Iterable[LiveEvent]) -> None:
        for event in events:
            self.append(event)

    @property
    def floor(self) -> EventId:
        """Ids up to here are not kept: replay after it is everything this buffer has, and owes no gap."""
        return self._floor

    @property
    def last_id(self) -> EventId | None:
        return self._events[-1].id if self._events else None

    def __len__(self) -> int:
        return len(self._events)


class Cursor:
    """A subscriber's place in the feed: an event is for it only if its id is past the last one it took."""

    __slots__ = ("call_sid", "last_id")

    def __init__(self, call_sid: str | None, last_id: EventId | None) -> None:
        self.call_sid = call_sid
        self.last_id: EventId = last_id or (0, 0)

    def takes(self, event: LiveEvent) -> bool:
        if event.id <= self.last_id or (self.call_sid is not None and event.call_sid != self.call_sid):
            return False
        self.last_id = event.id
        return True
