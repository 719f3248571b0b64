"""Transcript search: the full-text index of utterances, built for the calls already stored.

SQLite gets an FTS5 table over `utterances.text` (external content: the text is not stored twice) with the
triggers that keep it in step with every insert, upsert and delete, then `rebuild` indexes every existing row.
PostgreSQL gets a GIN index on `to_tsvector('simple', text)`, which indexes the existing rows as it is built.
The statements are `schema.py`'s, so a database made with `create_all` has the very same index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

from service.storage.schema import POSTGRES_SEARCH_DDL, SQLITE_SEARCH_DDL

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE_SEARCH_DDL if sqlite else POSTGRES_SEARCH_DDL:
        op.execute(statement)
    if sqlite:
        op.execute("INSERT INTO utterances_fts(utterances_fts) VALUES ('rebuild')")  # the utterances stored so far


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("utterances_fts_ai", "utterances_fts_ad", "utterances_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS utterances_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_utterances_text_search")
