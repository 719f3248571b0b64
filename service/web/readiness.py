"""Wiring layer: can this process take calls now? `/readyz`'s checks, and the busy answer /voice and /media give.

Each check answers "ok" or what is wrong, never a secret or a URL: `/readyz` answers without a token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncEngine

from service.calls.registry import Calls
from service.settings import Settings
from service.storage import migrate
from service.web.runtime import Runtime

DATABASE_CHECK_TIMEOUT_S = 2.0
NOT_MIGRATED = "database not migrated: run `python -m service db upgrade`"


@dataclass(frozen=True, slots=True)
class Readiness:
    """Each check's answer: "ok", or what is wrong (never a secret)."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(answer == "ok" for answer in self.checks.values())


async def readiness(runtime: Runtime) -> Readiness:
    """Can this process take calls now? Each check says "ok" or what is wrong."""
    checks = {
        "calls": busy_reason(runtime.calls, runtime.settings) or "ok",
        "twilio_auth_token": "ok" if runtime.signatures.usable else "not set",
        "deepgram_api_key": "ok" if runtime.stt.configured else "not set",
        "database": await database_check(lambda: runtime.store.engine, runtime),
    }
    return Readiness(checks)


def busy_reason(calls: Calls, settings: Settings) -> str | None:
    """Why a new call gets no stream now, or None when it can have one."""
    if not calls.accepting:
        return "shutting down"
    if calls.full:
        # The configured MAX_CALLS, which is what an operator can change.
        return f"callscribe is at MAX_CALLS ({settings.max_calls})"
    return None


async def database_check(engine: Callable[[], AsyncEngine], runtime: Runtime | None = None) -> str:
    """ "ok" when the database answers SELECT 1 within DATABASE_CHECK_TIMEOUT_S, and its schema is at head.

    With `runtime`, the schema is checked until it is seen at head once (then remembered on the runtime, since
    a schema does not move back while the service runs): a PostgreSQL deploy without its release phase is not
    ready, rather than ready with every write going to the journal.
    """
    try:
        async with asyncio.timeout(DATABASE_CHECK_TIMEOUT_S), engine().connect() as connection:
            await connection.execute(sqlalchemy.text("SELECT 1"))
            if runtime is not None and not runtime.schema_at_head:
                if not await migrate.connection_at_head(connection):
                    return NOT_MIGRATED
                runtime.schema_at_head = True
    except TimeoutError:
        return f"no answer within {DATABASE_CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the type says which, never the URL
        return f"unreachable ({type(exc).__name__})"
    return "ok"
