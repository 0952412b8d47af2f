"""Migrations: a new database, and one made by `create_all` before migrations existed, both end
at the schema the models describe (SQLite and PostgreSQL), and the old one keeps its rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text
from sqlmodel import SQLModel

from pipeline.store import BASELINE, MIGRATIONS, make_engine


def differences(engine: Engine) -> list[object]:
    """What Alembic would change to make the database match the models (types aside: the
    migrations spell sqlmodel's types in plain SQLAlchemy)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        return list(compare_metadata(context, SQLModel.metadata))


def test_a_new_sqlite_database_matches_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'intake.db'}")
    assert differences(engine) == []
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_a_new_postgres_database_matches_the_models(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        assert differences(engine) == []
    finally:
        engine.dispose()


def legacy_database(url: str) -> None:
    """The schema as `create_all` made it before migrations (the baseline, which was checked
    against those models when it was written) without Alembic's table, and one report in it."""
    engine = create_engine(url)
    with engine.begin() as connection:
        settings = AlembicConfig()
        settings.set_main_option("script_location", str(MIGRATIONS))
        settings.attributes["connection"] = connection
        command.upgrade(settings, BASELINE)
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(
            text(
                "INSERT INTO report (reference, source, fingerprint, received_at, month, "
                "anonymous, urgent, state, created_at, updated_at) VALUES ('R-2026-000001', "
                "'email', 'f1', '2026-11-01 10:00:00+00', '2026-11', false, false, 'delivered', "
                "'2026-11-01 10:00:00+00', '2026-11-01 10:00:00+00')"
            )
        )
    engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_database_from_before_migrations_is_stamped_and_upgraded(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'old.db'}"
        if database == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    legacy_database(url)
    engine = make_engine(url)
    try:
        assert differences(engine) == []
        assert "source_status" in inspect(engine).get_table_names()
        with engine.connect() as connection:
            kept = connection.execute(text("SELECT reference, state FROM report")).all()
            urgent = connection.execute(text("SELECT count(*) FROM outbox WHERE urgent")).scalar()
        assert [tuple(row) for row in kept] == [("R-2026-000001", "delivered")]
        assert urgent == 0
    finally:
        engine.dispose()
    again = make_engine(url)  # a second start changes nothing and fails on nothing
    assert differences(again) == []
    again.dispose()
