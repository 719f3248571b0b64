"""Alerts: the live alerts each call raised (ALERT_RULES), one row per alert, deleted with its call.

`alert_id` is the alert's stable id (the call, the rule and the start of the words that fired it, hashed), so
the same alert raised again (a retry, a journal replay, a second process that heard the same words) is one row.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(length=64), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("speaker", sa.String(length=64), nullable=False),
        sa.Column("track", sa.String(length=16), nullable=False),
        sa.Column("phrase", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["call_sid"], ["calls.call_sid"], name="fk_alerts_call_sid_calls", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("alert_id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_call_start", "alerts", ["call_sid", "start"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_alerts_call_start", table_name="alerts")
    op.drop_table("alerts")
