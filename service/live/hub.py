"""Adapter: this process's live feed, fanned out to its subscribers without ever making a call wait.

`LiveHub.deliver` is synchronous: it appends the event to the replay buffer (`replay.py`) and offers it to each
subscriber's bounded queue; the readers are woken together at most every FEED_FLUSH_S, each taking all it has
queued in one write. A subscriber whose queue is full (a slow or stuck client) is dropped there and then:
it gets what it had queued and one `feed.dropped` event saying why, and is counted. Nothing awaits a subscriber,
so a call's path costs the same whoever watches. At most `max_subscribers` (LIVE_MAX_SUBSCRIBERS) read at once:
each holds a queue and a response, so one more is refused (`FeedFull`) rather than let the process's memory and
sockets grow with whoever asks. Where events come from is the publisher's business:
`LocalPublisher` numbers them in this process; with REDIS_URL, `redis_stream.py` brings every process's events.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Collection

import structlog

from service.alerts.matching import Alert
from service.calls.coverage import Outcome
from service.calls.events import CallEnded, CallStarted, CallStateChanged, TurnChanged
from service.calls.transcript import Transcript
from service.live.format import (
    CALL_ALERT,
    CALL_ENDED,
    CALL_STARTED,
    CALL_STATE,
    FEED_BEHIND,
    FEED_CLOSING,
    FEED_DROPPED,
    FEED_LIVE,
    TRANSCRIPT,
    EventId,
    IdClock,
    LiveEvent,
    closing_frame,
    feed_frame,
)
from service.live.replay import Cursor, ReplayBuffer
from service.metrics import LIVE_SUBSCRIBERS, LIVE_SUBSCRIBERS_DROPPED, LIVE_SUBSCRIBERS_REFUSED

log = structlog.get_logger("callscribe.live")

Publish = Callable[[str, str, object], None]  # (kind, call_sid, the call event)
Item = LiveEvent | bytes  # a call event, or a frame of the feed's own


class FeedFull(Exception):
    """LIVE_MAX_SUBSCRIBERS clients already read this process's feed: the next one is refused, not queued."""


class Subscriber:
    """One client of the feed: its cursor, its bounded queue, and the last word when it is ended."""

    def __init__(self, cursor: Cursor, bound: int) -> None:
        self.cursor = cursor
        self.bound = bound
        self.queue: deque[Item] = deque()
        self.ended: str | None = None  # why the feed ended for this subscriber
        self._last_word: bytes | None = None
        self._ready = asyncio.Event()

    def offer(self, item: Item) -> bool:
        """Queue `item` unless the queue is full (False: the caller drops this subscriber); once ended, nothing more
        is queued (its last word is said). The reader is not woken here: the hub wakes its readers (`wake`) at most
        every FEED_FLUSH_S."""
        if self.ended is not None:
            return True
        if len(self.queue) >= self.bound:
            return False
        self.queue.append(item)
        return True

    def wake(self) -> None:
        """Its reader takes what is queued now (`next`)."""
        if self.queue:
            self._ready.set()

    def end(self, kind: str, reason: str, last_word: bytes | None = None) -> None:
        """No more events: what is queued, then the last word (`feed_frame(kind, reason)` unless given), then the
        response ends."""
        if self.ended is None:
            self.ended = reason
            self._last_word = last_word or feed_frame(kind, reason)
            self._ready.set()

    async def next(self, heartbeat_s: float) -> Item | None:
        """The next item; None after `heartbeat_s` with nothing (a heartbeat is due), or once the last word is out."""
        if not self.queue and self._last_word is None:
            if self.ended is not None:
                return None
            self._ready.clear()
            try:
                # A timeout scope, not wait_for: that makes a task per wait, and a feed waits once per burst.
                async with asyncio.timeout(heartbeat_s):
                    await self._ready.wait()
            except TimeoutError:
                return None
        if self.queue:
            return self.queue.popleft()
        word, self._last_word = self._last_word, None
        return word

    def take_queued(self) -> list[Item]:
        """Every item queued now (the last word stays for `next`): what came in one burst goes out in one write."""
        items = list(self.queue)
        self.queue.clear()
        return items

    @property
    def finished(self) -> bool:
        """Ended, and everything including the last word handed out."""
        return self.ended is not None and not self.queue and self._last_word is None


# Readers are woken at most this often, each taking everything queued since in one write. Woken per event, 50 open
# pages cost 50 task switches and writes for every event, in the turns of the loop that carry the calls' audio: at
# the start of 40 calls (120 events one at a time) that held the frames back by 200 ms (docs/benchmarks.md).
# A tenth of a second later on a page is not seen; a stop, a drop and a replay still go at once.
FEED_FLUSH_S = 0.1

MAX_BOARD_CALLS = 10_000  # a call whose process died never ends: the board forgets the oldest past this


class CallBoard:
    """The calls on now, as the feed told them: each one's call.started fields and its tracks' states.

    Updated by the rare events only (not transcripts); the page renders the active list from it.
    """

    def __init__(self) -> None:
        self.calls: dict[str, dict[str, object]] = {}

    def update(self, event: LiveEvent) -> None:
        if event.kind == CALL_STARTED:
            self.calls[event.call_sid] = {**event.fields(), "states": {}}
            if len(self.calls) > MAX_BOARD_CALLS:
                del self.calls[next(iter(self.calls))]
        elif event.kind == CALL_STATE and event.call_sid in self.calls:
            fields = event.fields()
            states = self.calls[event.call_sid]["states"]
            assert isinstance(states, dict)
            states[fields["track"]] = fields["state"]
        elif event.kind == CALL_ENDED:
            self.calls.pop(event.call_sid, None)

    def forget(self, call_sids: Collection[str]) -> None:
        for call_sid in call_sids:
            self.calls.pop(call_sid, None)


class LiveHub:
    """The replay buffer and the subscribers of one process."""

    def __init__(
        self, *, window_s: float, max_events: int, queue_bound: int, max_subscribers: int, floor: EventId,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.buffer = ReplayBuffer(window_s=window_s, max_events=max_events, floor=floor)
        self.board = CallBoard()
        self._queue_bound = queue_bound
        self._max_subscribers = max_subscribers
        self._clock = clock
        self._subscribers: set[Subscriber] = set()
        self._responses: set[Subscriber] = set()  # subscribers whose response has not ended yet (`feed_ended`)
        self._all_ended = asyncio.Event()
        self._all_ended.set()
        self.behind: str | None = None  # why the feed may be missing events right now (Redis unreachable)
        self._flush: asyncio.TimerHandle | None = None  # the readers' next wake-up, while events wait for them

    def deliver(self, event: LiveEvent) -> None:
        """An event into the buffer and to every subscriber that wants it; never waits."""
        self.buffer.append(event)
        if event.kind != TRANSCRIPT:
            self.board.update(event)
        dropped = [sub for sub in self._subscribers if sub.cursor.takes(event) and not sub.offer(event)]
        for sub in dropped:
            self._drop(sub, f"more than LIVE_SUBSCRIBER_QUEUE ({sub.bound}) events waited for this client")
        if self._subscribers:
            self._wake_soon()

    def _wake_soon(self) -> None:
        """Every reader with something queued is woken within FEED_FLUSH_S, all at once."""
        if self._flush is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a synchronous caller with no loop (a test): nobody can be waiting
            return
        self._flush = loop.call_later(FEED_FLUSH_S, self._wake_all)

    def _wake_now(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        self._wake_all()

    def _wake_all(self) -> None:
        self._flush = None
        for sub in self._subscribers:
            sub.wake()

    def forget(self, call_sids: Collection[str]) -> int:
        """Erased calls: their events leave the replay buffer and the board (a subscriber's queue holds at most
        subscriber's queue loses them too); how many events the buffer held."""
        wanted = frozenset(call_sids)
        self.board.forget(wanted)
        for sub in self._subscribers:
            sub.queue = deque(item for item in sub.queue if not _of(item, wanted))
        return self.buffer.forget(wanted)

    def subscribe(self, call_sid: str | None, last_id: EventId | None) -> Subscriber:
        """A new subscriber, first given what it missed after `last_id`; in one step, so nothing comes twice.

        FeedFull when LIVE_MAX_SUBSCRIBERS already read (counted); nothing of the refused client is kept."""
        if len(self._subscribers) >= self._max_subscribers:
            LIVE_SUBSCRIBERS_REFUSED.inc()
            raise FeedFull(f"LIVE_MAX_SUBSCRIBERS ({self._max_subscribers}) clients already read this process's feed")
        sub = Subscriber(Cursor(call_sid, last_id), self._queue_bound)
        self.buffer.evict(self._clock())
        replay = self.buffer.after(last_id)
        if replay.gap:
            sub.queue.append(feed_frame(FEED_BEHIND, "replay_window: events after Last-Event-ID are no longer kept"))
        if self.behind is not None:
            sub.queue.append(feed_frame(FEED_BEHIND, self.behind))
        sub.queue.extend(event for event in replay.events if sub.cursor.takes(event))
        if replay.gap and self.behind is None:
            # What is missing is behind it now: from here the client is live (with Redis unreachable, it is not
            # yet, and `set_behind(None)` says so when it is).
            sub.queue.append(feed_frame(FEED_LIVE, "replayed every event still kept; read the rest from /api/calls"))
        self._subscribers.add(sub)
        self._responses.add(sub)
        self._all_ended.clear()
        LIVE_SUBSCRIBERS.inc()
        return sub

    def feed_ended(self, sub: Subscriber) -> None:
        """`sub`'s response is over (its last word went out, or the client left): it is no longer a subscriber."""
        self.unsubscribe(sub)
        self._responses.discard(sub)
        if not self._responses:
            self._all_ended.set()

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            LIVE_SUBSCRIBERS.dec()

    def set_behind(self, reason: str | None) -> None:
        """The feed may be missing events (`reason`), or (None) has caught up: every subscriber is told."""
        if reason == self.behind:
            return
        self.behind = reason
        frame = feed_frame(FEED_BEHIND, reason) if reason is not None else feed_frame(FEED_LIVE, "caught up")
        for sub in [sub for sub in self._subscribers if not sub.offer(frame)]:
            self._drop(sub, f"more than LIVE_SUBSCRIBER_QUEUE ({sub.bound}) events waited for this client")
        self._wake_now()  # rare, and news: at once

    def close(self, reason: str, retry_ms: int) -> None:
        """The process is stopping: every subscriber gets its queue, then `feed.closing` (reconnect after
        `retry_ms`), and its response ends."""
        last_word = closing_frame(reason, retry_ms)
        for sub in list(self._subscribers):
            sub.end(FEED_CLOSING, reason, last_word)
            self.unsubscribe(sub)

    async def wait_ended(self, timeout_s: float) -> bool:
        """Until every feed's response has ended (after `close`), at most `timeout_s`; False if one is still open (a
        client that does not read: its response waits on the socket)."""
        try:
            await asyncio.wait_for(self._all_ended.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _drop(self, sub: Subscriber, reason: str) -> None:
        LIVE_SUBSCRIBERS_DROPPED.labels(reason="queue_full").inc()
        log.warning("live.subscriber_dropped", call_sid=sub.cursor.call_sid, why=reason)
        sub.end(FEED_DROPPED, reason)
        self.unsubscribe(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


def _of(item: Item, call_sids: frozenset[str]) -> bool:
    return isinstance(item, LiveEvent) and item.call_sid in call_sids


class LocalPublisher:
    """In-process events: numbered here (`IdClock`) and delivered to the hub at once."""

    def __init__(self, hub: LiveHub, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._hub = hub
        self._ids = IdClock(lambda: time.time_ns() // 1_000_000)
        self._clock = clock

    def publish(self, kind: str, call_sid: str, source: object) -> None:
        self._hub.deliver(LiveEvent(self._ids.next(), kind, call_sid, self._clock(), source))


class LiveObserver:
    """The `CallObserver` that hands every call event to the feed's publisher."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    def call_started(self, event: CallStarted) -> None:
        self._publish(CALL_STARTED, event.call_sid, event)

    def transcript(self, transcript: Transcript) -> None:
        self._publish(TRANSCRIPT, transcript.call_sid, transcript)

    def call_state(self, event: CallStateChanged) -> None:
        self._publish(CALL_STATE, event.call_sid, event)

    def turn(self, event: TurnChanged) -> None:
        self._publish(event.moment, event.call_sid, event)

    def call_ended(self, event: CallEnded) -> None:
        self._publish(CALL_ENDED, event.call_sid, event)

    def alert(self, alert: Alert) -> None:
        """An `AlertSink` too (`service/alerts/watch.py`): each alert a call raises, as a `call.alert` event."""
        self._publish(CALL_ALERT, alert.call_sid, alert)

    def spool_outcome(self, outcome: Outcome) -> None:
        pass  # not live news: the call's coverage in the API and on its page says what batch did
