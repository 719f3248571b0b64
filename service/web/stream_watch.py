"""Wiring layer: `/voice` answered a call with a `<Stream>`, and no stream of that call started: the call is
recorded as not streamed, with why, and gets its `call.not_streamed` event.

Twilio opens the stream within a second or two of reading the TwiML. When it cannot (the `wss://` URL's host
unreachable, a certificate it refuses, a proxy in front that does not pass WebSockets, an upgrade refused), the
call goes on untranscribed and, short of the upgrade refusals `/media` logs itself, nothing reaches this process
to say so. So `/voice` tells the watch which calls it streamed (`expect`), `/media` which of them started here
(`arrived`), and a call still missing after STREAM_START_TIMEOUT_S is looked up in the database's record of
streams (`storage/streams.py`: another worker or dyno may have taken it). Only when that record answers, and
has none, is `voice.no_stream` logged, with what to check, and the call's outcome queued through the store
(`TranscriptStore.call_not_streamed`), where the database decides it once for every process: a stream of the
call recorded first wins, and one that comes later is refused at its claim (`storage/streams.py`). A database
that cannot be asked says nothing yet: the check is tried again, up to CHECKS times.

The watch itself is in memory. A restart (or a crash) loses it, so at start-up `resume` watches again the calls
the database holds as answered with no stream yet, each until its own deadline (at once for those past it):
any process may do so, and the database's one outcome per call keeps a call watched by two from ending twice.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Final, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.storage.statuses import NotStreamed
from service.storage.streams import call_has_stream, calls_awaiting_stream
from service.times import utc_now

log = structlog.get_logger("callscribe.app")
MAX_WATCHED: Final = 10_000  # calls awaiting their stream at once; past it new ones are not watched (memory bound)
CHECKS: Final = 5  # looks at the database for one call, STREAM_START_TIMEOUT_S apart, before the watch gives up
FIX: Final = (
    "look the call up in Twilio's debugger (31920: the upgrade was refused; 31910: TLS, the certificate or a ws:// "
    "URL; 31901: the host is unreachable) and check that {url} reaches this service through a proxy that passes "
    "WebSockets (see docs/troubleshooting.md)"
)


class NotStreamedRecord(Protocol):
    """Where a call's outcome goes (`TranscriptStore.call_not_streamed`): queued, never awaited."""

    def __call__(
        self, call_sid: str, *, how: NotStreamed, reason: str, fix: str, answered_at: datetime.datetime | None = None
    ) -> None: ...


class StreamWatch:
    """The calls `/voice` streamed whose stream has not started yet, each with its deadline."""

    def __init__(
        self,
        engine: Callable[[], AsyncEngine],
        *,
        wait_s: float,
        spawn: Callable[..., None],
        record: NotStreamedRecord,
    ) -> None:
        self._engine = engine
        self._wait_s = wait_s
        self._spawn = spawn  # runs a coroutine beside the calls (the runtime's background tasks)
        self._record = record
        self._pending: dict[str, asyncio.TimerHandle] = {}

    def expect(self, call_sid: str, stream_url: str, *, answered_at: datetime.datetime | None = None) -> None:
        """`/voice` answered `call_sid` (now, or at `answered_at`) with a `<Stream url=stream_url>`."""
        answered_at = answered_at or utc_now()
        left_s = self._wait_s - (utc_now() - answered_at).total_seconds()
        self._watch(call_sid, stream_url, answered_at, max(left_s, 0.0), checks=CHECKS)

    async def resume(self, stream_url: str) -> None:
        """Start-up: watch again the calls the database holds as answered and waiting for their stream (a watch
        an earlier process lost). A database that cannot be asked resumes none, and says so (its own checks,
        /readyz's, say what is wrong with it)."""
        try:
            calls = await calls_awaiting_stream(self._engine(), MAX_WATCHED - len(self._pending))
        except Exception as exc:  # noqa: BLE001 - start-up goes on; those calls keep their rows as they are
            log.info("voice.watch_not_resumed", error=type(exc).__name__, why="the database did not answer")
            return
        for call_sid, answered_at in calls:
            self.expect(call_sid, stream_url, answered_at=answered_at)
        if calls:
            log.info("voice.watch_resumed", calls=len(calls))

    def _watch(
        self, call_sid: str, stream_url: str, answered_at: datetime.datetime, after_s: float, *, checks: int
    ) -> None:
        if not call_sid or call_sid in self._pending or len(self._pending) >= MAX_WATCHED:
            return
        loop = asyncio.get_running_loop()
        self._pending[call_sid] = loop.call_later(after_s, self._due, call_sid, stream_url, answered_at, checks)

    def arrived(self, call_sid: str) -> None:
        """A stream of `call_sid` started in this process."""
        handle = self._pending.pop(call_sid, None)
        if handle is not None:
            handle.cancel()

    def stop(self) -> None:
        """Shutdown: no more checks."""
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()

    @property
    def watched(self) -> int:
        return len(self._pending)

    def _due(self, call_sid: str, stream_url: str, answered_at: datetime.datetime, checks: int) -> None:
        self._pending.pop(call_sid, None)
        self._spawn(self._check(call_sid, stream_url, answered_at, checks))

    async def _check(self, call_sid: str, stream_url: str, answered_at: datetime.datetime, checks: int) -> None:
        try:
            started = await call_has_stream(self._engine(), call_sid)
        except Exception as exc:  # noqa: BLE001 - without the record there is nothing to say either way
            log.debug("voice.stream_unchecked", call_sid=call_sid, error=type(exc).__name__, checks_left=checks - 1)
            if checks > 1:  # the database may be back by then; past the last check the call stays as it is
                self._watch(call_sid, stream_url, answered_at, self._wait_s, checks=checks - 1)
            return
        if started:
            log.debug("voice.stream_elsewhere", call_sid=call_sid)  # another worker or dyno took the stream
            return
        why = (
            f"/voice answered this call with <Start><Stream url={stream_url}>, but no stream of it started "
            f"within STREAM_START_TIMEOUT_S ({self._wait_s:g} s): Twilio could not open it, or /media refused it "
            "(a media.refused line then says why); the call goes on untranscribed"
        )
        fix = FIX.format(url=stream_url)
        log.warning("voice.no_stream", call_sid=call_sid, stream_url=stream_url, why=why, fix=fix)
        self._record(call_sid, how=NotStreamed.NO_STREAM, reason=why, fix=fix, answered_at=answered_at)
