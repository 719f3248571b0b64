"""Calls, their final utterances, and webhook deliveries.

Written by hand from `service/storage/schema.py`: a migration is a fixed step, so it never imports the models.
Constraint and index names are spelled out as the models' naming convention makes them, so later revisions can name
them.

Revision ID: 0001
Revises:
Create Date: 2025-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("stream_sid", sa.String(64), nullable=False),
        sa.Column("account_sid", sa.String(64), nullable=False),
        sa.Column("from_number", sa.String(64), nullable=False),
        sa.Column("to_number", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(32), nullable=False),
        sa.Column("custom_parameters", sa.JSON(), nullable=False),
        sa.Column("tracks", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ended_by", sa.Text(), nullable=True),
        sa.Column("deepgram_request_ids", sa.JSON(), nullable=False),
        sa.Column("audio_s_inbound", sa.Float(), nullable=False),
        sa.Column("audio_s_outbound", sa.Float(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("call_sid", name="pk_calls"),
    )
    op.create_index("ix_calls_from_number", "calls", ["from_number"])
    op.create_index("ix_calls_to_number", "calls", ["to_number"])
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_index("ix_calls_status", "calls", ["status"])

    op.create_table(
        "utterances",
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("track", sa.String(16), nullable=False),
        sa.Column("speaker", sa.String(64), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("words", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_utterances"),
        sa.ForeignKeyConstraint(
            ["call_sid"], ["calls.call_sid"], name="fk_utterances_call_sid_calls", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_utterances_call_start", "utterances", ["call_sid", "start"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_call_sid", "webhook_deliveries", ["call_sid"])
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_call_sid", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_utterances_call_start", table_name="utterances")
    op.drop_table("utterances")
    op.drop_index("ix_calls_status", table_name="calls")
    op.drop_index("ix_calls_started_at", table_name="calls")
    op.drop_index("ix_calls_to_number", table_name="calls")
    op.drop_index("ix_calls_from_number", table_name="calls")
    op.drop_table("calls")
