"""Storage layer: the Alembic migrations of the schema in `service/storage/schema.py`; `migrate.py` runs them."""

# The newest revision in versions/, named here so that checking a database needs no Alembic import.
# A new migration moves it (tests/storage/test_migrations.py fails until it does).
HEAD_REVISION = "0011"
