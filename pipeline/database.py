"""Database: `database.url` in, an engine on a current schema out.

Opening the database takes `database.url` (SQLite or PostgreSQL; anything else is a
DatabaseError saying what to fix). `make_engine` (the daemon, and commands run as its user)
upgrades its schema with the Alembic migrations in `migrations/`, one process at a time (a
schema at the newest revision the migration files name is told so without importing Alembic,
`at_head`: some 11 MB the daemon need not hold);
`open_current` (commands that only read, whoever runs them) creates and changes nothing and
refuses a schema that is not current; `schema_revision` tells whether it is. Locks: the
migration lock (a `flock`, or PostgreSQL's advisory lock), and `source_lease` so that one
PostgreSQL instance at a time polls a source. `reclaim` leaves no erased data in the files.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL, Connection, Engine, event, inspect, make_url, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlmodel import Session, create_engine

from pipeline import audit
from pipeline.audit import make_append_only

if TYPE_CHECKING:  # Alembic (some 11 MB) is imported where a schema is read or changed with it
    from alembic.script import ScriptDirectory


class DatabaseError(Exception):
    """The database at `database.url` cannot be used as it is: the message says why and what to
    check, and shows the URL without its password."""


URL_FORMS = "sqlite:///PATH or postgresql+psycopg://USER@HOST/NAME"
MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the schema `create_all` made before migrations existed


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # freed and rewritten space is zeroed
    cursor.close()


def shown(url: URL) -> str:
    """A database URL fit for a message: its password hidden."""
    return url.render_as_string(hide_password=True)


def database_url(url: str) -> URL:
    """`url` parsed: SQLite, or PostgreSQL (with psycopg 3 unless the URL names a driver)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"not a database URL: use {URL_FORMS}") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"{shown(parsed)}: unknown database dialect {backend!r}: use {URL_FORMS}"
        )
    if parsed.drivername == "postgresql":  # SQLAlchemy's default would be psycopg2
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite database; None for an in-memory one or another dialect."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return None if url.query.get("uri") else Path(str(url.database))


SQLITE_NEEDED = (3, 35)  # the oldest SQLite library that runs UPDATE ... RETURNING


def open_engine(url: str) -> Engine:
    """An engine for `url` (SQLite in WAL mode, or PostgreSQL); nothing is connected, created or
    migrated yet. DatabaseError for another dialect, a driver that is not installed, a SQLite
    file whose folder is not there, or a SQLite library older than `SQLITE_NEEDED`."""
    parsed = database_url(url)
    path = sqlite_path(parsed)
    if path is not None and not path.parent.is_dir():
        raise DatabaseError(f"{shown(parsed)}: the folder {path.parent} does not exist")
    try:  # hide_parameters: no data in errors
        engine = create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    except (ImportError, NoSuchModuleError):
        driver = parsed.get_driver_name()
        fix = "pip install 'report-intake[postgres]'" if driver == "psycopg" else f"use {URL_FORMS}"
        raise DatabaseError(f"{shown(parsed)}: driver {driver!r} is not installed: {fix}") from None
    if engine.dialect.name == "sqlite":
        if sqlite3.sqlite_version_info < SQLITE_NEEDED:  # UPDATE ... RETURNING (settle_reports)
            needed = ".".join(map(str, SQLITE_NEEDED))
            raise DatabaseError(
                f"{shown(parsed)}: SQLite {needed} or newer is needed; this Python has "
                f"{sqlite3.sqlite_version}: use a newer Python or PostgreSQL"
            )
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def cannot_open(url: URL, error: OperationalError) -> str:
    """One line on a database that could not be opened, with what to check."""
    cause = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
    if url.get_backend_name() == "postgresql":
        hint = "is the server up, does the database exist (createdb), may this user connect?"
    else:
        hint = "may this user read and write the file and its folder?"
    return f"cannot open {shown(url)}: {cause} ({hint})"


@contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction; DatabaseError when the database cannot be opened."""
    try:
        connection = engine.connect()
    except OperationalError as exc:
        raise DatabaseError(cannot_open(engine.url, exc)) from None
    with connection, connection.begin():
        yield connection


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """One process at a time upgrades a SQLite file: an exclusive `flock` on the folder that
    holds it, opened read-only. No lock file is made, so none is left that the daemon's user
    cannot open after root ran an upgrade (a directory takes a flock like a file). Nothing to do
    elsewhere: PostgreSQL takes an advisory lock in the upgrade's own transaction, and an
    in-memory database is one process's own."""
    path = sqlite_path(engine.url)
    if path is None:
        yield
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise DatabaseError(
            f"{shown(engine.url)}: cannot open {path.parent}: {exc.strerror}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


#: The newest migration's revision. A new migration sets it too (a test holds it to Alembic's
#: head), so that a daemon starting on a current schema need not import Alembic to know it.
SCHEMA_HEAD = "0003"


def at_head(connection: Connection) -> str | None:
    """The schema's revision when it is the newest (`SCHEMA_HEAD`): an upgrade has nothing to
    do and Alembic need not be imported. None otherwise."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return SCHEMA_HEAD if [tuple(row) for row in rows] == [(SCHEMA_HEAD,)] else None


def migrate(connection: Connection) -> str | None:
    """Bring the schema to the newest migration, in the caller's transaction; the revision it
    was at (None: a new database). A database made before migrations (tables, no
    `alembic_version`) is stamped at the baseline first. DatabaseError for a revision this
    version does not know (a newer version upgraded the database)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from alembic.migration import MigrationContext

    settings = AlembicConfig()
    settings.set_main_option("script_location", str(MIGRATIONS))
    settings.attributes["connection"] = connection
    before = MigrationContext.configure(connection).get_current_revision()
    if before is None and "report" in inspect(connection).get_table_names():
        command.stamp(settings, BASELINE)
        before = BASELINE
    elif before is not None and before not in known_revisions():
        head = str(_scripts().get_current_head())
        raise DatabaseError(": ".join(schema_lag(connection.engine.url, before, head)))
    command.upgrade(settings, "head")
    return before


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest migration, one process at a time (PostgreSQL: an advisory
    lock for the transaction; SQLite: `migration_lock`), with the audit log's append-only
    triggers; an upgrade of an existing schema is one audit line. (revision before, after)."""
    with migration_lock(engine), _transaction(engine) as connection:
        if engine.dialect.name == "postgresql":  # instances starting together take turns
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key("schema")})
        current = at_head(connection)  # when it is, there is nothing for Alembic to do
        head = current or str(_scripts().get_current_head())
        before = current if current is not None else migrate(connection)
        make_append_only(connection)
        if before not in (None, head):
            with Session(connection) as session:
                detail = f"schema upgraded from {before} to {head}"
                audit.record(session, "schema", None, detail, audit.current_user())
                session.flush()
    return before, head


def schema_revision(engine: Engine) -> tuple[str | None, str]:
    """(the database's schema revision, the newest this version knows), changing nothing (a
    SQLite file that is not there is not made). The first is None for a database without a
    schema or one made before migrations. DatabaseError when it cannot be opened."""
    head = str(_scripts().get_current_head())
    path = sqlite_path(engine.url)
    if path is not None and not path.exists():
        return None, head
    from alembic.migration import MigrationContext

    with _transaction(engine) as connection:
        return MigrationContext.configure(connection).get_current_revision(), head


UPGRADE = "run intake db upgrade as the daemon's user, or start the daemon (it upgrades at start)"


def schema_lag(url: URL, current: str | None, head: str) -> tuple[str, str]:
    """What a schema that is not at `head` means (a database to be made, one behind, one a
    newer version upgraded) and what to do: (found, fix), for a command that never upgrades."""
    where = shown(url)
    path = sqlite_path(url)
    if current is None and path is not None and not path.exists():
        fix = "start the daemon (it creates it), or run intake db upgrade as the daemon's user"
        return f"{where}: no database yet", fix
    if current is None:
        return f"{where}: no schema, or one from before migrations (newest: {head})", UPGRADE
    if current not in known_revisions():
        found = f"{where}: schema at revision {current}, which this version does not know"
        return found, f"a newer version (newest here: {head}) upgraded it: run that version"
    return f"{where}: schema at revision {current}, this version's newest is {head}", UPGRADE


def open_current(url: str) -> Engine:
    """An engine for `url` whose schema is the newest, for a command that only reads: nothing
    is created, migrated or locked (no file is left that the daemon's user could not open).
    DatabaseError when it cannot be opened or its schema is not current (`schema_lag`)."""
    engine = open_engine(url)
    try:
        current, head = schema_revision(engine)
    except BaseException:
        engine.dispose()
        raise
    if current != head:
        engine.dispose()
        raise DatabaseError(": ".join(schema_lag(engine.url, current, head)))
    return engine


def make_engine(url: str) -> Engine:
    """An engine for `url` (`open_engine`) with the schema upgraded to the newest version
    (`upgrade`): for the daemon and the commands that run as its user. DatabaseError when the
    database cannot be opened or upgraded."""
    engine = open_engine(url)
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def reclaim(engine: Engine, *, vacuum: bool = False) -> None:
    """Leave no erased data in the database files where the database allows it. SQLite (with
    secure_delete on) checkpoints the WAL into the main file and truncates it; PostgreSQL, with
    `vacuum`, VACUUMs the tables that held sealed or encrypted data (outside a transaction)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    elif vacuum and engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in ("outbox", "encrypted_record", "ack_sent"):
                connection.exec_driver_sql(f"VACUUM {table}")


def _lock_key(name: str) -> int:
    """A PostgreSQL advisory lock number for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def source_lease(engine: Engine, name: str) -> Iterator[bool]:
    """Whether this instance may poll the source `name` now: on PostgreSQL one instance at a
    time holds a session advisory lock for it; SQLite is single-instance, so always."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = _lock_key(f"source:{name}")
    with engine.connect() as connection:
        got = bool(connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        connection.commit()
        try:
            yield got
        finally:
            if got:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()
