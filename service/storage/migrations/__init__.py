"""Storage layer: the Alembic migrations of the schema in `service/db.py`; `service/migrate.py` runs them."""
