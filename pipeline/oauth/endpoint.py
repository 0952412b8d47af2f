"""The token endpoint over HTTPS: an `OAuth2Config` in, a requests session for msal,
google-auth or our own POST out, and a request's failure as a `TokenError`.

Whatever the library asks for, the session
- verifies the endpoint's certificate (against `oauth2.ca_file` when set; as an argument it
  wins over REQUESTS_CA_BUNDLE and the like in the environment);
- never follows a redirect: the request carries the client secret or a signed assertion, and a
  redirect would send it on to wherever Location points (plain HTTP, another host). A redirect
  is a failure of the token endpoint that names its key;
- gives up on an answer whose body is not in TIMEOUT seconds after the request was sent,
  however slowly it trickles in (requests' own timeout, TIMEOUT too, is per read: it bounds
  connecting and each read of the status line and headers), and on one over MAX_ANSWER bytes;
- remembers the last answer's HTTP status (`status`): a library that cannot read an answer
  does not say whether the endpoint was failing (5xx, 429: transient) or answered nonsense.

Imported through `errors.library` (it needs requests, an optional package).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from pipeline.config import ConfigError, OAuth2Config
from pipeline.oauth.answers import Endpoint, failed, failing, unusable
from pipeline.oauth.errors import TokenError

T = TypeVar("T")

TIMEOUT = 30.0  # seconds for one request to the token endpoint, its answer read in full
MAX_ANSWER = 1 << 20  # bytes: a token answer is a few kilobytes
CHUNK = 16384


class AnswerTooLong(requests.RequestException):
    """The endpoint's answer went on past MAX_ANSWER bytes."""


class Session(requests.Session):
    """See the module docstring."""

    def __init__(self, verify: str | bool) -> None:
        super().__init__()
        self.verify = verify
        self.status: int | None = None  # of the last answer

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        sent = time.monotonic()
        kwargs.update(timeout=TIMEOUT, verify=self.verify, allow_redirects=False, stream=True)
        response = super().request(method, url, *args, **kwargs)
        self.status = response.status_code
        try:
            if response.is_redirect:
                raise requests.TooManyRedirects(
                    f"a redirect (HTTP {response.status_code})", response=response
                )
            response._content = _body(response, sent + TIMEOUT)  # what .content would read
        finally:
            response.close()
        return response


def _body(response: requests.Response, deadline: float) -> bytes:
    """The whole body of a streamed answer, read as it comes (read1: what has arrived), by
    `deadline` (`time.monotonic()`) and up to MAX_ANSWER bytes."""
    parts: list[bytes] = []
    size = 0
    while part := response.raw.read1(CHUNK, decode_content=True):
        size += len(part)
        if time.monotonic() > deadline:
            raise requests.Timeout(f"the answer took over {TIMEOUT:g} s", response=response)
        if size > MAX_ANSWER:
            raise AnswerTooLong(f"an answer over {MAX_ANSWER} bytes", response=response)
        parts.append(part)
    return b"".join(parts)


def session(oauth2: OAuth2Config, where: str) -> Session:
    """A session for the token endpoint of `oauth2` (`where`: its table, for errors)."""
    if oauth2.ca_file is not None and not oauth2.ca_file.is_file():
        raise ConfigError(f"{where}.ca_file: {oauth2.ca_file}: no such file")
    return Session(str(oauth2.ca_file) if oauth2.ca_file else True)


def call(session: Session, to: Endpoint, action: Callable[[], T]) -> T:
    """Run `action` (a request to the token endpoint, ours or a library's): a network failure
    as a TokenError, and so is an answer the library could not read (the endpoint's outage
    when its status says so)."""
    try:
        return action()
    except (TokenError, ConfigError):
        raise
    except requests.RequestException as exc:
        raise unreachable(to, exc) from None
    except Exception as exc:  # the library choked on the answer: its class only
        raise unusable(to, type(exc).__name__, session.status) from None


def unreachable(to: Endpoint, exc: BaseException) -> TokenError:
    """A request that failed on the way (requests' exceptions), as a TokenError: transient
    when the endpoint could not be reached or did not answer in time."""
    where, host = to.where, to.host
    if isinstance(exc, requests.exceptions.SSLError):
        return TokenError(
            f"{where}: the certificate of the token endpoint {host} does not verify: "
            f"check {where}.ca_file (the CA that signed it; default: the system's)"
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return TokenError(
            f"{where}: the token endpoint {host} did not answer in {TIMEOUT:g} s", transient=True
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return TokenError(
            f"{where}: cannot reach the token endpoint {host}: check the network", transient=True
        )
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return TokenError(
            f"{where}: the token endpoint {host} answered with {exc}, which is never followed "
            f"(it would send the client's credentials on): check {to.key}"
        )
    if isinstance(exc, AnswerTooLong):
        return TokenError(f"{where}: the token endpoint {host} gave {exc}: check {to.key}")
    response = getattr(exc, "response", None)
    status = response.status_code if response is not None else None
    if failing(status):
        return failed(to, status)
    shown = f"HTTP {status}" if status is not None else type(exc).__name__
    return TokenError(f"{where}: the token endpoint {host} failed ({shown})")
