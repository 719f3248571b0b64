"""Storage layer: webhook events written into `webhook_deliveries` in the writer's own transaction.

An `utterance.final` row goes in with its utterance, a `call.completed` row with the call's end, a
`call.not_streamed` row with the outcome of a call whose stream never started, a `call.alert` row with its
alert, a `call.analyzed` row with the analysis it reports (`analyses.py`, through `add_event`).
`call.completed` is the call's one report: the whole transcript stored by then, its coverage, the alerts it
raised and its analysis when one is stored by then. It and `call.not_streamed` are a call's last event, and it
has one of them: a call recorded as not streamed gets no `call.completed` (see `storage/writes.py`'s
`decision`). Event ids are stable, so writing the same utterance or alert again (a retry, a journal replay)
adds no second event. `webhooks/sender.py` delivers what is here.
"""

from __future__ import annotations

import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from service.storage.reports import call_report
from service.storage.schema import Call, WebhookDelivery
from service.storage.statuses import CallStatus, DeliveryStatus
from service.storage.webhook_events import alert_event, call_not_streamed_event, utterance_event
from service.storage.writes import Write

log = structlog.get_logger("callscribe.store")


async def add_webhook_event(connection: AsyncConnection, write: Write, now: datetime.datetime) -> None:
    """Queue the webhook event that `write` produces, if any, once."""
    event: dict[str, Any] | None
    if write.kind == "utterance":
        event = utterance_event(write.row, now)
    elif write.kind == "alert":
        event = alert_event(write.row, now)
    elif write.kind == "call_ended" and not write.row.get("handed_over"):  # a handed-over call goes on elsewhere
        event = await _call_completed(connection, write.call_sid, now)
    elif write.kind == "call_not_streamed":
        event = call_not_streamed_event(await _call(connection, write.call_sid), now)
    else:
        return
    if event is not None:
        await add_event(connection, event, now)


async def add_event(connection: AsyncConnection, event: dict[str, Any], now: datetime.datetime) -> None:
    """Queue a built event (`webhook_events.py`) in the caller's transaction, once per event id."""
    insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(WebhookDelivery)
    await connection.execute(
        insert.values(
            event_id=event["id"],
            event_type=event["type"],
            call_sid=event["data"]["call_sid"],
            payload=event,
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        ).on_conflict_do_nothing(index_elements=["event_id"])
    )


async def _call(connection: AsyncConnection, call_sid: str) -> dict[str, Any]:
    return dict((await connection.execute(select(Call.__table__).where(Call.call_sid == call_sid))).mappings().one())


async def _call_completed(connection: AsyncConnection, call_sid: str, now: datetime.datetime) -> dict[str, Any] | None:
    call = await _call(connection, call_sid)
    if call["status"] == CallStatus.NOT_STREAMED:
        # A stream let in while the database could not answer its claim, after the call was recorded as not
        # streamed: that outcome and its event stand; the stream's words are stored all the same.
        log.warning(
            "store.stream_after_not_streamed", call_sid=call_sid,
            why="a stream of this call ended after the call was recorded as not streamed: no call.completed",
        )  # fmt: skip
        return None
    return await call_report(connection, call_sid, now)
