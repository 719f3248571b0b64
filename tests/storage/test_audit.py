"""The audit log, on SQLite and a real PostgreSQL: an entry commits with the change it records (and not without
it), reads back newest first, per subject, with its counts; numbers are kept masked, names bounded."""

from __future__ import annotations

import datetime

import pytest

from service.storage.audit import ACTOR_MAX, Audited, audit_entries, masked_number, record
from service.storage.schema import create_engine
from service.storage.statuses import AuditAction
from tests.helpers.databases import database_url, migrated_url

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

T0 = datetime.datetime(2026, 12, 7, 18, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("number", "masked"),
    [("+14155550167", "+*********67"), ("14155550167", "*********67"), ("+1", "**"), ("67", "**"), ("", "")],
)
def test_a_number_keeps_only_its_last_two_digits(number: str, masked: str) -> None:
    assert masked_number(number) == masked
    assert len(masked_number(number)) == len(number)


def test_who_asked_is_the_name_given_else_how_the_request_came() -> None:
    assert Audited.of("agent-7", "api 203.0.113.9") == Audited("agent-7", "api 203.0.113.9")
    assert Audited.of("  ", "api 203.0.113.9") == Audited("api", "api 203.0.113.9")
    assert Audited.of(None, "cli") == Audited("cli", "cli")
    assert len(Audited.of("x" * 1000, "cli").actor) == ACTOR_MAX


class Abort(Exception):
    pass


async def test_entries_commit_with_their_change_and_read_back_newest_first(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    try:
        async with engine.begin() as connection:
            await record(connection, AuditAction.PAUSE, Audited.of("agent-7", "api 127.0.0.1"), "CA1",
                         detail={"max_s": 120}, at=T0)  # fmt: skip
            await record(connection, AuditAction.ERASE_NUMBER, Audited.of(None, "cli"), masked_number("+14155550167"),
                         detail={"calls": 2}, at=T0 + datetime.timedelta(seconds=1))  # fmt: skip
        with pytest.raises(Abort):  # a change that rolls back leaves no entry
            async with engine.begin() as connection:
                await record(connection, AuditAction.RESUME, Audited.of(None, "cli"), "CA1", detail={}, at=T0)
                raise Abort
        everything = await audit_entries(engine)
        of_call = await audit_entries(engine, subject="CA1")
    finally:
        await engine.dispose()
    assert [(entry.action, entry.actor, entry.subject, entry.detail) for entry in everything] == [
        ("erase_number", "cli", "+*********67", {"calls": 2}),
        ("pause", "agent-7", "CA1", {"max_s": 120}),
    ]
    assert everything[1].at == T0
    assert everything[1].via == "api 127.0.0.1"
    assert [entry.action for entry in of_call] == ["pause"]
