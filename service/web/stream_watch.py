"""Wiring layer: `/voice` answered a call with a `<Stream>`, and no stream of that call started.

Twilio opens the stream within a second or two of reading the TwiML. When it cannot (the `wss://` URL's host
unreachable, a certificate it refuses, a proxy in front that does not pass WebSockets, an upgrade refused), the
call goes on untranscribed and, short of the upgrade refusals `/media` logs itself, nothing reaches this process
to say so. So `/voice` tells the watch which calls it streamed (`expect`), `/media` which of them started here
(`arrived`), and a call still missing after STREAM_START_TIMEOUT_S is looked up in the database's record of
streams (`storage/streams.py`: another worker or dyno may have taken it). Only when that record answers, and
has none, is `voice.no_stream` logged, with what to check: a database that cannot be asked says nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from service.storage.streams import call_has_stream

log = structlog.get_logger("callscribe.app")
MAX_WATCHED: Final = 10_000  # calls awaiting their stream at once; past it new ones are not watched (memory bound)
FIX: Final = (
    "look the call up in Twilio's debugger (31920: the upgrade was refused; 31910: TLS, the certificate or a ws:// "
    "URL; 31901: the host is unreachable) and check that {url} reaches this service through a proxy that passes "
    "WebSockets (see docs/troubleshooting.md)"
)


class StreamWatch:
    """The calls `/voice` streamed whose stream has not started yet, each with its deadline."""

    def __init__(self, engine: Callable[[], AsyncEngine], *, wait_s: float, spawn: Callable[..., None]) -> None:
        self._engine = engine
        self._wait_s = wait_s
        self._spawn = spawn  # runs a coroutine beside the calls (the runtime's background tasks)
        self._pending: dict[str, asyncio.TimerHandle] = {}

    def expect(self, call_sid: str, stream_url: str) -> None:
        """`/voice` answered `call_sid` with a `<Stream url=stream_url>`."""
        if not call_sid or call_sid in self._pending or len(self._pending) >= MAX_WATCHED:
            return
        loop = asyncio.get_running_loop()
        self._pending[call_sid] = loop.call_later(self._wait_s, self._due, call_sid, stream_url)

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

    def _due(self, call_sid: str, stream_url: str) -> None:
        self._pending.pop(call_sid, None)
        self._spawn(self._check(call_sid, stream_url))

    async def _check(self, call_sid: str, stream_url: str) -> None:
        try:
            started = await call_has_stream(self._engine(), call_sid)
        except Exception as exc:  # noqa: BLE001 - without the record there is nothing to say either way
            log.debug("voice.stream_unchecked", call_sid=call_sid, error=type(exc).__name__)
            return
        if started:
            log.debug("voice.stream_elsewhere", call_sid=call_sid)  # another worker or dyno took the stream
            return
        log.warning(
            "voice.no_stream",
            call_sid=call_sid,
            stream_url=stream_url,
            why=f"/voice answered this call with <Start><Stream url={stream_url}>, but no stream of it started "
            f"within STREAM_START_TIMEOUT_S ({self._wait_s:g} s): Twilio could not open it, or /media refused it "
            "(a media.refused line then says why); the call goes on untranscribed",
            fix=FIX.format(url=stream_url),
        )
