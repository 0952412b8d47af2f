"""Real servers for the tests: Dovecot (IMAP), an SMTP sink, gpg keys and PostgreSQL.

Each module holds one server and its pytest fixtures; tests/conftest.py registers them.
"""

from .dovecot import Dovecot, DovecotError
from .gpg import KeySet, make_keyset
from .postgres import create_database, database_url, drop_database
from .smtp import Received, SmtpSink

__all__ = [
    "Dovecot",
    "DovecotError",
    "KeySet",
    "Received",
    "SmtpSink",
    "create_database",
    "database_url",
    "drop_database",
    "make_keyset",
]
