"""Hand-over: a stream's end in `streams`, whether a call was handed over in `calls`; the shared spool.

`streams.ended_at` is written after a stream's last words, so the process a hand-over's new stream landed in
knows when the old one's words are all in (`calls/handover.py`). `calls.handed_over` says the call's stream moved
to another process at least once. Both are new columns with defaults: no table is copied on either backend, and
no stored row changes meaning. `spool_segments` and `spool_chunks` are the spool every process shares on
PostgreSQL (`spool/shared.py`): one row per spooled stretch of audio, with its claim, and its audio in chunks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("streams", sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("calls", sa.Column("handed_over", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "spool_segments",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("stream_sid", sa.String(64), nullable=False),
        sa.Column("track", sa.String(16), nullable=False),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_spool_segments"),
    )
    op.create_index("ix_spool_segments_created_at", "spool_segments", ["created_at"])
    op.create_table(
        "spool_chunks",
        sa.Column("segment_id", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"], ["spool_segments.id"], name="fk_spool_chunks_segment_id_spool_segments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("segment_id", "seq", name="pk_spool_chunks"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("spool_chunks")
    op.drop_index("ix_spool_segments_created_at", table_name="spool_segments")
    op.drop_table("spool_segments")
    # ALTER TABLE ... DROP COLUMN in place on both backends (SQLite 3.35+): batch mode would copy `calls`, and
    # dropping the old copy would cascade to every utterance.
    op.execute("ALTER TABLE calls DROP COLUMN handed_over")
    op.execute("ALTER TABLE streams DROP COLUMN ended_at")
