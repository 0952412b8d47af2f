"""Alembic migrations: the database schema, version by version (`store.make_engine` upgrades)."""
