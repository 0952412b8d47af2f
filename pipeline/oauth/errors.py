"""What can go wrong getting a token: `TokenError`; and the optional libraries (msal,
google-auth, requests), imported when first needed with a hint to install them when missing.

Importing this module also quiets the libraries' own loggers below CRITICAL: msal logs a token
answer it cannot parse whole, at ERROR with a traceback (an endpoint that echoes the request
puts the client secret there), and google-auth can log requests and answers (the signed
assertion). Our own TokenError says what went wrong, without them.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

INSTALL = "pip install 'report-intake[oauth]'"
LIBRARY_LOGGERS = ("msal", "google.auth", "google.oauth2")

for _name in LIBRARY_LOGGERS:
    logging.getLogger(_name).setLevel(logging.CRITICAL)


class TokenError(Exception):
    """No access token: the message names the table, the token endpoint's host and what to
    check; `code` is the provider's error code when it gave one; `transient` when the endpoint
    could not be reached or failed (network, timeout, HTTP 5xx or 429): it is worth trying again
    later, and nothing in the configuration is known to be wrong. Never a secret."""

    def __init__(self, message: str, *, code: str | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


def library(module: str, package: str, where: str) -> Any:
    """Import an optional library (or our module that needs it), or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TokenError(
            f"{where}: OAuth2 sign-in needs the Python package {package}: {INSTALL}"
        ) from None
