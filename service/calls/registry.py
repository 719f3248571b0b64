"""The calls this process is transcribing: bounded by MAX_CALLS, metered once a second, drained at shutdown."""

from __future__ import annotations

import asyncio

import structlog

from service.calls.meter import SAMPLE_INTERVAL_S, CallMeter
from service.calls.session import CallSession

log = structlog.get_logger("callscribe.calls")


class Calls:
    """The calls this process is transcribing; MAX_CALLS bounds them (per Hypercorn worker)."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.sessions: set[CallSession] = set()
        self.accepting = True
        self.meter = CallMeter()

    @property
    def full(self) -> bool:
        return len(self.sessions) >= self.max_calls

    def add(self, session: CallSession) -> None:
        self.sessions.add(session)
        self.meter.started()

    async def forget_when_finished(self, session: CallSession) -> None:
        await session.wait_finished()
        self.sessions.discard(session)
        self.meter.finished(session)

    async def meter_forever(self) -> None:
        """The calls' counters into /metrics once a second (never per frame)."""
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            try:
                self.meter.sample(self.sessions)
            except Exception:
                # A bug here must not stop the metrics for good, nor reach a call.
                log.exception("metrics.sample_failed")

    async def drain(self, timeout_s: float) -> int:
        """Close every stream, wait (bounded) for Deepgram's last finals, spool the rest; returns calls spooled."""
        self.accepting = False
        sessions = list(self.sessions)
        if not sessions:
            return 0
        await asyncio.gather(*(session.shut_down() for session in sessions))
        waiters = {asyncio.ensure_future(session.wait_finished()): session for session in sessions}
        _, late = await asyncio.wait(waiters, timeout=timeout_s)
        for waiter in late:
            waiters[waiter].abandon()
        if late:
            await asyncio.wait(late, timeout=1.0)
        return len(late)
