"""Languages: each utterance's languages in `utterances.languages`, each word's in its entry of `words`.

`languages` is a JSON list of BCP-47 tags, most words first (DEEPGRAM_LANGUAGE=multi); a new column whose
default, `[]`, is what every utterance stored before this said about its language: nothing. A word's language
needs no column: `words` is JSON, and a word stored from now on has a `language` key (null when the engine did
not say), one stored before has none, which reads the same. Down, the column goes in place (no table copied,
so no cascade from `calls`), and the words keep their `language` keys, which the older code ignores.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("utterances", sa.Column("languages", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN in place on both backends (SQLite 3.35+), as 0005 does.
    op.execute("ALTER TABLE utterances DROP COLUMN languages")
