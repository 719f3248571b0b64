"""Storage layer: the Alembic migrations of the schema in `service/storage/schema.py`; `migrate.py` runs them."""
