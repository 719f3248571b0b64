"""The read side over a real SQLite database: keyset pages, filters, one call, its utterances, deleting."""

from __future__ import annotations

import base64
import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.storage import queries
from service.storage.queries import CursorError
from service.storage.schema import Utterance, WebhookDelivery
from tests.helpers.callsdb import (
    AGENT,
    CALLER,
    T0,
    insert,
    make_call,
    make_database,
    make_delivery,
    make_utterance,
    postgres_database,
)

MINUTE = datetime.timedelta(minutes=1)


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """Each test runs on SQLite and on PostgreSQL: they differ in time zones, tuple order and DML results."""
    if request.param == "postgresql":
        async with postgres_database() as engine:
            yield engine
        return
    engine = await make_database(tmp_path)
    yield engine
    await engine.dispose()


async def all_pages(engine: AsyncEngine, limit: int, **filters: object) -> list[list[str]]:
    """Every page's call SIDs, following next_cursor to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await queries.list_calls(engine, limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        pages.append([call.call_sid for call in page.calls])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def test_pages_cover_every_call_once_newest_first_even_with_equal_start_times(engine: AsyncEngine) -> None:
    """Paging 3 at a time through 10 calls (some starting at the same instant) yields each once, newest first."""
    starts = [T0 + MINUTE * (i // 2) for i in range(10)]  # pairs share a start time: the call_sid breaks ties
    await insert(engine, [make_call(f"CA{i:02d}", started_at=start) for i, start in enumerate(starts)])
    pages = await all_pages(engine, limit=3)
    assert [len(page) for page in pages] == [3, 3, 3, 1]
    assert [sid for page in pages for sid in page] == [f"CA{i:02d}" for i in reversed(range(10))]


async def test_exact_multiple_of_the_limit_ends_without_an_empty_page(engine: AsyncEngine) -> None:
    """Four calls at limit 2: two full pages, and the second says there is no next one."""
    await insert(engine, [make_call(f"CA{i}", started_at=T0 + MINUTE * i) for i in range(4)])
    assert await all_pages(engine, limit=2) == [["CA3", "CA2"], ["CA1", "CA0"]]


async def test_a_call_arriving_between_pages_neither_shifts_nor_repeats_the_rest(engine: AsyncEngine) -> None:
    """Keyset paging: a newer call inserted after page one does not push page one's last call onto page two."""
    await insert(engine, [make_call(f"CA{i}", started_at=T0 + MINUTE * i) for i in range(4)])
    first = await queries.list_calls(engine, limit=2)
    await insert(engine, [make_call("CA9", started_at=T0 + MINUTE * 9)])
    second = await queries.list_calls(engine, limit=2, cursor=first.next_cursor)
    assert [c.call_sid for c in first.calls + second.calls] == ["CA3", "CA2", "CA1", "CA0"]
    assert second.next_cursor is None


async def test_number_matches_the_caller_or_the_called_number(engine: AsyncEngine) -> None:
    """`number` finds calls from it and calls to it, and nothing else."""
    await insert(engine, [
        make_call("CAfrom", from_number="+15550001", to_number=AGENT, started_at=T0),
        make_call("CAto", from_number=CALLER, to_number="+15550001", started_at=T0 + MINUTE),
        make_call("CAother", from_number=CALLER, to_number=AGENT, started_at=T0 + 2 * MINUTE),
    ])  # fmt: skip
    page = await queries.list_calls(engine, number="+15550001")
    assert [call.call_sid for call in page.calls] == ["CAto", "CAfrom"]


async def test_since_is_inclusive_and_until_exclusive_in_any_offset(engine: AsyncEngine) -> None:
    """since/until bound started_at; an offset other than UTC names the same instant."""
    await insert(engine, [make_call(f"CA{i}", started_at=T0 + MINUTE * i) for i in range(5)])
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    page = await queries.list_calls(engine, since=(T0 + MINUTE).astimezone(plus_two), until=T0 + 3 * MINUTE)
    assert [call.call_sid for call in page.calls] == ["CA2", "CA1"]
    naive_utc = (T0 + 4 * MINUTE).replace(tzinfo=None)
    assert [c.call_sid for c in (await queries.list_calls(engine, since=naive_utc)).calls] == ["CA4"]


async def test_active_keeps_streaming_calls_or_ended_ones(engine: AsyncEngine) -> None:
    """active=True lists only calls still streaming, active=False only calls that ended."""
    await insert(engine, [
        make_call("CAlive", status="active", ended_at=None, started_at=T0 + MINUTE),
        make_call("CAdone", started_at=T0),
    ])  # fmt: skip
    assert [c.call_sid for c in (await queries.list_calls(engine, active=True)).calls] == ["CAlive"]
    assert [c.call_sid for c in (await queries.list_calls(engine, active=False)).calls] == ["CAdone"]
    assert len((await queries.list_calls(engine)).calls) == 2


async def test_filters_hold_across_pages(engine: AsyncEngine) -> None:
    """Every page of a filtered listing is filtered: 6 of 12 calls match, three pages of two."""
    calls = [
        make_call(f"CA{i:02d}", started_at=T0 + MINUTE * i, from_number=CALLER if i % 2 else "+15550002")
        for i in range(12)
    ]
    await insert(engine, calls)
    pages = await all_pages(engine, limit=2, number=CALLER, since=T0)
    assert pages == [["CA11", "CA09"], ["CA07", "CA05"], ["CA03", "CA01"]]


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64!",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b'{"s": "yesterday", "c": "CA1"}').decode(),
        base64.urlsafe_b64encode(b'{"s": "2025-01-02T03:04:05", "c": "CA1"}').decode(),  # no offset: not ours
        base64.urlsafe_b64encode(b'{"s": "2025-01-02T03:04:05+00:00", "c": 7}').decode(),
    ],
)
async def test_a_cursor_we_did_not_issue_is_refused(engine: AsyncEngine, cursor: str) -> None:
    """Garbage, foreign JSON and cursors with the wrong fields all raise CursorError, never a database error."""
    with pytest.raises(CursorError):
        await queries.list_calls(engine, cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, queries.MAX_LIMIT + 1])
async def test_a_limit_outside_one_to_max_is_refused(engine: AsyncEngine, limit: int) -> None:
    """limit must be 1..MAX_LIMIT; the API checks first, and the query refuses too."""
    with pytest.raises(ValueError, match="limit"):
        await queries.list_calls(engine, limit=limit)


async def test_get_call_gives_every_column_with_utc_times(engine: AsyncEngine) -> None:
    """get_call returns the stored call with aware UTC datetimes (SQLite stores none), None for an unknown SID."""
    await insert(engine, [make_call("CA1")])
    call = await queries.get_call(engine, "CA1")
    assert call is not None
    assert call.started_at == T0
    assert call.started_at.tzinfo is datetime.UTC
    assert call.ended_at == T0 + datetime.timedelta(seconds=95)
    assert (call.from_number, call.to_number, call.status) == (CALLER, AGENT, "completed")
    assert call.tracks == ("inbound", "outbound")
    assert call.custom_parameters == {"campaign": "spring"}
    assert call.deepgram_request_ids == ("req-CA1",)
    assert await queries.get_call(engine, "CAnope") is None


async def test_utterances_come_by_start_then_track(engine: AsyncEngine) -> None:
    """Overlapping utterances of two tracks come in start order; equal starts put inbound before outbound."""
    await insert(engine, [
        make_call("CA1"),
        make_utterance("CA1", "outbound", 5.0, 6.0, "third"),
        make_utterance("CA1", "inbound", 0.5, 4.0, "first"),
        make_utterance("CA1", "outbound", 1.0, 2.0, "second overlaps first"),
        make_utterance("CA1", "inbound", 5.0, 5.5, "also at five"),
    ])  # fmt: skip
    utterances = await queries.get_utterances(engine, "CA1")
    assert [(u.start, u.track) for u in utterances] == [
        (0.5, "inbound"), (1.0, "outbound"), (5.0, "inbound"), (5.0, "outbound"),
    ]  # fmt: skip
    assert utterances[0].speaker == "caller"
    assert utterances[1].words[0] == {
        "word": "second", "start": 1.0, "end": 1.333, "confidence": 0.9, "punctuated_word": "second",
    }  # fmt: skip
    assert await queries.get_utterances(engine, "CAnope") == []


async def test_delete_removes_the_call_its_utterances_and_deliveries_only(engine: AsyncEngine) -> None:
    """delete_call takes the call's utterances and webhook deliveries with it and leaves other calls alone."""
    await insert(engine, [
        make_call("CA1"), make_call("CA2"),
        make_utterance("CA1", "inbound", 0.0, 1.0, "gone"), make_utterance("CA2", "inbound", 0.0, 1.0, "kept"),
        make_delivery("CA1", "e1"), make_delivery("CA2", "e2"),
    ])  # fmt: skip
    assert await queries.delete_call(engine, "CA1") is True
    assert await queries.get_call(engine, "CA1") is None
    assert await count(engine, Utterance) == {"CA2": 1}
    assert await count(engine, WebhookDelivery) == {"CA2": 1}
    assert await queries.delete_call(engine, "CA1") is False


async def count(engine: AsyncEngine, model: type[Utterance] | type[WebhookDelivery]) -> dict[str, int]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(model.call_sid, func.count()).group_by(model.call_sid))
        return {str(sid): int(n) for sid, n in rows}


async def test_words_find_calls_on_either_database(engine: AsyncEngine) -> None:
    """One query on SQLite (FTS5) and PostgreSQL (full text): whole words, any case, all in one utterance."""
    await insert(engine, [
        make_call("CA1"), make_call("CA2", started_at=T0 + MINUTE), make_call("CA3", started_at=T0 + 2 * MINUTE),
        make_utterance("CA1", "inbound", 0.0, 1.0, "Where is my order?"),
        make_utterance("CA2", "outbound", 0.0, 1.0, "Your ORDER ships today."),
        make_utterance("CA2", "inbound", 1.0, 2.0, "Great, thanks."),
        make_utterance("CA3", "inbound", 0.0, 1.0, "Orders are late."),
    ])  # fmt: skip

    async def found(words: str, **filters: object) -> list[str]:
        page = await queries.list_calls(engine, words=words, **filters)  # type: ignore[arg-type]
        return [call.call_sid for call in page.calls]

    assert await found("order") == ["CA2", "CA1"]  # "orders" is another word: no stemming
    assert await found("order ships") == ["CA2"]
    assert await found("order thanks") == []  # the words are in two utterances
    assert await found("order", since=T0 + MINUTE) == ["CA2"]
    assert await found("?!") == []


async def test_each_calls_first_line_is_its_earliest_final(engine: AsyncEngine) -> None:
    """The first final by start (then track) of each call asked for; a call without finals, or not asked for,
    has none; asking for no call asks the database nothing."""
    await insert(engine, [
        make_call("CA1"), make_call("CA2", started_at=T0 + MINUTE), make_call("CA3", started_at=T0 + 2 * MINUTE),
        make_utterance("CA1", "inbound", 4.0, 5.0, "Later words."),
        make_utterance("CA1", "outbound", 1.0, 2.0, "Agent first."),
        make_utterance("CA1", "inbound", 1.0, 2.0, "Caller at the same time."),
        make_utterance("CA3", "inbound", 0.5, 1.0, "Not asked for."),
    ])  # fmt: skip
    assert await queries.first_lines(engine, ["CA1", "CA2"]) == {"CA1": "Caller at the same time."}
    assert await queries.first_lines(engine, []) == {}
