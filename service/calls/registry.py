"""The calls this process is transcribing: bounded by MAX_CALLS, metered once a second, drained at shutdown.

Sockets that have not started yet are held apart from the started calls and bounded on their own
(`Settings.max_unstarted_streams`), so sockets that never send `start` cannot take the slots of real calls.
At that bound a new socket closes the one that has waited longest: whoever holds sockets open without starting
them only ever pushes out their own oldest, and a real call, whose `start` follows at once, still gets in.
"""

from __future__ import annotations

import asyncio

import structlog

from service.calls.meter import SAMPLE_INTERVAL_S, CallMeter
from service.calls.stream.session import CallSession

log = structlog.get_logger("callscribe.calls")


class Calls:
    """The calls this process is transcribing; MAX_CALLS bounds them (per Hypercorn worker)."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.sessions: set[CallSession] = set()  # every open stream, started or not
        self._started: set[CallSession] = set()
        self._waiting: dict[CallSession, None] = {}  # not started yet, oldest first
        self.accepting = True
        self.meter = CallMeter()

    @property
    def full(self) -> bool:
        """MAX_CALLS streams have started: no room for another call."""
        return len(self._started) >= self.max_calls

    @property
    def waiting(self) -> int:
        """Sockets accepted that have not started a stream (yet)."""
        return len(self._waiting)

    def started(self, session: CallSession) -> None:
        """`session`'s stream was let in: it counts towards MAX_CALLS from now on."""
        self._waiting.pop(session, None)
        self._started.add(session)

    def oldest_waiting(self) -> CallSession | None:
        """The socket that has waited longest for a `start` it has not sent, no longer counted as waiting; None
        if none does. One whose start is being let in (the database asked) is not picked: that is a real call."""
        oldest = next((session for session in self._waiting if session.awaiting_start), None)
        if oldest is not None:
            del self._waiting[oldest]
        return oldest

    def add(self, session: CallSession) -> None:
        self.sessions.add(session)
        self._waiting[session] = None
        self.meter.started()

    async def forget_when_finished(self, session: CallSession) -> None:
        await session.wait_finished()
        self.sessions.discard(session)
        self._started.discard(session)
        self._waiting.pop(session, None)
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
