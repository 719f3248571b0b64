"""Time helpers (no I/O beyond the clock): every time callscribe stores or compares is UTC."""

from __future__ import annotations

import datetime
from collections.abc import Callable

# What a component that stamps or compares times is given, so tests can fix the time: `utc_now` in production.
Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def as_utc(moment: datetime.datetime) -> datetime.datetime:
    """`moment` in UTC. SQLite keeps datetimes as text without an offset and hands them back naive: every one we
    write is UTC, so a naive one is taken as UTC (and they compare as text too)."""
    return moment.replace(tzinfo=datetime.UTC) if moment.tzinfo is None else moment.astimezone(datetime.UTC)
