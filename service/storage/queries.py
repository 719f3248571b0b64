"""Storage layer, read side: calls and their utterances out of the database, as typed frozen records.

No Quart here: `web/api.py` and `cli/calls.py` both read through these functions, so the API and the command
line can never disagree about what a call holds. Writing is `writer.py`'s job; `delete_call` is the one write,
because deleting is something a reader of the API asks for.

Listing is keyset-paginated on (started_at, call_sid), newest first: a page never repeats or skips a call
when new calls arrive between requests, which offset pagination cannot promise. The cursor is opaque to
clients (base64url of a small JSON object) so its shape can change without breaking them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    TextClause,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.calls.coverage import Part, stored_part, summarize
from service.storage import erasure, search_terms
from service.storage.schema import AlertRow, Call, CoveragePart, Utterance
from service.storage.statuses import CallStatus
from service.times import as_utc
from service.twilio.protocol import is_sid

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# The longest cursor encode_cursor writes: base64 of {"s":<32 characters>,"c":<64>} is 148 characters.
MAX_CURSOR_CHARS = 160
_START_AGAIN = "start again without one"  # what a client does with a cursor it should not have sent


class CursorError(ValueError):
    """A pagination cursor we did not issue (or one damaged on the way): the client should start over."""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as stored: who, when, how it ended, and the counts from its summary line."""

    call_sid: str
    stream_sid: str
    account_sid: str
    from_number: str
    to_number: str
    direction: str
    custom_parameters: dict[str, Any]
    tracks: tuple[str, ...]
    started_at: datetime.datetime
    ended_at: datetime.datetime | None
    status: CallStatus
    ended_by: str | None
    deepgram_request_ids: tuple[str, ...]
    audio_s_inbound: float
    audio_s_outbound: float
    summary: dict[str, Any]
    handed_over: bool = False  # the stream moved to another process at least once (a hand-over at SIGTERM)
    alert_count: int = 0  # the live alerts the call raised (ALERT_RULES)


@dataclass(frozen=True, slots=True)
class UtteranceRecord:
    """One final result of one track, on the call's timeline (seconds from the start of the stream)."""

    track: str
    speaker: str
    start: float
    end: float
    text: str
    confidence: float
    words: tuple[dict[str, Any], ...]  # each with its `language` when the engine said it
    source: str  # live | batch
    languages: tuple[str, ...] = ()  # BCP-47 tags, most words first; () when the engine did not say


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One live alert the call raised: a rule, and the words that fired it (`said`) or the window its phrases
    were missing from (`absent`), on the call's timeline."""

    alert_id: str
    rule: str
    kind: str  # said | absent
    speaker: str
    track: str
    phrase: str
    text: str
    start: float
    end: float
    raised_at: datetime.datetime


@dataclass(frozen=True, slots=True)
class Page:
    """One page of calls, newest first; `next_cursor` is None on the last page."""

    calls: tuple[CallRecord, ...]
    next_cursor: str | None


async def list_calls(
    engine: AsyncEngine,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    number: str | None = None,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    active: bool | None = None,
    words: str | None = None,
) -> Page:
    """Calls newest first, `limit` at a time, after `cursor`; raises CursorError for a cursor we did not issue.

    `number` matches the caller or the called number; `since` is inclusive and `until` exclusive on started_at;
    `active` True keeps calls still streaming, False the ones that ended; `words` keeps the calls one of whose
    final utterances holds every word (`search_terms.py`; SQLite's FTS5 index or PostgreSQL's full-text index,
    migration 0004). Words that hold no word at all (punctuation) match nothing.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be from 1 to {MAX_LIMIT}, not {limit}")
    statement = _filtered(select(Call), number=number, since=since, until=until, active=active)
    if words is not None:
        statement = statement.where(Call.call_sid.in_(_saying(engine.dialect.name, search_terms.terms(words))))
    if cursor is not None:
        after_started, after_sid = decode_cursor(cursor)
        statement = statement.where(
            or_(Call.started_at < after_started, and_(Call.started_at == after_started, Call.call_sid < after_sid))
        )
    # One row more than asked says whether another page exists without a second COUNT query.
    statement = statement.order_by(Call.started_at.desc(), Call.call_sid.desc()).limit(limit + 1)
    async with AsyncSession(engine) as session:
        rows = [_call_record(row) for row in await session.scalars(statement)]
        counts = await _alert_counts(session, [row.call_sid for row in rows[:limit]])
    page = tuple(dataclasses.replace(row, alert_count=counts.get(row.call_sid, 0)) for row in rows[:limit])
    more = len(rows) > limit
    return Page(calls=page, next_cursor=encode_cursor(page[-1]) if more else None)


def _saying(dialect: str, words: tuple[str, ...]) -> Select[Any]:
    """The calls with an utterance that holds every one of `words`, through the dialect's full-text index."""
    matching: ColumnElement[bool] | TextClause
    if not words:
        matching = literal_column("1") == 0  # nothing to look for: no call matches
    elif dialect == "sqlite":
        # The FTS5 table's rowids are the utterances' (external content); MATCH takes only quoted words.
        matching = text(
            "utterances.rowid IN (SELECT rowid FROM utterances_fts WHERE utterances_fts MATCH :match)"
        ).bindparams(bindparam("match", search_terms.fts5_query(words)))
    else:
        vector = func.to_tsvector(literal_column("'simple'"), Utterance.text)
        matching = vector.op("@@")(func.plainto_tsquery(literal_column("'simple'"), search_terms.plain_query(words)))
    return select(Utterance.call_sid).where(matching).distinct()


def _filtered(
    statement: Select[Call],
    *,
    number: str | None,
    since: datetime.datetime | None,
    until: datetime.datetime | None,
    active: bool | None,
) -> Select[Call]:
    if number is not None:
        statement = statement.where(or_(Call.from_number == number, Call.to_number == number))
    if since is not None:
        statement = statement.where(Call.started_at >= as_utc(since))
    if until is not None:
        statement = statement.where(Call.started_at < as_utc(until))
    if active is not None:
        statement = statement.where(Call.status == CallStatus.ACTIVE if active else Call.status != CallStatus.ACTIVE)
    return statement


async def _alert_counts(session: AsyncSession, call_sids: list[str]) -> dict[str, int]:
    """How many alerts each of the calls raised (the calls that raised none are not in it)."""
    if not call_sids:
        return {}
    statement = (
        select(AlertRow.call_sid, func.count()).where(AlertRow.call_sid.in_(call_sids)).group_by(AlertRow.call_sid)
    )
    return {call_sid: int(count) for call_sid, count in (await session.execute(statement)).all()}


async def get_call(engine: AsyncEngine, call_sid: str) -> CallRecord | None:
    """The call, or None when there is no such call."""
    async with AsyncSession(engine) as session:
        call = await session.get(Call, call_sid)
        if call is None:
            return None
        counts = await _alert_counts(session, [call_sid])
        return dataclasses.replace(_call_record(call), alert_count=counts.get(call_sid, 0))


async def get_alerts(engine: AsyncEngine, call_sid: str) -> list[AlertRecord]:
    """The live alerts the call raised, in the order of its timeline (empty for no call)."""
    statement = select(AlertRow).where(AlertRow.call_sid == call_sid).order_by(AlertRow.start, AlertRow.alert_id)
    async with AsyncSession(engine) as session:
        return [_alert_record(row) for row in await session.scalars(statement)]


def _alert_record(row: AlertRow) -> AlertRecord:
    return AlertRecord(
        alert_id=row.alert_id, rule=row.rule, kind=row.kind, speaker=row.speaker, track=row.track, phrase=row.phrase,
        text=row.text, start=row.start, end=row.end, raised_at=as_utc(row.raised_at),
    )  # fmt: skip


async def get_utterances(engine: AsyncEngine, call_sid: str) -> list[UtteranceRecord]:
    """The call's final utterances in the order they were spoken: by start, then track (empty for no call)."""
    statement = (
        select(Utterance)
        .where(Utterance.call_sid == call_sid)
        # The key (call/stream/track/start in ms) breaks the last ties, so the order never depends on the backend.
        .order_by(Utterance.start, Utterance.track, Utterance.key)
    )
    async with AsyncSession(engine) as session:
        return [_utterance_record(row) for row in await session.scalars(statement)]


async def get_coverage(
    engine: AsyncEngine, call_sids: Sequence[str], *, per_track: bool = False
) -> dict[str, dict[str, Any]]:
    """Each call's coverage (`calls/coverage.py`'s `summarize`, summed over its streams), by call SID; a call
    with no rows (still on, or stored before coverage was counted) is not in the answer."""
    if not call_sids:
        return {}
    statement = select(CoveragePart).where(CoveragePart.call_sid.in_(list(call_sids)))
    parts: dict[str, list[Part]] = {}
    async with AsyncSession(engine) as session:
        for row in await session.scalars(statement):
            parts.setdefault(row.call_sid, []).append(
                stored_part(row.track, row.part, row.category, row.ms, row.reason)
            )
    return {call_sid: summarize(found, per_track=per_track) for call_sid, found in parts.items()}


async def first_lines(engine: AsyncEngine, call_sids: list[str]) -> dict[str, str]:
    """Each call's first final utterance's text (by start, then track), for the calls that have one."""
    if not call_sids:
        return {}
    order = func.row_number().over(
        partition_by=Utterance.call_sid, order_by=(Utterance.start, Utterance.track, Utterance.key)
    )
    ranked = (
        select(Utterance.call_sid, Utterance.text, order.label("place"))
        .where(Utterance.call_sid.in_(call_sids))
        .subquery()
    )
    statement = select(ranked.c.call_sid, ranked.c.text).where(ranked.c.place == 1)
    async with engine.connect() as connection:
        return {str(row.call_sid): str(row.text) for row in await connection.execute(statement)}


async def delete_call(engine: AsyncEngine, call_sid: str) -> bool:
    """Delete the call and everything of it the database keeps (`erasure.py`'s cascade) in one transaction; False
    if there was no call. Its row in `streamed_calls` (the CallSid and a time) stays, so the call's `/voice`
    request, replayed, cannot store it again (`storage/streams.py`)."""
    return bool((await erasure.delete_call(engine, call_sid)).counts["calls"])


def encode_cursor(call: CallRecord) -> str:
    """The opaque cursor that continues a listing after `call`."""
    payload = json.dumps({"s": call.started_at.isoformat(), "c": call.call_sid}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime.datetime, str]:
    """(started_at, call_sid) of the last call of the previous page; CursorError, saying what is wrong, if we did not
    issue it.

    Only what `encode_cursor` can write gets through: a cursor no longer than one of ours (so no JSON nested deep
    enough to exhaust the recursion limit), a time with its offset that is still a time in UTC (years 1 to 9999),
    and a call SID as stored (letters and digits, `twilio/protocol.py`), never a NUL or a lone surrogate, which
    PostgreSQL refuses (a 503, as if it were down) and SQLite's driver cannot encode (a 500).
    """
    if len(cursor) > MAX_CURSOR_CHARS:
        raise CursorError(f"longer than any cursor this API issues ({MAX_CURSOR_CHARS} characters); {_START_AGAIN}")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        payload = json.loads(raw)
        started_at = datetime.datetime.fromisoformat(payload["s"])
        call_sid = payload["c"]
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise CursorError(f"not a cursor this API issued; {_START_AGAIN}") from exc
    if started_at.tzinfo is None or not _is_sid(call_sid):
        raise CursorError(f"not a cursor this API issued; {_START_AGAIN}")
    try:
        return as_utc(started_at), call_sid
    except OverflowError as exc:
        raise CursorError(f"its time falls outside the years 1 to 9999 in UTC; {_START_AGAIN}") from exc


def _is_sid(value: object) -> bool:
    return isinstance(value, str) and is_sid(value)


def _call_record(call: Call) -> CallRecord:
    return CallRecord(
        call_sid=call.call_sid,
        stream_sid=call.stream_sid,
        account_sid=call.account_sid,
        from_number=call.from_number,
        to_number=call.to_number,
        direction=call.direction,
        custom_parameters=dict(call.custom_parameters or {}),
        tracks=tuple(call.tracks or ()),
        started_at=as_utc(call.started_at),
        ended_at=None if call.ended_at is None else as_utc(call.ended_at),
        status=CallStatus(call.status),
        ended_by=call.ended_by,
        deepgram_request_ids=tuple(call.deepgram_request_ids or ()),
        audio_s_inbound=call.audio_s_inbound,
        audio_s_outbound=call.audio_s_outbound,
        summary=dict(call.summary or {}),
        handed_over=bool(call.handed_over),
    )


def _utterance_record(utterance: Utterance) -> UtteranceRecord:
    return UtteranceRecord(
        track=utterance.track,
        speaker=utterance.speaker,
        start=utterance.start,
        end=utterance.end,
        text=utterance.text,
        confidence=utterance.confidence,
        words=tuple(utterance.words or ()),
        source=utterance.source,
        languages=tuple(utterance.languages or ()),
    )
