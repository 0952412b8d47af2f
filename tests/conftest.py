"""Shared pytest fixtures. Keep each kind in its own section; add new sections below."""

from __future__ import annotations

import pytest

# -- Real servers (tests/servers/) ---------------------------------------------------
# dovecot / dovecot_server / dovecot_factory: IMAP; smtp_sink: SMTP with scripted
# faults; gpg_keys: session OpenPGP keys; pg_url: a fresh PostgreSQL database per test;
# tls_files: a session CA and loopback server certificate (Dovecot tls=, SmtpSink
# tls_context=); smtp_sink_factory: sinks with STARTTLS/implicit TLS and XOAUTH2;
# token_server / tokens / google_service_account: a local OAuth2 authorisation server.
from tests.servers.dovecot import dovecot, dovecot_factory, dovecot_server
from tests.servers.gpg import gpg_keys
from tests.servers.postgres import pg_url
from tests.servers.smtp import smtp_sink, smtp_sink_factory
from tests.servers.tls import tls_files
from tests.servers.tokens import google_service_account, token_server, tokens

__all__ = [
    "dovecot",
    "dovecot_factory",
    "dovecot_server",
    "google_service_account",
    "gpg_keys",
    "pg_url",
    "smtp_sink",
    "smtp_sink_factory",
    "tls_files",
    "token_server",
    "tokens",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses ``pg_url`` with ``postgres`` (``-m "not postgres"``)."""
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
