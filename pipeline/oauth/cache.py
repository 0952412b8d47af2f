"""Tokens in memory: a signing-in section (`[imap]`, `[smtp]`) in, its `TokenSource` out.

Sources share one cache per table and mailbox, so the poller, the IDLE watcher and the SMTP
sender reuse one token; it lives in memory only and is fetched again once less than 5 minutes
or a tenth of its life is left, whichever is less. `TokenSource.sign_in` tries a token and,
when the server refuses it, drops it and tries a new one once.

Whatever goes wrong in a provider is a TokenError (or a ConfigError naming a key): a library
that chokes on an answer (a proxy's HTML page, a JSON list, an `expires_in` of "soon") gives
"no usable token answer" with the exception's class, never the exception itself, so that a
sender sees a sign-in problem and not a fault of the mail.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pipeline.config import ConfigError, OAuth2Config, SignIn
from pipeline.oauth.answers import unusable
from pipeline.oauth.errors import TokenError
from pipeline.oauth.providers import Provider, provider

log = logging.getLogger(__name__)

T = TypeVar("T")

REFRESH_MARGIN = 300.0  # a token is renewed this many seconds before it expires ...
REFRESH_FRACTION = 0.1  # ... or this share of its life, whichever is less


@dataclass(frozen=True)
class Token:
    """A cached token and when it expires (`time.monotonic()`)."""

    value: str = field(repr=False)
    lifetime: float
    expires: float

    def fresh(self, now: float) -> bool:
        """Whether it may still be used: more than the refresh margin of its life is left."""
        margin = min(REFRESH_MARGIN, REFRESH_FRACTION * self.lifetime)
        return now < self.expires - margin


class _Cache:
    """One token of one table and mailbox, shared by every TokenSource of them."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._lock = threading.Lock()  # one fetch at a time; the others wait for its token
        self._token: Token | None = None

    def get(self, where: str) -> str:
        with self._lock:
            now = time.monotonic()
            if self._token is None or not self._token.fresh(now):
                self._token = None
                try:
                    grant = self.provider.fetch(where)
                except (TokenError, ConfigError):
                    raise
                except Exception as exc:  # a library choked on the answer: its class only
                    raise unusable(self.provider.endpoint(where), type(exc).__name__) from None
                self._token = Token(grant.token, grant.lifetime, now + grant.lifetime)
                log.info(
                    "%s: new access token from %s (valid %d s)",
                    where,
                    self.provider.host,
                    grant.lifetime,
                )
            return self._token.value

    def drop(self, value: str | None) -> None:
        with self._lock:
            if self._token is not None and value in (None, self._token.value):
                self._token = None


class TokenSource:
    """Access tokens for one section (`where`: its table, e.g. `imap.oauth2`, for messages)."""

    def __init__(self, where: str, cache: _Cache) -> None:
        self.where = where
        self._cache = cache

    def __repr__(self) -> str:
        return f"TokenSource({self.where}, {self._cache.provider.host})"

    def token(self) -> str:
        """A token that is valid for a while yet: the cached one, or a new one."""
        return self._cache.get(self.where)

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (only if it is still `token`, when given): a server
        refused it, so the next `token()` fetches a new one."""
        self._cache.drop(token)

    def sign_in(
        self,
        attempt: Callable[[str], T],
        refused: type[BaseException] | tuple[type[BaseException], ...],
    ) -> T:
        """`attempt(token)`; when it raises `refused` (the server refused the token, which
        may have been revoked), the token is dropped and a new one is tried once."""
        token = self.token()
        try:
            return attempt(token)
        except refused:
            self.invalidate(token)
            log.info("%s: the server refused the access token; trying a new one", self.where)
        return attempt(self.token())


_caches: dict[tuple[OAuth2Config, str], _Cache] = {}
_caches_lock = threading.Lock()


def token_source(config: SignIn) -> TokenSource:
    """The token source of a section that signs in with `auth = "oauth2"`."""
    oauth2, username = config.oauth2, config.username
    if oauth2 is None:
        raise ConfigError(f'{config.section}.auth = "oauth2" needs an [{config.section}.oauth2]')
    if not username:
        raise ConfigError(f'{config.section}.username: auth = "oauth2" needs the mailbox')
    with _caches_lock:
        cache = _caches.get((oauth2, username))
        if cache is None:
            cache = _caches[(oauth2, username)] = _Cache(provider(oauth2, username))
    return TokenSource(config.credential_key, cache)


def forget_tokens() -> None:
    """Drop every cached token and provider (a new configuration; tests)."""
    with _caches_lock:
        _caches.clear()
