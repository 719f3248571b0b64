"""Orchestration: the pauses of this process's calls, applied from the one record every process reads.

`POST /api/calls/{sid}/pause` (and `/resume`) may reach any worker of any dyno; only the process holding the
call's stream can silence it. So the request changes the call's record (`PauseControls`, the database's
`call_controls`, through `storage/controls.py`) and `PauseWatch` in every process reads the records of the calls
it holds, every `POLL_S` while it holds any: each newer version goes to its session (`CallSession.apply_pause`),
and where on the call's timeline it took effect is written back (`applied`), which the API waits for before it
answers. A stream that starts (a call paused before its stream began, a hand-over's new stream of a paused call)
reads its call's record before its first frame is relayed (`join`), so it never hears a word of a pause.

A pause whose maximum length has run out resumes here: `expire` changes the record (once, whichever process
gets there first) and audits it, then it is applied like any other version. A database that cannot answer is
said once in the log; the calls go on as they are and the next poll tries again.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Collection
from typing import Protocol

import structlog

from service.calls.stream.pause import PauseControl
from service.calls.stream.session import CallSession

log = structlog.get_logger("callscribe.pause")

POLL_S = 0.2  # how soon a pause asked of another process takes effect here, at most (plus one query)


class ControlsUnavailable(Exception):
    """The pause records could not be read or written (the database did not answer); `__cause__` says why."""


class PauseControls(Protocol):
    """The calls' pause records (the database's `call_controls`); each method raises `ControlsUnavailable` when the
    records cannot be reached."""

    async def of_calls(self, call_sids: Collection[str]) -> list[PauseControl]:
        """The records of those calls that have one."""
        ...

    async def applied(self, call_sid: str, version: int, at_s: float) -> None:
        """The holding process applied `version` at `at_s` on the call's timeline."""
        ...

    async def expire(self, control: PauseControl, now: datetime.datetime) -> PauseControl | None:
        """Resume a pause whose maximum length ran out, unless the record changed since `control` was read: the
        new record, or None when another change came first."""
        ...


class PauseWatch:
    """Every pause record of the calls this process holds, applied to their sessions."""

    def __init__(
        self,
        sessions: Callable[[], Collection[CallSession]],
        controls: PauseControls,
        *,
        clock: Callable[[], datetime.datetime],
        poll_s: float = POLL_S,
    ) -> None:
        self._sessions = sessions
        self._controls = controls
        self._clock = clock
        self._poll_s = poll_s
        self._failing = False

    async def run_forever(self) -> None:
        """Poll while the process runs (a poll with no call started asks nothing)."""
        while True:
            await asyncio.sleep(self._poll_s)
            await self.poll()

    async def poll(self) -> None:
        """Apply every newer record of the started calls here."""
        held: dict[str, list[CallSession]] = {}
        for session in self._sessions():
            if session.call is not None and session.active:
                held.setdefault(session.call.call_sid, []).append(session)
        if held:
            await self._apply(held)

    async def join(self, session: CallSession) -> None:
        """A stream that has just started takes its call's record before its first frame is relayed."""
        if session.call is not None:
            await self._apply({session.call.call_sid: [session]})

    async def _apply(self, held: dict[str, list[CallSession]]) -> None:
        try:
            controls = await self._controls.of_calls(list(held))
            for control in controls:
                current = await self._unexpired(control)
                for session in held[current.call_sid]:
                    at_s = session.apply_pause(current)  # no I/O: a fault in it is a bug, not the database's
                    if at_s is not None:
                        await self._controls.applied(current.call_sid, current.version, at_s)
        except ControlsUnavailable as exc:  # the calls go on as they are; the next poll tries again
            if not self._failing:
                log.warning("pause.controls_unreadable", error=type(exc.__cause__ or exc).__name__,
                            why="the database did not answer: pauses asked now take effect once it does")  # fmt: skip
            self._failing = True
            return
        if self._failing:
            log.info("pause.controls_readable")
            self._failing = False

    async def _unexpired(self, control: PauseControl) -> PauseControl:
        now = self._clock()
        if not control.expired(now):
            return control
        resumed = await self._controls.expire(control, now)
        if resumed is None:  # changed meanwhile (a resume, a new pause): the next poll reads it
            return control
        return resumed
