"""Storage layer: calls' pause records (`call_controls`), changed by the API and read by every process.

`change_pause` is the API's side: it checks the call (known, still on), writes the next version of its record
and the audit entry in one transaction, and does nothing for a request that changes nothing (pausing a paused
call), so the commands are idempotent. `wait_applied` polls until the process holding the call has applied the
version (`applied_version`), which is what lets the API answer "paused from 12.3 s" rather than "asked".
`DatabaseControls` is the holding process's side (`calls/pausing.py`'s `PauseControls`). A version only grows,
and each change is a conditional write on the version read, so two requests at once cannot both win, and a
resume of an old pause cannot undo a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import enum
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.calls.pausing import ControlsUnavailable
from service.calls.stream.pause import PauseControl
from service.storage.audit import Audited, record
from service.storage.schema import CallControl
from service.storage.statuses import AuditAction, CallStatus
from service.storage.writes import CALLS
from service.times import as_utc

CONTROLS: Table = cast(Table, CallControl.__table__)
AUTO: Audited = Audited(actor="callscribe", via="callscribe")  # who resumes a pause that ran out
WAIT_POLL_S = 0.05


class Refused(enum.StrEnum):
    """Why a pause or resume cannot be recorded."""

    UNKNOWN_CALL = "unknown_call"  # no such call here
    CALL_ENDED = "call_ended"  # the call has ended (or never streamed): nothing left to pause


@dataclass(frozen=True, slots=True)
class PauseState:
    """A call's pause record as the API answers it."""

    call_sid: str
    paused: bool
    version: int
    changed: bool  # this request changed it (False: it already was so)
    changed_at: datetime.datetime | None
    changed_by: str
    resume_at: datetime.datetime | None
    applied_at_s: float | None  # where on the call's timeline the holding process applied it; None: not yet


async def change_pause(
    engine: AsyncEngine,
    call_sid: str,
    *,
    paused: bool,
    who: Audited,
    max_s: float | None,
    now: datetime.datetime,
) -> PauseState | Refused:
    """Pause (or resume) `call_sid` for `who`; a pause lasts at most `max_s` (None: no limit)."""
    for _ in range(3):  # a conditional write that lost to another request reads again
        try:
            async with engine.begin() as connection:
                answer = await _change(connection, call_sid, paused=paused, who=who, max_s=max_s, now=now)
        except IntegrityError:  # two first changes of a call at once: the other inserted first
            continue
        if answer is not None:
            return answer
    raise RuntimeError(f"the pause record of {call_sid} kept changing under this request")


async def _change(
    connection: AsyncConnection, call_sid: str, *, paused: bool, who: Audited, max_s: float | None,
    now: datetime.datetime,
) -> PauseState | Refused | None:  # fmt: skip
    status = (await connection.execute(select(CALLS.c.status).where(CALLS.c.call_sid == call_sid))).scalar()
    if status is None:
        return Refused.UNKNOWN_CALL
    if status != CallStatus.ACTIVE:
        return Refused.CALL_ENDED
    row = (await connection.execute(select(CONTROLS).where(CONTROLS.c.call_sid == call_sid))).mappings().first()
    if row is not None and bool(row["paused"]) == paused:
        return _state(dict(row), changed=False)
    if row is None and not paused:  # never paused: resuming changes nothing
        return PauseState(call_sid, paused=False, version=0, changed=False, changed_at=None, changed_by="",
                          resume_at=None, applied_at_s=None)  # fmt: skip
    version = (int(row["version"]) if row is not None else 0) + 1
    values: dict[str, Any] = {
        "version": version, "paused": paused, "changed_at": now, "changed_by": who.actor,
        "resume_at": now + datetime.timedelta(seconds=max_s) if paused and max_s else None,
    }  # fmt: skip
    if row is None:
        await connection.execute(insert(CONTROLS).values(call_sid=call_sid, applied_version=0, **values))
    else:
        result = await connection.execute(
            update(CONTROLS).where(CONTROLS.c.call_sid == call_sid, CONTROLS.c.version == version - 1).values(**values)
        )
        if not result.rowcount:
            return None  # another request changed it first: read again
    detail: dict[str, Any] = {"version": version}
    if values["resume_at"] is not None:
        detail["max_s"] = max_s
    await record(connection, AuditAction.PAUSE if paused else AuditAction.RESUME, who, call_sid, detail=detail, at=now)
    applied = {"applied_version": row["applied_version"] if row is not None else 0, "applied_at_s": None}
    return _state({"call_sid": call_sid, **values, **applied}, changed=True)


async def pause_state(engine: AsyncEngine, call_sid: str) -> PauseState | None:
    """The call's record as it stands; None if it was never paused."""
    async with engine.connect() as connection:
        row = (await connection.execute(select(CONTROLS).where(CONTROLS.c.call_sid == call_sid))).mappings().first()
    return None if row is None else _state(dict(row), changed=False)


async def wait_applied(engine: AsyncEngine, state: PauseState, timeout_s: float) -> PauseState:
    """`state` once the holding process has applied its version (with where), or as it is after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        current = await pause_state(engine, state.call_sid)
        if current is None or current.version != state.version:
            return state  # changed again meanwhile (or erased): this request's version is history
        if current.applied_at_s is not None:
            return dataclasses.replace(state, applied_at_s=current.applied_at_s)
        if loop.time() >= deadline:
            return state
        await asyncio.sleep(WAIT_POLL_S)


def _state(row: dict[str, Any], *, changed: bool) -> PauseState:
    applied = row["applied_version"] == row["version"]
    return PauseState(
        call_sid=row["call_sid"], paused=bool(row["paused"]), version=int(row["version"]), changed=changed,
        changed_at=as_utc(row["changed_at"]) if row["changed_at"] else None, changed_by=str(row["changed_by"]),
        resume_at=as_utc(row["resume_at"]) if row["resume_at"] else None,
        applied_at_s=row["applied_at_s"] if applied else None,
    )  # fmt: skip


class DatabaseControls:
    """`PauseControls` on the database: what `PauseWatch` reads and writes."""

    def __init__(self, engine: Callable[[], AsyncEngine]) -> None:
        self._engine = engine  # called per use: the store makes its engine at start-up

    async def of_calls(self, call_sids: Collection[str]) -> list[PauseControl]:
        with _unavailable():
            async with self._engine().connect() as connection:
                statement = select(CONTROLS).where(CONTROLS.c.call_sid.in_(list(call_sids)))
                rows = (await connection.execute(statement)).mappings().all()
        return [_control(dict(row)) for row in rows]

    async def applied(self, call_sid: str, version: int, at_s: float) -> None:
        with _unavailable():
            async with self._engine().begin() as connection:
                await connection.execute(
                    update(CONTROLS)
                    .where(CONTROLS.c.call_sid == call_sid, CONTROLS.c.version == version)
                    .values(applied_version=version, applied_at_s=at_s)
                )

    async def expire(self, control: PauseControl, now: datetime.datetime) -> PauseControl | None:
        version = control.version + 1
        with _unavailable():
            async with self._engine().begin() as connection:
                result = await connection.execute(
                    update(CONTROLS)
                    .where(CONTROLS.c.call_sid == control.call_sid, CONTROLS.c.version == control.version)
                    .values(version=version, paused=False, changed_at=now, changed_by=AUTO.actor, resume_at=None)
                )
                if not result.rowcount:
                    return None
                paused_at = control.resume_at or now
                await record(connection, AuditAction.AUTO_RESUME, AUTO, control.call_sid,
                             detail={"version": version, "resume_at": paused_at.isoformat()}, at=now)  # fmt: skip
        return PauseControl(control.call_sid, version, paused=False, by=AUTO.actor)


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """The database's failures (and the network's under it) as the port's one error."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        raise ControlsUnavailable(type(exc).__name__) from exc


def _control(row: dict[str, Any]) -> PauseControl:
    return PauseControl(
        call_sid=str(row["call_sid"]), version=int(row["version"]), paused=bool(row["paused"]),
        by=str(row["changed_by"]), resume_at=as_utc(row["resume_at"]) if row["resume_at"] else None,
    )  # fmt: skip
