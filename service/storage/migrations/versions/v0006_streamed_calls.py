"""Streamed calls: a call that has had its first stream keeps the CallSid and a time in `streamed_calls`, past
its deletion (`DELETE /api/calls/{sid}`) and RETENTION_DAYS, so a replayed `/voice` request cannot plant it again.

The new table is filled from what the database already knows: every call's first stream in `streams`, and every
stored call (a call row exists only for a call whose stream started), each at its earliest time. Calls deleted
before this migration left nothing behind, so nothing can bring their record back. Down, the table goes; no other
table changes either way.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Plain SQL both backends run alike; `first_stream` is a boolean on PostgreSQL and 0/1 on SQLite.
_BACKFILL = """
INSERT INTO streamed_calls (call_sid, first_stream_at)
SELECT call_sid, MIN(started_at) FROM (
    SELECT call_sid, started_at FROM streams WHERE first_stream
    UNION ALL
    SELECT call_sid, started_at FROM calls
) AS streamed
GROUP BY call_sid
"""


def upgrade() -> None:
    op.create_table(
        "streamed_calls",
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("first_stream_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_sid", name="pk_streamed_calls"),
    )
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.drop_table("streamed_calls")
