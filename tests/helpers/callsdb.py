"""Test helpers for the read side: a SQLite file or a fresh PostgreSQL database (`tests/helpers/databases.py`)
with the schema, and calls and utterances to put in it.

Rows go in through the ORM models of `service/storage/schema.py`, the same schema the writer fills, so the read side is
tested against what is really stored (SQLite hands datetimes back without their offset, for one).
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.storage.queries import UtteranceRecord
from service.storage.schema import Base, Call, Utterance, WebhookDelivery, create_engine
from tests.helpers.databases import fresh_postgres_database, postgres_server_url

T0 = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
CALLER = "+14155550100"
AGENT = "+14155550199"

# The fixed two-speaker transcript the golden files show: (track, start, end, text, confidence, source).
TWO_SPEAKERS: tuple[tuple[str, float, float, str, float, str], ...] = (
    ("inbound", 0.48, 2.1, "Hi, I'd like to check on my order.", 0.97, "live"),
    ("outbound", 2.5, 4.25, "Sure, can I have the order number?", 0.95, "live"),
    ("inbound", 4.9, 7.0, "It's 4 7 1 1.", 0.88, "live"),
    ("outbound", 6.75, 9.5, "Thanks. It shipped this morning & arrives Friday.", 0.93, "batch"),
)


def sqlite_file_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/t.sqlite3"


async def make_database(tmp_path: Path) -> AsyncEngine:
    """The engine the service would make for `sqlite_file_url(tmp_path)`, with every table created."""
    engine = create_engine(sqlite_file_url(tmp_path))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    return engine


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[AsyncEngine]:
    """A fresh database on the test PostgreSQL server, with every table; skips without one (fails under CI)."""
    async with fresh_postgres_database(postgres_server_url()) as url:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
            yield engine
        finally:
            await engine.dispose()


def make_call(call_sid: str, *, started_at: datetime.datetime = T0, **fields: Any) -> Call:
    """A completed call with plausible values; `fields` overrides any column."""
    values: dict[str, Any] = {
        "call_sid": call_sid,
        "stream_sid": f"MZ{call_sid}",
        "account_sid": "AC0123",
        "from_number": CALLER,
        "to_number": AGENT,
        "direction": "inbound",
        "custom_parameters": {"campaign": "spring"},
        "tracks": ["inbound", "outbound"],
        "started_at": started_at,
        "ended_at": started_at + datetime.timedelta(seconds=95),
        "status": "completed",
        "ended_by": "stop",
        "deepgram_request_ids": [f"req-{call_sid}"],
        "audio_s_inbound": 95.0,
        "audio_s_outbound": 94.5,
        "summary": {"finals": 4, "reconnects": 0},
    }
    values.update(fields)
    return Call(**values)


def make_utterance(
    call_sid: str, track: str, start: float, end: float, text: str, *, confidence: float = 0.9, source: str = "live"
) -> Utterance:
    """A final utterance with one timed word per word of `text` and the default speaker for its track."""
    return Utterance(
        key=f"{call_sid}/{track}/{round(start * 1000)}",
        call_sid=call_sid,
        track=track,
        speaker="caller" if track == "inbound" else "agent",
        start=start,
        end=end,
        text=text,
        confidence=confidence,
        words=timed_words(text, start, end, confidence),
        source=source,
        created_at=T0,
    )


def timed_words(text: str, start: float, end: float, confidence: float) -> list[dict[str, Any]]:
    """Deepgram-shaped words spread evenly over the utterance."""
    words = text.split()
    step = (end - start) / max(len(words), 1)
    return [
        {
            "word": word.lower().strip(".,?!"),
            "start": round(start + i * step, 3),
            "end": round(start + (i + 1) * step, 3),
            "confidence": confidence,
            "punctuated_word": word,
        }
        for i, word in enumerate(words)
    ]


def two_speaker_utterances(call_sid: str) -> list[Utterance]:
    return [
        make_utterance(call_sid, track, start, end, text, confidence=confidence, source=source)
        for track, start, end, text, confidence, source in TWO_SPEAKERS
    ]


def make_delivery(call_sid: str, event_id: str) -> WebhookDelivery:
    return WebhookDelivery(
        event_id=event_id, event_type="utterance.final", call_sid=call_sid, payload={"n": 1},
        next_attempt_at=T0, created_at=T0,
    )  # fmt: skip


async def insert(engine: AsyncEngine, rows: Iterable[Any]) -> None:
    """Add rows (calls first, so utterances find their call) in one transaction."""
    async with AsyncSession(engine) as session, session.begin():
        for row in rows:
            session.add(row)
            await session.flush()


def as_record(utterance: Utterance) -> UtteranceRecord:
    """The record `queries.get_utterances` would give for this row."""
    return UtteranceRecord(
        track=utterance.track, speaker=utterance.speaker, start=utterance.start, end=utterance.end,
        text=utterance.text, confidence=utterance.confidence, words=tuple(utterance.words), source=utterance.source,
    )  # fmt: skip
