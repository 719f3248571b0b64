"""Storage layer: a call's one report, read in one connection: the call, its whole transcript, its coverage (per
track), the alerts it raised and its analysis, as `call.completed` carries them (`webhook_events.py`).

The outbox builds `call.completed` from it in the writer's transaction when the call ends; the API's
`GET /api/calls/{call_sid}/report` and the page's `report.json` read the same report at any time later, with
what batch and analysis have added since.
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.calls.coverage import stored_part, summarize
from service.storage.schema import AlertRow, Analysis, Call, CoveragePart, Utterance
from service.storage.webhook_events import call_completed_event


async def call_report(connection: AsyncConnection, call_sid: str, now: datetime.datetime) -> dict[str, Any] | None:
    """The call's report as a `call.completed` event made `now`; None when there is no such call."""
    call = (await connection.execute(select(Call.__table__).where(Call.call_sid == call_sid))).mappings().first()
    if call is None:
        return None
    utterances = (
        (await connection.execute(select(Utterance.__table__).where(Utterance.call_sid == call_sid))).mappings().all()
    )
    parts = (await connection.execute(select(CoveragePart.__table__).where(CoveragePart.call_sid == call_sid))).all()
    coverage = (
        summarize([stored_part(row.track, row.part, row.category, row.ms, row.reason) for row in parts], per_track=True)
        if parts
        else None
    )
    alerts = (await connection.execute(select(AlertRow.__table__).where(AlertRow.call_sid == call_sid))).mappings()
    analysis = (
        (await connection.execute(select(Analysis.__table__).where(Analysis.call_sid == call_sid))).mappings().first()
    )
    return call_completed_event(
        dict(call), [dict(utterance) for utterance in utterances], now, coverage,
        alerts=[dict(alert) for alert in alerts], analysis=dict(analysis) if analysis is not None else None,
    )  # fmt: skip
