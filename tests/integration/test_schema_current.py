"""A schema that is current is told so without Alembic: `SCHEMA_HEAD` is Alembic's head, an
upgrade of a current database changes nothing and imports no Alembic, and one that is behind
(or has no revision) is still upgraded by Alembic."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import text

from pipeline.database import SCHEMA_HEAD, DatabaseError, _scripts, at_head, known_revisions
from pipeline.store import MIGRATIONS, make_engine, open_engine, schema_revision, upgrade

REPO = Path(__file__).resolve().parents[2]


def test_schema_head_is_alembics_head_a_new_migration_sets_it_too() -> None:
    assert str(_scripts().get_current_head()) == SCHEMA_HEAD
    assert SCHEMA_HEAD in known_revisions()


def test_a_current_schema_is_upgraded_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    make_engine(url).dispose()  # made, at the head
    script = (
        "import sys\nfrom pipeline.store import make_engine, upgrade\n"
        f"engine = make_engine({url!r})\nprint(upgrade(engine), 'alembic' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    head = SCHEMA_HEAD
    assert done.stdout.split("\n")[0] == f"({head!r}, {head!r}) False"


def test_a_schema_behind_is_upgraded_by_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    engine = make_engine(url)
    head = SCHEMA_HEAD
    with engine.begin() as connection:
        assert at_head(connection) == head
        settings = AlembicConfig()
        settings.set_main_option("script_location", str(MIGRATIONS))
        settings.attributes["connection"] = connection
        command.downgrade(settings, "-1")
        assert at_head(connection) is None
    previous = _scripts().get_revision(head).down_revision
    assert upgrade(engine) == (previous, head)
    assert schema_revision(open_engine(url)) == (head, head)
    with engine.connect() as connection:
        assert at_head(connection) == head


def test_a_database_without_a_revision_is_not_current(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'intake.db'}")
    with engine.connect() as connection:
        assert at_head(connection) is None
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        assert at_head(connection) is None


def test_a_current_postgres_schema_is_told_so(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with engine.connect() as connection:
            assert at_head(connection) == SCHEMA_HEAD
        assert upgrade(engine) == (SCHEMA_HEAD, SCHEMA_HEAD)
    finally:
        engine.dispose()


def test_a_sqlite_library_too_old_for_returning_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(DatabaseError) as refused:
        open_engine(f"sqlite:///{tmp_path / 'intake.db'}")
    assert "SQLite 3.35 or newer is needed; this Python has 3.34.1" in str(refused.value)
