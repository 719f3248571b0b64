"""The one cascade, on SQLite and a real PostgreSQL: every place a call's data lives is emptied of that call and
of nothing else, counted by kind; the search index and every table's text (and a SQLite file's bytes) keep no
erased word; `streamed_calls` keeps its CallSid and time; an erasure by number is audited with the number masked,
leaves the calls still on, and answers zeros the second time."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.storage import erasure, queries
from service.storage.audit import Audited, audit_entries
from service.storage.erasure import BadNumber, Request, checked_number, number_forms
from service.storage.retention import purge_older_than
from service.storage.schema import Base, StreamedCall, create_engine
from service.storage.spool_segments import ChunkAudio, DatabaseSpool
from service.storage.statuses import AuditAction
from tests.helpers.callsdb import insert
from tests.helpers.databases import database_url, dialect_of, migrated_url
from tests.helpers.stored import T0, call_everywhere, every_value, table_names

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

NUMBER = "+14155550167"
OTHER = "+14155550123"
ERASED_WORDS = "zanzibar quokka marmalade"
KEPT_WORDS = "aubergine pelican"
# What one `call_everywhere` call has in each place the cascade empties.
ONE_CALL = {
    "calls": 1, "utterances": 2, "alerts": 1, "webhook_deliveries": 2, "analyses": 1, "jobs": 1, "coverage": 1,
    "streams": 1, "call_controls": 1, "spool_segments": 1, "spool_chunks": 2,
}  # fmt: skip
WHO = Request(Audited.of("dpo@example.com", "cli"), T0)


def test_every_kind_of_place_is_counted_once() -> None:
    """The cascade's places are the kinds it answers with, each once, the call's own row deleted last."""
    assert list(erasure.DATABASE_KINDS) == ["calls", *(name for name, _ in erasure.PLACES), "spool_segments",
                                            "spool_chunks"]  # fmt: skip
    assert len(set(erasure.KINDS)) == len(erasure.KINDS)
    assert set(ONE_CALL) == set(erasure.DATABASE_KINDS)


def test_the_cascade_knows_every_table_that_holds_a_call_sid() -> None:
    """A table with a call_sid column that the cascade does not name would keep an erased call: none may."""
    named = {table.name for _, table in erasure.PLACES} | {"calls", "spool_segments"}
    kept = {"streamed_calls"}  # the CallSid and a time, never a number or a word (storage/streams.py)
    with_call_sid = {table.name for table in Base.metadata.tables.values() if "call_sid" in table.c}
    assert with_call_sid == named | kept


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("+14155550167", None),
        ("14155550167", None),
        ("911", None),
        ("+123456789012345", None),
        (" 14155550167", "starts or ends with a space"),
        ("", "is empty"),
        ("+1 415 555 0167", "digits with an optional leading +"),
        ("+1-415-555-0167", "digits with an optional leading +"),
        ("++14155550167", "digits with an optional leading +"),
        ("client:alice", "digits with an optional leading +"),
        ("+١٤١٥٥٥٥٠١٦٧", "digits with an optional leading +"),  # other scripts' digits
        ("+12", "has 2 digits"),
        ("+1234567890123456", "has 16 digits"),
    ],
)
def test_a_number_is_checked_before_anything_is_erased(number: str, why: str | None) -> None:
    if why is None:
        assert checked_number(number) == number
    else:
        with pytest.raises(BadNumber, match=why):
            checked_number(number)


def test_a_number_is_found_stored_with_or_without_its_plus() -> None:
    assert number_forms("+14155550167") == number_forms("14155550167") == ("+14155550167", "14155550167")


async def test_erasing_a_number_empties_every_place_of_its_calls_and_nothing_else(migrated_url: str) -> None:
    """Two calls of the number (one stored without its +), one of another number: the number's are gone from every
    table, the search index and every value; the other's rows are all there; the audit entry has the counts and
    the number masked."""
    engine = create_engine(migrated_url)
    try:
        await insert(engine, call_everywhere("CAerase1", NUMBER, ERASED_WORDS))
        await insert(engine, call_everywhere("CAerase2", NUMBER.removeprefix("+"), ERASED_WORDS))
        await insert(engine, call_everywhere("CAkeep", OTHER, KEPT_WORDS))
        before = await every_value(engine)
        assert "zanzibar" in before  # the scan sees them while they are there
        assert NUMBER in before
        assert [c.call_sid for c in (await queries.list_calls(engine, words="zanzibar")).calls]

        calls, in_progress = await erasure.number_calls(engine, NUMBER)
        assert (sorted(calls), in_progress) == (["CAerase1", "CAerase2"], [])
        erased = await erasure.erase_number(
            engine, NUMBER, calls, in_progress=in_progress, request=WHO, audio=None, outside={}
        )

        assert erased.counts == {**erasure.no_counts(), **{kind: 2 * n for kind, n in ONE_CALL.items()}}
        after = await every_value(engine)
        for trace in ("zanzibar", "quokka", "marmalade", "4155550167", "CAerase1/"):
            assert trace not in after
        assert "aubergine" in after
        assert OTHER in after
        assert (await queries.list_calls(engine, words="zanzibar")).calls == ()
        assert [c.call_sid for c in (await queries.list_calls(engine, words="aubergine")).calls] == ["CAkeep"]
        async with engine.connect() as connection:
            kept = set(await connection.scalars(select(StreamedCall.call_sid)))
        assert kept == {"CAerase1", "CAerase2", "CAkeep"}  # CallSids and times only: no number, no word
        [entry] = await audit_entries(engine)
        assert (entry.action, entry.actor, entry.via, entry.subject) == (
            AuditAction.ERASE_NUMBER,
            "dpo@example.com",
            "cli",
            "+*********67",
        )
        assert entry.detail == {**erased.counts, "in_progress": 0}
    finally:
        await engine.dispose()
    if dialect_of(migrated_url) == "sqlite":
        data = await asyncio.to_thread(Path(migrated_url.removeprefix("sqlite:///").split("?")[0]).read_bytes)
        for trace in (b"zanzibar", b"quokka", b"marmalade", b"4155550167"):
            assert trace not in data  # not in a free page either: deleted with secure_delete
        assert b"aubergine" in data


async def test_a_second_erasure_answers_zeros_and_is_audited_again(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    try:
        await insert(engine, call_everywhere("CAerase1", NUMBER, ERASED_WORDS))
        for _ in range(2):
            calls, in_progress = await erasure.number_calls(engine, NUMBER)
            erased = await erasure.erase_number(
                engine, NUMBER, calls, in_progress=in_progress, request=WHO, audio=None, outside={}
            )
        assert erased.counts == erasure.no_counts()
        assert [entry.detail["calls"] for entry in await audit_entries(engine)] == [0, 1]
    finally:
        await engine.dispose()


async def test_a_call_still_on_is_left_and_named(migrated_url: str) -> None:
    """An active call's live session would write it again: it is not erased, and the answer says which it is."""
    engine = create_engine(migrated_url)
    try:
        await insert(engine, call_everywhere("CAended", NUMBER, ERASED_WORDS))
        await insert(engine, call_everywhere("CAon", NUMBER, KEPT_WORDS, status="active"))
        assert await erasure.number_calls(engine, NUMBER) == (["CAended"], ["CAon"])
    finally:
        await engine.dispose()


async def test_deleting_a_call_is_the_same_cascade_and_audited(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    try:
        await insert(engine, call_everywhere("CA1", NUMBER, ERASED_WORDS))
        await insert(engine, call_everywhere("CA2", NUMBER, KEPT_WORDS))
        erased = await erasure.delete_call(engine, "CA1", request=WHO)
        assert erased.counts == {**erasure.no_counts(), **ONE_CALL}
        missing = await erasure.delete_call(engine, "CA1", request=WHO)
        assert missing.counts == erasure.no_counts()
        assert [(e.action, e.subject) for e in await audit_entries(engine)] == [(AuditAction.DELETE_CALL, "CA1")]
        assert await queries.get_call(engine, "CA2") is not None
    finally:
        await engine.dispose()


async def test_retention_is_the_same_cascade(migrated_url: str) -> None:
    """RETENTION_DAYS takes an old call from every place, its spool audio included; a newer one stays whole."""
    engine = create_engine(migrated_url)
    try:
        await insert(engine, call_everywhere("CAold", NUMBER, ERASED_WORDS))
        newer = call_everywhere("CAnew", OTHER, KEPT_WORDS)
        newer[0].started_at = newer[9].started_at = T0 + datetime.timedelta(days=40)  # the call and its stream
        await insert(engine, newer)
        assert await purge_older_than(engine, 30, T0 + datetime.timedelta(days=45)) == 1
        after = await every_value(engine)
        assert "zanzibar" not in after
        assert "aubergine" in after
        async with engine.connect() as connection:
            counts = {
                name: await connection.scalar(select(func.count()).select_from(table)) for name, table in erasure.PLACES
            }
        assert counts == {name: n for name, n in ONE_CALL.items() if name in counts}
    finally:
        await engine.dispose()


async def test_a_segment_erased_while_batch_transcribes_it_is_no_longer_kept(migrated_url: str) -> None:
    """The batch worker asks `kept` before it delivers: an erasure in between means nothing is delivered."""
    engine = create_engine(migrated_url)
    try:
        await insert(engine, call_everywhere("CA1", NUMBER, ERASED_WORDS))
        spool = DatabaseSpool(lambda: engine, owner="t", max_bytes=10**6, lease_s=60, retention_days=None,
                              audio=ChunkAudio())  # fmt: skip
        claimed = await spool.claim()
        assert claimed is not None
        assert await spool.kept(claimed["id"])
        await erasure.delete_call(engine, "CA1")
        assert not await spool.kept(claimed["id"])
    finally:
        await engine.dispose()


async def test_the_scan_reads_every_table(migrated_url: str) -> None:
    """The helper the erasure tests trust reads the tables the schema has (and on SQLite the index's own)."""
    engine = create_engine(migrated_url)
    try:
        names = set(await table_names(engine))
    finally:
        await engine.dispose()
    assert set(Base.metadata.tables) <= names
    if dialect_of(migrated_url) == "sqlite":
        assert "utterances_fts_data" in names
