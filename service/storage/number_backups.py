"""Storage layer: the voice webhooks `python -m service twilio configure` replaced, kept until `restore`.

One row per number, written before the number is changed and never overwritten: a second `configure` finds the
number already pointed at callscribe, and saving that would lose what it called before. `restore` reads the row,
puts the webhook back on Twilio's side, then deletes it. Kept in the database because a `heroku run` dyno's files
are gone when the command ends.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import cast

from sqlalchemy import RowMapping, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from service.storage.schema import NumberBackup
from service.times import as_utc, utc_now

BACKUPS: Table = cast(Table, NumberBackup.__table__)


@dataclass(frozen=True, slots=True)
class SavedWebhook:
    """What a number's 'A call comes in' webhook was: its URL ("" for none) and HTTP method."""

    account_sid: str
    number_sid: str
    phone_number: str
    voice_url: str
    voice_method: str
    saved_at: datetime.datetime | None = None


async def keep(engine: AsyncEngine, saved: SavedWebhook) -> SavedWebhook:
    """Store `saved` unless the number already has a backup; the backup the database holds afterwards."""
    row = {
        "number_sid": saved.number_sid, "account_sid": saved.account_sid, "phone_number": saved.phone_number,
        "voice_url": saved.voice_url, "voice_method": saved.voice_method, "saved_at": as_utc(utc_now()),
    }  # fmt: skip
    async with engine.begin() as connection:
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        await connection.execute(insert(BACKUPS).values(row).on_conflict_do_nothing(index_elements=["number_sid"]))
        stored = (await connection.execute(select(BACKUPS).where(BACKUPS.c.number_sid == saved.number_sid))).one()
    return _saved(stored._mapping)


async def saved_for(engine: AsyncEngine, account_sid: str, phone_number: str | None = None) -> list[SavedWebhook]:
    """The account's backups (of one number, when given), oldest first."""
    query = select(BACKUPS).where(BACKUPS.c.account_sid == account_sid)
    if phone_number is not None:
        query = query.where(BACKUPS.c.phone_number == phone_number)
    async with engine.connect() as connection:
        rows = (await connection.execute(query.order_by(BACKUPS.c.saved_at, BACKUPS.c.number_sid))).all()
    return [_saved(row._mapping) for row in rows]


async def forget(engine: AsyncEngine, number_sid: str) -> None:
    """Delete the number's backup (once it has been put back)."""
    async with engine.begin() as connection:
        await connection.execute(delete(BACKUPS).where(BACKUPS.c.number_sid == number_sid))


def _saved(row: RowMapping) -> SavedWebhook:
    return SavedWebhook(
        account_sid=row["account_sid"],
        number_sid=row["number_sid"],
        phone_number=row["phone_number"],
        voice_url=row["voice_url"],
        voice_method=row["voice_method"],
        saved_at=as_utc(row["saved_at"]),
    )
