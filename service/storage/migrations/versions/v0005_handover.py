"""Hand-over: a stream's end in `streams`, and whether a call was handed over in `calls`.

`streams.ended_at` is written after a stream's last words, so the process a hand-over's new stream landed in
knows when the old one's words are all in (`calls/handover.py`). `calls.handed_over` says the call's stream moved
to another process at least once. Both are new columns with defaults: no table is copied on either backend, and
no stored row changes meaning.

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("streams", sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("calls", sa.Column("handed_over", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN in place on both backends (SQLite 3.35+): batch mode would copy `calls`, and
    # dropping the old copy would cascade to every utterance.
    op.execute("ALTER TABLE calls DROP COLUMN handed_over")
    op.execute("ALTER TABLE streams DROP COLUMN ended_at")
