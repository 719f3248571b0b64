"""Coverage: where every second of each stream's track went, one row per category, lost reason or spool entry.

A new table, `coverage`, keyed (call_sid, stream_sid, track, part): `part` is a category (`live`, `replayed`,
`paused`), `lost:<reason>`, or `spool:<entry id>`, whose row moves from `waiting` to `batch` (or `lost`) when
batch transcribes the entry (or gives up on it). Calls stored before this have no rows: their coverage reads as
unknown (null), never as complete. Down, the table goes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coverage",
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("stream_sid", sa.String(64), nullable=False),
        sa.Column("track", sa.String(16), nullable=False),
        sa.Column("part", sa.String(200), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("ms", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_sid", "stream_sid", "track", "part", name="pk_coverage"),
    )


def downgrade() -> None:
    op.drop_table("coverage")
