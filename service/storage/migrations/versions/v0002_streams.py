"""Streams: the record of which streams were let in, and which stream each utterance came from.

`streams` is what `storage/streams.py` claims a stream in, so a captured `start` replayed in another process is
refused there too: its primary key says a streamSid starts once, and a partial unique index says a call has one
first stream (hand-overs, first_stream false, are not limited). `utterances.stream_sid` is part of the keys new
rows get (call/stream/track/start), so a second stream of a call never overwrites the first one's words. Rows
stored before this revision keep their keys and get an empty stream_sid: nothing here rewrites a transcript.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("stream_sid", sa.String(64), nullable=False),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("track", sa.String(16), nullable=False),
        sa.Column("first_stream", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("stream_sid", name="pk_streams"),
    )
    op.create_index("ix_streams_call_sid", "streams", ["call_sid"])
    op.create_index(
        "uq_streams_first_stream_call_sid", "streams", ["call_sid"], unique=True,
        sqlite_where=sa.text("first_stream"), postgresql_where=sa.text("first_stream"),
    )  # fmt: skip
    # SQLite adds a NOT NULL column in place when it has a default, so no table is copied on either backend.
    op.add_column("utterances", sa.Column("stream_sid", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    # SQLite drops a column by copying the table (batch mode); PostgreSQL alters it in place.
    with op.batch_alter_table("utterances") as batch:
        batch.drop_column("stream_sid")
    op.drop_index("uq_streams_first_stream_call_sid", table_name="streams")
    op.drop_index("ix_streams_call_sid", table_name="streams")
    op.drop_table("streams")
