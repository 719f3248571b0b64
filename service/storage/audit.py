"""Storage layer: the audit log (`audit`): each request that changed what callscribe keeps or hears, recorded in
the transaction of the change it records, with one log line. Who asked (`actor`: the name the request gave, else
how it came), how (`via`), when, of what (`subject`: a CallSid, or a number masked by `masked_number`), and counts
in `detail`; never content. `GET /api/audit` reads it back (`audit_entries`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, cast

import structlog
from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.storage.schema import AuditEntry
from service.storage.statuses import AuditAction
from service.times import as_utc

log = structlog.get_logger("callscribe.audit")

AUDIT: Table = cast(Table, AuditEntry.__table__)
ACTOR_MAX = 128
ACTOR_RULE = f"must be a name of 1 to {ACTOR_MAX} printable characters"  # what a refused `by` is told


def valid_actor(by: str) -> bool:
    """`by`, as a request names who asks, is a name the log can keep: not blank, printable, at most ACTOR_MAX."""
    return bool(by.strip()) and by.isprintable() and len(by) <= ACTOR_MAX


@dataclass(frozen=True, slots=True)
class Audited:
    """Who asked for a change, and how the request came."""

    actor: str  # the name the request gave ("by"), else the same as `via`'s first word
    via: str  # "api 203.0.113.9", "page 203.0.113.9", "cli", "callscribe"

    @classmethod
    def of(cls, by: str | None, via: str) -> Audited:
        """`by` as the request gave it (trimmed, at most ACTOR_MAX characters), else `via`'s first word."""
        name = (by or "").strip()[:ACTOR_MAX]
        return cls(actor=name or via.split(" ", 1)[0], via=via[:ACTOR_MAX])


def masked_number(number: str) -> str:
    """A phone number as the audit log keeps it: its last two digits only (`+*********67`), enough to tell two
    requests apart, too little to find the person."""
    digits = number.strip()
    if len(digits) <= 2:
        return "*" * len(digits)
    return ("+" if digits.startswith("+") else "") + "*" * (len(digits) - 2 - digits.startswith("+")) + digits[-2:]


async def record(
    connection: AsyncConnection,
    action: AuditAction,
    who: Audited,
    subject: str,
    *,
    detail: dict[str, Any],
    at: datetime.datetime,
) -> None:
    """Add one entry in the caller's transaction, and log it: the change and its record commit together."""
    await connection.execute(
        insert(AUDIT).values(
            at=at, action=str(action), actor=who.actor, via=who.via, subject=subject[:128], detail=detail
        )
    )
    log.info("audit", action=str(action), actor=who.actor, via=who.via, subject=subject, **detail)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry, as the API returns it."""

    id: int
    at: datetime.datetime
    action: str
    actor: str
    via: str
    subject: str
    detail: dict[str, Any]


async def audit_entries(engine: AsyncEngine, *, subject: str | None = None, limit: int = 100) -> list[AuditRecord]:
    """The newest entries first, of one subject or all."""
    statement = select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit)
    if subject is not None:
        statement = statement.where(AUDIT.c.subject == subject)
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).mappings().all()
    return [
        AuditRecord(
            id=int(row["id"]), at=as_utc(row["at"]), action=str(row["action"]), actor=str(row["actor"]),
            via=str(row["via"]), subject=str(row["subject"]), detail=dict(row["detail"] or {}),
        )
        for row in rows
    ]  # fmt: skip
