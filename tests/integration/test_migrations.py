"""Migrations: a new database, one made by `create_all` before migrations existed and one left
by release 0.1.0 (tests/data/) all end at the schema the models describe (SQLite and
PostgreSQL) and keep every row; processes upgrading one SQLite file take turns; a database a
newer version upgraded is refused."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import Engine, MetaData, create_engine, inspect, select, text
from sqlmodel import SQLModel

from pipeline.store import (
    BASELINE,
    MIGRATIONS,
    DatabaseError,
    make_engine,
    migration_lock,
    open_engine,
    schema_revision,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


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


def database_for(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of an empty database: a SQLite file, or a PostgreSQL database (`pg_url`)."""
    return (
        f"sqlite:///{tmp_path / 'intake.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("pg_url")
    )


def load_release_0_1_0(kind: str, url: str) -> None:
    """Load the database release 0.1.0 left (its SQL dump in tests/data/) into `url`."""
    dump = (DATA / f"release-0.1.0.{kind}.sql").read_text()
    if kind == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.executescript(dump)
        return
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as connection:
        connection.execute(dump)  # no parameters: psycopg sends it as one script


def table_rows(
    engine: Engine, columns: dict[str, list[str]]
) -> dict[str, list[tuple[object, ...]]]:
    """Every row of each table, the given columns only, in a stable order."""
    metadata = MetaData()
    metadata.reflect(engine)
    rows = {}
    with engine.connect() as connection:
        for name, names in columns.items():
            table = metadata.tables[name]
            query = select(*(table.c[c] for c in names)).order_by(*(table.c[c] for c in names))
            rows[name] = [tuple(row) for row in connection.execute(query)]
    return rows


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_database_left_by_release_0_1_0_upgrades_without_loss(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = database_for(kind, tmp_path, request)
    load_release_0_1_0(kind, url)
    plain = create_engine(url)
    tables = [name for name in inspect(plain).get_table_names() if name != "alembic_version"]
    columns = {name: [c["name"] for c in inspect(plain).get_columns(name)] for name in tables}
    before = table_rows(plain, columns)
    plain.dispose()
    assert len(before["report"]) == 6 and len(before["outbox"]) == 11
    assert all(before.values()), "every table of the release holds rows"

    engine = make_engine(url)
    try:
        assert differences(engine) == []
        after = table_rows(engine, columns)
        upgrades = after["audit"][len(before["audit"]) :]  # one line for each upgrade, added
        assert upgrades and all("schema upgraded from" in str(line) for line in upgrades)
        del after["audit"][len(before["audit"]) :]
        assert after == before  # every row, every old column, unchanged
        current, head = schema_revision(engine)
        assert current == head
    finally:
        engine.dispose()


def test_processes_upgrading_one_sqlite_file_take_turns(tmp_path: Path) -> None:
    """While one process holds the upgrade lock, another starting on the same file waits
    before it touches the database, then upgrades it when the lock is free."""
    database = tmp_path / "intake.db"
    url = f"sqlite:///{database}"
    engine = open_engine(url)
    start = "import sys; from pipeline.store import make_engine; make_engine(sys.argv[1])"
    with migration_lock(engine):
        other = subprocess.Popen([sys.executable, "-c", start, url], cwd=REPO)
        with pytest.raises(subprocess.TimeoutExpired):
            other.wait(timeout=1.5)
        assert not database.exists()
    assert other.wait(timeout=30) == 0
    assert differences(engine) == []
    engine.dispose()


def test_an_upgrade_leaves_no_lock_file_beside_the_database(tmp_path: Path) -> None:
    """The lock is the folder's own: root upgrading leaves no file the daemon cannot open."""
    make_engine(f"sqlite:///{tmp_path / 'intake.db'}").dispose()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["intake.db"]


def test_looking_at_the_revision_of_a_missing_sqlite_file_makes_no_file(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'intake.db'}")
    current, head = schema_revision(engine)
    assert current is None and head
    assert not (tmp_path / "intake.db").exists()


def test_an_upgrade_of_an_existing_schema_is_one_audit_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    legacy_database(url)
    engine = make_engine(url)
    head = schema_revision(engine)[1]
    with engine.connect() as connection:
        lines = connection.execute(text("SELECT action, detail FROM audit")).all()
    engine.dispose()
    assert [tuple(line) for line in lines] == [
        ("schema", f"schema upgraded from {BASELINE} to {head}")
    ]


def test_a_database_a_newer_version_upgraded_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    make_engine(url).dispose()
    with sqlite3.connect(tmp_path / "intake.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(
        DatabaseError, match=r"revision 9999, which this version .* a newer version"
    ):
        make_engine(url)
