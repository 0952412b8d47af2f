"""Alembic migrations: the database schema, version by version (`database.make_engine` upgrades)."""
