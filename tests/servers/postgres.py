"""A fresh, empty PostgreSQL database per test on the machine's server.

In: PostgreSQL on 127.0.0.1:5432 with trust authentication for user ``postgres``.
Out: ``pg_url``, an SQLAlchemy URL (``postgresql+psycopg://…``) of a database made for
this test and dropped after it (its connections are ended first). Creating one takes
about 50 ms. A server that does not answer fails the test with how to start it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

HOST = "127.0.0.1"
PORT = 5432
USER = "postgres"
START_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def admin_connection() -> psycopg.Connection:
    """An autocommit connection to the ``postgres`` database, or a failed test."""
    try:
        return psycopg.connect(
            host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL does not answer on {HOST}:{PORT} as user {USER} ({error}). "
            f"Start it with `{START_HINT}` (tests/run.sh does this), then run again.",
            pytrace=False,
        )


def create_database(prefix: str = "intake_test") -> str:
    """Create an empty database with a random name and return the name."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    """Drop ``name``, ending any connection still open to it."""
    with admin_connection() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_url(name: str) -> str:
    """The SQLAlchemy URL of database ``name`` (driver psycopg 3)."""
    return f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{name}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a new empty database, dropped after the test."""
    name = create_database()
    try:
        yield database_url(name)
    finally:
        drop_database(name)
