"""Everything a database holds, as text to search: every table's every value (the search index's own tables
included), and for a SQLite file its bytes. What an erasure must leave nothing of is looked for here, so a new
table cannot keep an erased word unseen."""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from service.storage.schema import (
    AlertRow,
    Analysis,
    CallControl,
    CoveragePart,
    Job,
    SpoolChunk,
    SpoolSegment,
    Stream,
    StreamedCall,
    WebhookDelivery,
)
from tests.helpers.callsdb import make_call, make_utterance

T0 = datetime.datetime(2026, 12, 7, 18, 0, tzinfo=datetime.UTC)


async def table_names(engine: AsyncEngine) -> list[str]:
    """Every table, the search index's shadow tables on SQLite included."""
    async with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        else:
            query = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
        return [str(name) for name in (await connection.exec_driver_sql(query)).scalars()]


async def every_value(engine: AsyncEngine) -> str:
    """Every value of every table, one a line (bytes as Latin-1, so any byte sequence is searchable)."""
    lines: list[str] = []
    names = await table_names(engine)
    async with engine.connect() as connection:
        for name in names:
            for row in (await connection.exec_driver_sql(f'SELECT * FROM "{name}"')).all():  # noqa: S608 - the database's own names
                lines += [_text(value) for value in row]
    return "\n".join(lines)


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("latin-1")
    return str(value)


def call_everywhere(call_sid: str, number: str, words: str, *, status: str = "completed") -> list[Any]:
    """One call with a row in every place the cascade knows (and `streamed_calls`): its words in its utterances,
    alert, deliveries (one sent, one not), analysis; its audio in a shared spool segment's chunks."""
    segment = f"20261207T180000000000Z-{call_sid}-inbound-1"
    return [
        make_call(call_sid, from_number=number, to_number="+14155550199", started_at=T0, status=status),
        make_utterance(call_sid, "inbound", 0.5, 2.0, words),
        make_utterance(call_sid, "outbound", 2.5, 4.0, f"you said {words}"),
        AlertRow(
            alert_id=f"alert-{call_sid}", call_sid=call_sid, rule="r", kind="said", speaker="caller", track="inbound",
            phrase=words.split(maxsplit=1)[0], text=words, start=0.5, end=2.0, raised_at=T0,
        ),
        *(
            WebhookDelivery(
                event_id=f"utterance.final:{call_sid}:{status}", event_type="utterance.final", call_sid=call_sid,
                payload={"data": {"text": words, "from": number}}, status=status, next_attempt_at=T0, created_at=T0,
            )
            for status in ("pending", "delivered")
        ),
        Analysis(
            call_sid=call_sid, version="v1", status="done", features=["summary"], words=3,
            summary=f"The caller said {words}", analyzed_at=T0,
        ),
        Job(kind="analysis", key=f"{call_sid}:v1", call_sid=call_sid, status="done", run_after=T0, created_at=T0),
        CoveragePart(
            call_sid=call_sid, stream_sid=f"MZ{call_sid}", track="inbound", part=f"spool:{segment}", category="waiting",
            ms=1500, reason="Deepgram rejected the API key (HTTP 401)", updated_at=T0,
        ),
        Stream(
            stream_sid=f"MZ{call_sid}", call_sid=call_sid, purpose="voice", track="both_tracks", first_stream=True,
            started_at=T0,
        ),
        StreamedCall(call_sid=call_sid, first_stream_at=T0),
        CallControl(call_sid=call_sid, version=2, paused=False, changed_at=T0, changed_by="agent-7"),
        SpoolSegment(
            id=segment, call_sid=call_sid, stream_sid=f"MZ{call_sid}", track="inbound", start_s=0.0, duration_s=1.5,
            reason="Deepgram rejected the API key (HTTP 401)", created_at=T0, bytes=12,
        ),
        SpoolChunk(segment_id=segment, seq=0, data=f"RIFF{words}".encode()),
        SpoolChunk(segment_id=segment, seq=1, data=b"more audio"),
    ]  # fmt: skip
