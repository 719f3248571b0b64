"""Number backups: the voice webhook a Twilio number had before `python -m service twilio configure` changed it.

Kept in the database rather than a file, because `heroku run` runs the command on a one-off dyno whose files are
gone when it exits. One row per number (its `PN...` SID), never overwritten: `twilio restore` puts it back and
deletes the row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "number_backups",
        sa.Column("number_sid", sa.String(64), nullable=False),
        sa.Column("account_sid", sa.String(64), nullable=False),
        sa.Column("phone_number", sa.String(64), nullable=False),
        sa.Column("voice_url", sa.Text(), nullable=False),
        sa.Column("voice_method", sa.String(8), nullable=False),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("number_sid", name="pk_number_backups"),
    )
    op.create_index("ix_number_backups_phone_number", "number_backups", ["phone_number"])


def downgrade() -> None:
    op.drop_index("ix_number_backups_phone_number", table_name="number_backups")
    op.drop_table("number_backups")
