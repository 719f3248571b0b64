"""Adapter: the live feed across processes, through one Redis Stream (REDIS_URL).

Every process adds its call events to the stream (`XADD ... MAXLEN ~ LIVE_REDIS_MAXLEN`) and reads the whole
stream back (`XREAD BLOCK`) into its own `LiveHub`, so each serves every process's calls, under Redis's ids:
the same id names an event on every worker, and `Last-Event-ID` works whichever worker a client reconnects to.

Nothing in a call's path waits on Redis: `publish` appends to a bounded queue and returns; a background task
sends the queue in pipelines, the JSON made there. While Redis is slow or down the queue holds the events (past
LIVE_REDIS_QUEUE they are counted in `callscribe_live_events_unpublished` and not sent), subscribers are told
`feed.behind`, and both tasks retry with backoff; when Redis answers again the queue goes out, the reader goes
on from the last id it had, and subscribers get `feed.live`. `rediss://` is TLS without certificate checks
(`ssl_cert_reqs=none`): Heroku Key-Value Store presents self-signed certificates.

Erasing calls (`erase_calls`) deletes their entries (`XDEL`) and adds one control entry (kind FORGET, the
CallSids and nothing else) that every process's reader takes as "forget these calls" rather than delivering it:
so every process's replay buffer forgets them, whichever one erased. A control entry is deleted by the next
erasure once LIVE_REPLAY_S has passed: by then every reader has read it, or its buffer has let those calls'
older events go anyway.

An entry is checked before it is believed (`entry_event`): callscribe's processes are the stream's only writers,
but a Redis shared with something else, or a release that writes entries otherwise, must neither stop a reader
(every page of that process would go quiet) nor put a line of its own into the pages' event stream. An entry
that fails is skipped, counted and said (`live.entry_skipped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Collection, Mapping
from typing import Any, Final

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.live.format import KINDS, BadEventId, LiveEvent, parse_id, payload
from service.live.hub import LiveHub
from service.metrics import LIVE_EVENTS_UNPUBLISHED
from service.retry import backoff
from service.settings import Settings
from service.twilio.protocol import is_sid

log = structlog.get_logger("callscribe.live")

BATCH: Final = 500  # events per XADD pipeline
BLOCK_MS: Final = 5000  # how long one XREAD waits for new entries
TIMEOUT_S: Final = 3.0  # a Redis command that takes longer counts as Redis being slow
FORGET: Final = b"callscribe.forget"  # a control entry: its readers forget the calls it names (`erase_calls`)
FORGET_KIND: Final = FORGET.decode()  # the same, as an event's kind once read
SCAN: Final = 1000  # entries per XRANGE (and per XDEL) while erasing
MAX_ENTRY_BYTES: Final = 256 * 1024  # an event's JSON; a transcript's is ~0.3 KB, a long final's a few KB


class UnreadableEntry(ValueError):
    """A stream entry this release cannot take; the message says what was wrong with it."""


def entry_event(entry_id: bytes, fields: Mapping[bytes, bytes], *, wall_s: float, monotonic_s: float) -> LiveEvent:
    """The event one entry of the stream is: a call event, or a control entry (kind FORGET); raises
    UnreadableEntry unless its kind is one the feed sends, its CallSid a SID (none for a control entry) and its
    data one line of JSON (an SSE `data:` line), an object for a call event and a list of CallSids for a
    control entry. `wall_s` and `monotonic_s` are now: the replay window counts from when the event happened
    (its id's milliseconds), in monotonic time."""
    try:
        event_id = parse_id(entry_id.decode("ascii"))
        kind, call_sid = fields[b"k"].decode("ascii"), fields[b"c"].decode("ascii")
        data = fields[b"d"]
    except KeyError as exc:
        raise UnreadableEntry(f"no field {exc.args[0]!r}") from exc
    except (UnicodeDecodeError, BadEventId) as exc:
        raise UnreadableEntry("an id, kind or CallSid that is not ASCII text") from exc
    if kind != FORGET_KIND and kind not in KINDS:
        raise UnreadableEntry(f"kind {kind[:40]!r} is not one the feed sends")
    if len(data) > MAX_ENTRY_BYTES or b"\n" in data or b"\r" in data:
        raise UnreadableEntry(f"data of {len(data)} bytes that is not one line of at most {MAX_ENTRY_BYTES}")
    try:
        loaded = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UnreadableEntry("data that is not JSON") from exc
    if kind == FORGET_KIND:
        if call_sid or not isinstance(loaded, list) or not all(isinstance(sid, str) for sid in loaded):
            raise UnreadableEntry("a control entry that is not a list of CallSids")
    elif not is_sid(call_sid) or not isinstance(loaded, dict):
        raise UnreadableEntry("a call event without a CallSid, or whose data is not a JSON object")
    age_s = max(0.0, wall_s - event_id[0] / 1000)
    return LiveEvent(event_id, kind, call_sid, monotonic_s - age_s, data=data)


def connect(url: str, *, read_timeout_s: float) -> Redis:
    """A client for `url`; rediss:// without certificate verification (Heroku's certificates are self-signed)."""
    options: dict[str, Any] = {"socket_connect_timeout": TIMEOUT_S, "socket_timeout": read_timeout_s}
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "none"
    return Redis.from_url(url, **options)


async def erase_calls(client: Redis, key: str, call_sids: Collection[str], *, window_s: float, maxlen: int) -> int:
    """Delete the stream's entries of `call_sids`, then add the control entry every reader forgets them by, and
    delete the control entries older than `window_s`; how many of the calls' entries went."""
    if not call_sids:
        return 0
    wanted = {call_sid.encode() for call_sid in call_sids}
    cutoff_ms = (time.time() - window_s) * 1000
    doomed: list[bytes] = []  # the calls' entries
    spent: list[bytes] = []  # control entries every reader has had time to read
    start = "-"
    while entries := await client.xrange(key, min=start, count=SCAN):
        for entry_id, fields in entries:
            if fields.get(b"c") in wanted:
                doomed.append(entry_id)
            elif fields.get(b"k") == FORGET and parse_id(entry_id.decode())[0] < cutoff_ms:
                spent.append(entry_id)
        start = "(" + entries[-1][0].decode()
    erased = len(doomed)
    doomed += spent
    for first in range(0, len(doomed), SCAN):
        await client.xdel(key, *doomed[first : first + SCAN])
    control = {"k": FORGET, "c": b"", "d": orjson.dumps(sorted(call_sids))}
    await client.xadd(key, control, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    return erased


async def erase_from_stream(settings: Settings, call_sids: Collection[str]) -> int:
    """`erase_calls` from a process that has no feed of its own (`calls erase`): one client, then closed."""
    assert settings.redis_url is not None
    client = connect(settings.redis_url.get_secret_value(), read_timeout_s=TIMEOUT_S)
    try:
        return await erase_calls(
            client, settings.live_redis_stream, call_sids, window_s=settings.live_replay_s,
            maxlen=settings.live_redis_maxlen,
        )  # fmt: skip
    finally:
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()


class RedisFeed:
    """This process's events to the Redis Stream, and the whole stream into `hub`."""

    def __init__(self, settings: Settings, hub: LiveHub, *, rng: random.Random | None = None) -> None:
        assert settings.redis_url is not None
        url = settings.redis_url.get_secret_value()
        self._writer = connect(url, read_timeout_s=TIMEOUT_S)
        self._reader = connect(url, read_timeout_s=BLOCK_MS / 1000 + TIMEOUT_S)
        self._hub = hub
        self._window_s = settings.live_replay_s
        self._key = settings.live_redis_stream
        self._maxlen = settings.live_redis_maxlen
        self._replay_events = settings.live_replay_max_events
        self._bound = settings.live_redis_queue
        self._queue: deque[tuple[str, str, object]] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while the queue is empty
        self._drained.set()
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._failing: dict[str, str] = {}  # which task cannot reach Redis, and why
        self.unpublished = 0
        self.skipped = 0  # entries of the stream this reader could not take (`entry_event`)

    # --- the call's side: never waits -----------------------------------------------------------------------

    def publish(self, kind: str, call_sid: str, source: object) -> None:
        if len(self._queue) >= self._bound:
            self.unpublished += 1
            LIVE_EVENTS_UNPUBLISHED.inc()
            if self.unpublished == 1 or self.unpublished % 1000 == 0:
                log.warning("live.redis_queue_full", unpublished=self.unpublished, queue_max=self._bound)
            return
        self._queue.append((kind, call_sid, source))
        self._wake.set()
        self._drained.clear()

    # --- background tasks --------------------------------------------------------------------------------

    async def run_publisher(self) -> None:
        """Send the queue to the stream, oldest first; a batch Redis did not take is sent again, in order."""
        attempt = 0
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
            try:
                await self._add(batch)
            except (RedisError, OSError) as exc:
                attempt += 1
                await self._wait_to_retry("publisher", exc, attempt)
                continue
            for _ in batch:
                self._queue.popleft()
            if not self._queue:
                self._drained.set()
            attempt = 0
            self._recovered("publisher")

    async def _add(self, batch: list[tuple[str, str, object]]) -> None:
        async with self._writer.pipeline(transaction=False) as pipe:
            for kind, call_sid, source in batch:
                fields = {"k": kind, "c": call_sid, "d": orjson.dumps(payload(kind, source))}
                pipe.xadd(self._key, fields, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
            await pipe.execute()

    async def run_reader(self) -> None:
        """The last LIVE_REPLAY_S of the stream, then every new entry, into the hub."""
        attempt = 0
        last: str | None = None
        while True:
            try:
                last = await self._prefill() if last is None else await self._read(last)
            except (RedisError, OSError) as exc:
                attempt += 1
                await self._wait_to_retry("reader", exc, attempt)
                continue
            attempt = 0
            self._recovered("reader")

    async def _prefill(self) -> str:
        """Load what the stream holds of the replay window, so a client may reconnect to a fresh process."""
        entries = await self._reader.xrevrange(self._key, count=self._replay_events)
        entries.reverse()  # oldest first
        events = [event for entry_id, fields in entries if (event := self._event(entry_id, fields)) is not None]
        if len(entries) == self._replay_events:
            # The stream may hold older events this process never saw (Redis made every id: they parse).
            self._hub.buffer.set_floor(parse_id(entries[0][0].decode()))
        else:
            self._hub.buffer.set_floor((0, 0))  # every event the stream holds is here
        for event in events:
            self._take(event)
        return entries[-1][0].decode() if entries else "0-0"

    async def _read(self, last: str) -> str:
        answer = await self._reader.xread({self._key: last}, count=BATCH, block=BLOCK_MS)
        for _key, entries in answer or ():
            for entry_id, fields in entries:
                event = self._event(entry_id, fields)
                if event is not None:
                    self._take(event)
                last = entry_id.decode()  # past a skipped entry too: it is never read again
        return last

    def _take(self, event: LiveEvent) -> None:
        """An entry into the hub: a call event delivered, a control entry's calls forgotten (never delivered)."""
        if event.kind == FORGET_KIND:
            forgotten = self._hub.forget(orjson.loads(event.json()))
            log.info("live.forgotten", events=forgotten, why="calls erased")
        else:
            self._hub.deliver(event)

    async def forget(self, call_sids: Collection[str]) -> int:
        """Erased calls: out of this process's queue and hub at once, and out of the stream, with the control
        entry every other process's reader forgets them by; how many stream entries went. Raises RedisError
        (or OSError) when Redis cannot be reached: the caller says so."""
        wanted = frozenset(call_sids)
        self._queue = deque(item for item in self._queue if item[1] not in wanted)
        if not self._queue:
            self._drained.set()
        self._hub.forget(wanted)
        return await erase_calls(self._writer, self._key, wanted, window_s=self._window_s, maxlen=self._maxlen)

    def _event(self, entry_id: bytes, fields: dict[bytes, bytes]) -> LiveEvent | None:
        """The entry's event, or None for one it cannot take: counted, and said (the first, then every 1000th)."""
        try:
            return entry_event(entry_id, fields, wall_s=time.time(), monotonic_s=time.monotonic())
        except UnreadableEntry as exc:
            self.skipped += 1
            if self.skipped == 1 or self.skipped % 1000 == 0:
                log.warning(
                    "live.entry_skipped", entry=entry_id.decode(errors="replace")[:40], why=str(exc),
                    skipped=self.skipped, action="only callscribe should write to LIVE_REDIS_STREAM",
                )  # fmt: skip
            return None

    async def _wait_to_retry(self, task: str, exc: BaseException, attempt: int) -> None:
        why = f"redis_unreachable: {type(exc).__name__}"
        if task not in self._failing:
            self._failing[task] = why
            log.warning("live.redis_failed", task=task, error=type(exc).__name__, queued=len(self._queue))
            self._hub.set_behind(why)
        await asyncio.sleep(backoff(attempt, base_s=0.2, cap_s=5.0, rng=self._rng))

    def _recovered(self, task: str) -> None:
        if self._failing.pop(task, None) is not None:
            log.info("live.redis_recovered", task=task, queued=len(self._queue))
            if not self._failing:
                self._hub.set_behind(None)

    async def flush(self, timeout_s: float) -> None:
        """At shutdown: give the publisher up to `timeout_s` to send what is queued (the calls' last events)."""
        if self._failing:
            return  # Redis is not answering; `close` counts what stays queued
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()

    async def close(self) -> None:
        if self._queue:
            LIVE_EVENTS_UNPUBLISHED.inc(len(self._queue))
            why = "the process stopped before Redis took them"
            log.warning("live.redis_unpublished", events=len(self._queue), why=why)
        for client in (self._writer, self._reader):
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
