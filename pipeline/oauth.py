"""OAuth2 access tokens for XOAUTH2 sign-in: a signing-in section (`[imap]`, `[smtp]`) with its
`oauth2` table in, a bearer token out.

Providers (`oauth2.provider`):
- microsoft: the client-credentials grant against Entra ID with msal, signed with a client
  secret or with `certificate_file` (a PEM holding the private key and the certificate; msal
  1.35 or later signs the assertion with PS256 and the certificate's SHA-256 thumbprint). The
  authority is https://login.microsoftonline.com/{tenant}, or the one `token_url` names
  (sovereign clouds: https://login.microsoftonline.us/{tenant}/oauth2/v2.0/token).
- google: a service account with domain-wide delegation and the mailbox as subject: the JWT
  bearer grant (RFC 7523) with google-auth; the token endpoint is the key file's `token_uri`.
- generic: the client-credentials grant of RFC 6749 (§4.4) POSTed to `token_url`, the client
  authenticated with HTTP Basic (§2.3.1).

`token_source(config)` gives a section its `TokenSource`. Sources share one cache per table and
mailbox, so the poller, the IDLE watcher and the SMTP sender reuse one token; it lives in memory
only and is fetched again once less than 5 minutes or a tenth of its life is left, whichever is
less. `TokenSource.sign_in` tries a token and, when the server refuses it, drops it and tries a
new one once. The token endpoint's certificate is verified against `oauth2.ca_file` when set.

A token that cannot be had is a `TokenError` naming the table (`imap.oauth2`), the token
endpoint's host and the provider's error code (`invalid_client`, `AADSTS7000215`); a file that
cannot be read is a `ConfigError` naming its key. No message or log line ever holds the secret,
the token, a signed assertion or a private key. msal, google-auth and requests are imported when
first needed (`pip install 'report-intake[oauth]'`).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote_plus, urlsplit

from pipeline.config import SECRET_KEYS, ConfigError, OAuth2Config, SignIn

log = logging.getLogger(__name__)

T = TypeVar("T")

INSTALL = "pip install 'report-intake[oauth]'"
MICROSOFT_LOGIN = "https://login.microsoftonline.com"
MICROSOFT_TOKEN_PATH = "/oauth2/v2.0/token"
TIMEOUT = 30.0  # seconds for one request to the token endpoint
REFRESH_MARGIN = 300.0  # a token is renewed this many seconds before it expires ...
REFRESH_FRACTION = 0.1  # ... or this share of its life, whichever is less
DEFAULT_LIFETIME = 3600.0  # when the answer gives no expires_in (RFC 6749 §5.1: optional)


class TokenError(Exception):
    """No access token: the message names the table, the token endpoint's host and what to
    check; `code` is the provider's error code when it gave one. Never a secret."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Grant:
    """A token as the endpoint gave it, and for how many seconds it is valid."""

    token: str = field(repr=False)
    lifetime: float


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


class Provider(Protocol):
    host: str  # the token endpoint's host, for messages

    def fetch(self, where: str) -> Grant: ...


# -- the cache and its sources --------------------------------------------------------


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
                grant = self.provider.fetch(where)
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
            cache = _caches[(oauth2, username)] = _Cache(_provider(oauth2, username))
    return TokenSource(config.credential_key, cache)


def _provider(oauth2: OAuth2Config, username: str) -> Provider:
    if oauth2.provider == "google":
        return Google(oauth2, username)
    if oauth2.provider == "microsoft":
        return Microsoft(oauth2)
    return Generic(oauth2)


def forget_tokens() -> None:
    """Drop every cached token and provider (a new configuration; tests)."""
    with _caches_lock:
        _caches.clear()


# -- providers --------------------------------------------------------------------------


class Microsoft:
    """Entra ID's client-credentials grant through msal (app-only access to the mailbox)."""

    def __init__(self, oauth2: OAuth2Config) -> None:
        self.oauth2 = oauth2
        self.host = urlsplit(oauth2.token_url or MICROSOFT_LOGIN).hostname or "the token endpoint"
        self._app: Any = None
        self._credential: object = None  # what `_app` signs with: rebuilt when it changes
        self._thumbprint: str | None = None

    def fetch(self, where: str) -> Grant:
        msal = _library("msal", "msal", where)
        credential = self._read_credential(where)
        if self._app is None or credential != self._credential:
            self._app = self._build(msal, credential, where)
            self._credential = credential
        cache = self._app.token_cache  # msal's own cache would hand back a refused token
        for item in cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN):
            cache.remove_at(item)
        scopes = (self.oauth2.scopes or "").split()
        answer = _request(where, self.host, lambda: self._app.acquire_token_for_client(scopes))
        if not isinstance(answer.get("access_token"), str):
            raise _refused(where, self.host, answer, self._hints(), self.oauth2)
        return Grant(answer["access_token"], _lifetime(answer.get("expires_in")))

    def _read_credential(self, where: str) -> str | dict[str, str]:
        if self.oauth2.certificate_file is None:
            return self.oauth2.secret(where) or ""
        credential, self._thumbprint = read_certificate(
            self.oauth2.certificate_file, f"{where}.certificate_file"
        )
        return credential

    def _build(self, msal: Any, credential: str | dict[str, str], where: str) -> Any:
        authority = microsoft_authority(self.oauth2, where)
        known = urlsplit(authority).hostname == urlsplit(MICROSOFT_LOGIN).hostname
        # A sovereign cloud or a test server: msal asks the authority itself for its endpoints
        # (`{authority}/v2.0/.well-known/openid-configuration`), not Microsoft's list.
        options = {} if known else {"validate_authority": False, "instance_discovery": False}

        def build() -> Any:
            return msal.ConfidentialClientApplication(
                self.oauth2.client_id,
                client_credential=credential,
                authority=authority,
                http_client=_session(self.oauth2, where),
                **options,
            )

        try:
            return _request(where, self.host, build)
        except ValueError as exc:  # msal's discovery was refused: no such tenant
            answer = str(exc.__context__ or exc)  # msal's own, quoting the endpoint's answer
            codes = ", ".join(_codes_in(answer)) or "discovery failed"
            raise TokenError(
                f"{where}: {self.host} does not know the authority {authority} ({codes}): "
                f"check {where}.tenant" + (f" and {where}.token_url" if not known else ""),
            ) from None

    def _hints(self) -> dict[str, str]:
        if self._thumbprint is None:
            return MICROSOFT_HINTS
        certificate = (
            "the application does not hold this certificate (SHA-1 thumbprint "
            f"{self._thumbprint}): upload {{where}}.certificate_file's certificate to the app "
            "registration, or check {where}.client_id"
        )
        return {**MICROSOFT_HINTS, "invalid_client": certificate, "AADSTS700027": certificate}


def microsoft_authority(oauth2: OAuth2Config, where: str) -> str:
    """https://login.microsoftonline.com/{tenant}, or the authority of `token_url`."""
    if not oauth2.token_url:
        return f"{MICROSOFT_LOGIN}/{oauth2.tenant}"
    url = urlsplit(oauth2.token_url)
    path = url.path.rstrip("/")
    if url.scheme != "https" or not path.endswith(MICROSOFT_TOKEN_PATH) or url.query:
        raise ConfigError(
            f"{where}.token_url: for provider microsoft give the v2.0 token endpoint, "
            f"https://HOST/TENANT{MICROSOFT_TOKEN_PATH} (e.g. "
            f"https://login.microsoftonline.us/uni.onmicrosoft.com{MICROSOFT_TOKEN_PATH})"
        )
    return f"https://{url.netloc}{path.removesuffix(MICROSOFT_TOKEN_PATH)}"


class Google:
    """A service account with domain-wide delegation, acting as the mailbox (RFC 7523)."""

    def __init__(self, oauth2: OAuth2Config, username: str) -> None:
        self.oauth2 = oauth2
        self.username = username
        self.host = "oauth2.googleapis.com"  # until the key file names its token_uri

    def fetch(self, where: str) -> Grant:
        service_account = _library("google.oauth2.service_account", "google-auth", where)
        transport = _library("google.auth.transport.requests", "google-auth", where)
        errors = _library("google.auth.exceptions", "google-auth", where)
        key = f"{where}.service_account_file"
        path = self.oauth2.service_account_file
        assert path is not None  # the config requires it for google
        info = read_service_account(path, key)
        self.host = urlsplit(info["token_uri"]).hostname or self.host
        try:
            credentials = service_account.Credentials.from_service_account_info(
                info, scopes=(self.oauth2.scopes or "").split(), subject=self.username
            )
        except ValueError:  # google-auth: the private key is not one
            raise ConfigError(f"{key}: {path}: its private_key cannot be read") from None
        with _session(self.oauth2, where) as session:
            request = functools.partial(transport.Request(session), timeout=TIMEOUT)
            try:
                credentials.refresh(request)
            except errors.RefreshError as exc:
                answer = exc.args[1] if len(exc.args) > 1 else {}
                raise _refused(where, self.host, answer, GOOGLE_HINTS, self.oauth2) from None
            except errors.TransportError as exc:
                raise _unreachable(where, self.host, exc.__cause__ or exc) from None
        expiry = credentials.expiry  # naive UTC
        now = datetime.now(UTC).replace(tzinfo=None)
        lifetime = (expiry - now).total_seconds() if expiry else DEFAULT_LIFETIME
        return Grant(credentials.token, lifetime)


SERVICE_ACCOUNT_FIELDS = ("client_email", "private_key", "token_uri")


def read_service_account(path: Path, key: str) -> dict[str, Any]:
    """A Google service account's JSON key file; ConfigError naming `key` (never its content)
    when it cannot be read or is no such key."""
    text = _read(path, key)
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: {path}: not JSON (line {exc.lineno})") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ConfigError(
            f'{key}: {path}: not a service account\'s key (its "type" is not '
            '"service_account"); make a JSON key for the service account'
        )
    missing = [name for name in SERVICE_ACCOUNT_FIELDS if not isinstance(info.get(name), str)]
    if missing:
        raise ConfigError(f"{key}: {path}: the key lacks {', '.join(missing)}")
    return info


class Generic:
    """RFC 6749's client-credentials grant against `token_url`."""

    def __init__(self, oauth2: OAuth2Config) -> None:
        self.oauth2 = oauth2
        self.host = urlsplit(oauth2.token_url or "").hostname or "the token endpoint"

    def fetch(self, where: str) -> Grant:
        oauth2 = self.oauth2
        assert oauth2.token_url is not None  # the config requires it for generic
        # §2.3.1: client_id and secret are form-encoded before they become Basic's user and
        # password.
        auth = (quote_plus(oauth2.client_id or ""), quote_plus(oauth2.secret(where) or ""))
        form = {"grant_type": "client_credentials"}
        if oauth2.scopes:
            form["scope"] = oauth2.scopes
        with _session(oauth2, where) as session:
            response = _request(
                where,
                self.host,
                lambda: session.post(
                    oauth2.token_url, data=form, auth=auth, headers={"Accept": "application/json"}
                ),
            )
        answer = _json(response.content)
        if response.status_code != 200 or not isinstance(answer.get("access_token"), str):
            raise _refused(where, self.host, answer, {}, oauth2, status=response.status_code)
        token_type = answer.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise TokenError(
                f"{where}: {self.host} gave a token of type {str(token_type)[:20]!r}, "
                "not a bearer token: check token_url"
            )
        return Grant(answer["access_token"], _lifetime(answer.get("expires_in")))


MAILBOX_ACCESS = {
    "microsoft": "the app needs IMAP.AccessAsApp and SMTP.SendAsApp, and its Exchange service "
    "principal needs Add-MailboxPermission on the mailbox",
    "google": "the service account's client ID needs domain-wide delegation of "
    "https://mail.google.com/",
    "generic": "the token's client must be allowed this mailbox",
}


def mailbox_access(oauth2: OAuth2Config) -> str:
    """What a mail server needs before it takes the provider's tokens for the mailbox: for
    a login refused although a token was issued."""
    return MAILBOX_ACCESS[oauth2.provider]


# -- hints for refusals, by error code --------------------------------------------------

ERROR_HINTS = {
    "invalid_client": "check {where}.client_id and {secret}",
    "unauthorized_client": "the client may not use this grant: check {where}.client_id",
    "invalid_scope": "check {where}.scope",
    "invalid_grant": "check {where}.client_id and {secret}",
    "invalid_request": "check {where}.token_url and {where}.client_id",
}
MICROSOFT_HINTS = {
    **ERROR_HINTS,
    "AADSTS7000215": "the client secret is wrong: check {secret} (the secret's value, not its ID)",
    "AADSTS7000222": "the client secret has expired: add a new one to the app registration",
    "AADSTS700016": "no such application in the tenant: check {where}.client_id and {where}.tenant",
    "AADSTS90002": "no such tenant: check {where}.tenant",
    "AADSTS1002012": "check {where}.scope (https://outlook.office365.com/.default)",
    "AADSTS70011": "check {where}.scope (https://outlook.office365.com/.default)",
}
GOOGLE_HINTS = {
    **ERROR_HINTS,
    "invalid_grant": "check that the username is a mailbox of the Workspace domain and that "
    "the key in {where}.service_account_file has not been deleted",
    "unauthorized_client": "the service account's client ID is not allowed domain-wide "
    "delegation of this scope: add it in the Workspace admin console (Security, API controls)",
    "invalid_client": "the key in {where}.service_account_file is not valid: make a new one",
}


# -- helpers ----------------------------------------------------------------------------


def _library(module: str, package: str, where: str) -> Any:
    """Import an optional library, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TokenError(
            f"{where}: OAuth2 sign-in needs the Python package {package}: {INSTALL}"
        ) from None


def _session(oauth2: OAuth2Config, where: str) -> Any:
    """A requests session that verifies the token endpoint (against `ca_file` when set) and
    gives up on it after TIMEOUT seconds."""
    requests = _library("requests", "requests", where)
    if oauth2.ca_file is not None and not oauth2.ca_file.is_file():
        raise ConfigError(f"{where}.ca_file: {oauth2.ca_file}: no such file")
    verify = str(oauth2.ca_file) if oauth2.ca_file else True
    session = requests.Session()
    session.verify = verify
    # As arguments, these win over REQUESTS_CA_BUNDLE and the like in the environment.
    session.request = functools.partial(session.request, timeout=TIMEOUT, verify=verify)
    return session


def _request(where: str, host: str, action: Callable[[], T]) -> T:
    """Run a request to the token endpoint; a network failure as a TokenError."""
    requests = _library("requests", "requests", where)
    try:
        return action()
    except requests.RequestException as exc:
        raise _unreachable(where, host, exc) from None
    except json.JSONDecodeError:
        raise TokenError(f"{where}: {host} did not answer with JSON: check token_url") from None


def _unreachable(where: str, host: str, exc: BaseException) -> TokenError:
    """A request that failed on the network (requests' exceptions), as a TokenError."""
    requests = _library("requests", "requests", where)
    if isinstance(exc, requests.exceptions.SSLError):
        return TokenError(
            f"{where}: the certificate of the token endpoint {host} does not verify: "
            f"check {where}.ca_file (the CA that signed it; default: the system's)"
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return TokenError(f"{where}: the token endpoint {host} did not answer in {TIMEOUT:g} s")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return TokenError(f"{where}: cannot reach the token endpoint {host}: check the network")
    response = getattr(exc, "response", None)
    status = f"HTTP {response.status_code}" if response is not None else type(exc).__name__
    return TokenError(f"{where}: the token endpoint {host} failed ({status})")


_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_AADSTS = re.compile(r"\bAADSTS(\d{4,9})\b")
_ERROR_FIELD = re.compile(r'"error"\s*:\s*"([A-Za-z0-9_.-]{1,64})"')


def _codes(answer: object) -> list[str]:
    """The error code of a token endpoint's JSON answer and, from Entra ID, its AADSTS
    number: words and digits only, nothing else of the answer."""
    if not isinstance(answer, Mapping):
        return []
    error = answer.get("error")
    codes = [error] if isinstance(error, str) and _CODE.fullmatch(error) else []
    numbers = answer.get("error_codes")
    if isinstance(numbers, list) and numbers and isinstance(numbers[0], int):
        return [*codes, f"AADSTS{numbers[0]}"]
    description = answer.get("error_description")
    found = _AADSTS.search(description) if isinstance(description, str) else None
    return [*codes, f"AADSTS{found.group(1)}"] if found else codes


def _codes_in(text: str) -> list[str]:
    """The error code and AADSTS number quoted in a library's message."""
    error = _ERROR_FIELD.search(text)
    number = _AADSTS.search(text)
    return [m.group(1) if m is error else f"AADSTS{m.group(1)}" for m in (error, number) if m]


def _refused(
    where: str,
    host: str,
    answer: object,
    hints: Mapping[str, str],
    oauth2: OAuth2Config,
    *,
    status: int | None = None,
) -> TokenError:
    """The endpoint's refusal: its error code and AADSTS number (nothing else of its answer,
    which may quote what we sent) and what to check."""
    codes = _codes(answer)
    shown = ", ".join(codes) or (f"HTTP {status}" if status else "no error code")
    hint = next((hints[code] for code in reversed(codes) if code in hints), None)
    hint = hint or ERROR_HINTS.get(codes[0] if codes else "", "check {where}")
    given = next((key for key in SECRET_KEYS if getattr(oauth2, key) is not None), None)
    secret = f"{where}.{given}" if given else "the client secret"
    return TokenError(
        f"{where}: {host} refused the token request ({shown}): "
        + hint.format(where=where, secret=secret),
        code=codes[0] if codes else None,
    )


def _json(content: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(content)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _lifetime(value: object) -> float:
    """Seconds from `expires_in` (a number, or a string of one); DEFAULT_LIFETIME without."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME


def _read(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{key}: {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not text"
        raise ConfigError(f"{key}: {path}: cannot read it ({reason})") from None


_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


def read_certificate(path: Path, key: str) -> tuple[dict[str, str], str]:
    """msal's client credential from a PEM file holding an RSA private key (unencrypted) and
    its certificate, and the certificate's SHA-1 thumbprint (as the Entra admin centre shows
    it). ConfigError naming `key` when the file is not that; never the key in a message."""
    x509 = _library("cryptography.x509", "cryptography", key)
    serialization = _library("cryptography.hazmat.primitives.serialization", "cryptography", key)
    hashes = _library("cryptography.hazmat.primitives.hashes", "cryptography", key)
    rsa = _library("cryptography.hazmat.primitives.asymmetric.rsa", "cryptography", key)
    blocks: dict[str, str] = {}
    for match in _PEM.finditer(_read(path, key)):
        blocks.setdefault(match.group(1), match.group(0))
    if "ENCRYPTED PRIVATE KEY" in blocks:
        raise ConfigError(
            f"{key}: {path}: the private key is encrypted; store it without a passphrase, "
            "readable by the service's user only"
        )
    private = next((blocks[k] for k in blocks if k.endswith("PRIVATE KEY")), None)
    if private is None or "CERTIFICATE" not in blocks:
        raise ConfigError(
            f"{key}: {path}: needs the private key and the certificate, both in PEM "
            "(cat key.pem cert.pem > file)"
        )
    try:
        private_key = serialization.load_pem_private_key(private.encode(), password=None)
        certificate = x509.load_pem_x509_certificate(blocks["CERTIFICATE"].encode())
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: {path}: the private key or certificate cannot be read") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ConfigError(f"{key}: {path}: Entra ID needs an RSA key")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private_key.public_key().public_bytes(der, spki) != certificate.public_key().public_bytes(
        der, spki
    ):
        raise ConfigError(f"{key}: {path}: the private key is not the certificate's")
    pkcs8 = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    thumbprint = certificate.fingerprint(hashes.SHA1()).hex().upper()
    return {"private_key": pkcs8, "public_certificate": blocks["CERTIFICATE"]}, thumbprint
