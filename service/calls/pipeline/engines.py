"""Orchestration: the process's live engines (the primary and, with DEEPGRAM_FALLBACK_URL, a fallback), the
failover policy every call shares (`failover.py`), and the one probe that brings new calls back to the primary.

One `LiveEngines` per process (`web/runtime.py`), handed to every call as the engine was before: each track asks
it for a `TrackChoice` and, per connection, for the engine that choice names. Without a fallback it is the one
engine, and nothing changes. The probe runs once per process, never per call: while the primary is down, every
DEEPGRAM_PROBE_S it opens a connection to the primary and closes it at once (CloseStream, no audio).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from service.calls.pipeline.failover import Failover, TrackChoice, Why
from service.errors import SttError
from service.metrics import DEEPGRAM_PRIMARY_DOWN
from service.settings import Settings
from service.stt.engine import FALLBACK, PRIMARY, LiveEngine

log: Any = structlog.get_logger("callscribe.failover")


class LiveEngines:
    """The primary engine, the fallback (if any), and which of them new connections use."""

    def __init__(
        self,
        settings: Settings,
        primary: LiveEngine,
        fallback: LiveEngine | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._engines = {PRIMARY: primary} | ({FALLBACK: fallback} if fallback is not None else {})
        self.failover = Failover(
            has_fallback=fallback is not None,
            after_s=settings.deepgram_failover_after_s,
            probe_every_s=settings.deepgram_probe_s,
            clock=clock,
            on_change=self._changed,
        )

    @property
    def primary(self) -> LiveEngine:
        return self._engines[PRIMARY]

    @property
    def configured(self) -> bool:
        """At least one engine has what it needs to connect."""
        return any(engine.configured for engine in self._engines.values())

    @property
    def max_channels(self) -> int:
        """What every engine can carry: a call may move to either."""
        return min(engine.max_channels for engine in self._engines.values())

    def engine(self, name: str) -> LiveEngine:
        return self._engines[name]

    def track_choice(self) -> TrackChoice:
        return TrackChoice(self.failover)

    def _changed(self, down: bool, why: Why) -> None:
        DEEPGRAM_PRIMARY_DOWN.set(1 if down else 0)
        if down:
            log.warning(
                "deepgram.primary_down", why=str(why), action="new connections go to DEEPGRAM_FALLBACK_URL; "
                f"the primary is probed every {self._settings.deepgram_probe_s:g} s",
            )  # fmt: skip

    async def probe_forever(self) -> None:
        """While the primary is down, ask it every DEEPGRAM_PROBE_S; until cancelled. Nothing to do without a
        fallback."""
        failover = self.failover
        if not failover.has_fallback:
            return
        while True:
            await asyncio.sleep(min(failover.probe_every_s, 1.0))  # a short tick: a probe is due at most 1 s late
            if failover.probe_due():
                await self.probe_once()

    async def probe_once(self) -> bool:
        """Open a connection to the primary and close it cleanly; True (and new connections back to it) when it
        answers."""
        answered, why = await answers(self.primary, timeout_s=self._probe_timeout_s())
        down_s = self.failover.probed(answered=answered)
        if answered:
            log.info("deepgram.primary_back", down_s=round(down_s, 2), action="new connections go to the primary")
        else:
            log.debug("deepgram.probe_failed", why=why)
        return answered

    def _probe_timeout_s(self) -> float:
        settings = self._settings
        return settings.deepgram_connect_timeout_s + settings.deepgram_close_timeout_s


async def answers(engine: LiveEngine, *, timeout_s: float) -> tuple[bool, str]:
    """Whether `engine` opens a connection and closes it cleanly on CloseStream (no audio sent), and why not."""
    try:
        async with asyncio.timeout(timeout_s), engine.connect(channels=1, diarize=False) as live:
            await live.close_stream()
            async for _event in live.events():  # Metadata, then the close
                pass
    except SttError as exc:
        return False, exc.reason
    except TimeoutError:
        return False, f"no clean close within {timeout_s:g} s"
    return True, ""
