"""The providers of `oauth2.provider`: an `OAuth2Config` (and the mailbox) in, a `Grant` out.

- microsoft: the client-credentials grant against Entra ID with msal, signed with a client
  secret or with `certificate_file` (a PEM holding the private key and the certificate; msal
  1.35 or later signs the assertion with PS256 and the certificate's SHA-256 thumbprint). The
  authority is https://login.microsoftonline.com/{tenant}, or the one `token_url` names
  (sovereign clouds: https://login.microsoftonline.us/{tenant}/oauth2/v2.0/token).
- google: a service account with domain-wide delegation and the mailbox as subject: the JWT
  bearer grant (RFC 7523) with google-auth; the token endpoint is the key file's `token_uri`.
- generic: the client-credentials grant of RFC 6749 (§4.4) POSTed to `token_url`, the client
  authenticated with HTTP Basic (§2.3.1).

Every request goes through `endpoint.Session` (verified, never redirected, a deadline). msal,
google-auth and requests are imported when first needed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote_plus, urlsplit

from pipeline.config import ConfigError, OAuth2Config
from pipeline.oauth.answers import (
    GOOGLE_HINTS,
    MICROSOFT_HINTS,
    Endpoint,
    Grant,
    codes_in,
    failed,
    failing,
    lifetime,
    refusal,
)
from pipeline.oauth.errors import TokenError, library
from pipeline.oauth.files import read_certificate, read_service_account

MICROSOFT_LOGIN = "https://login.microsoftonline.com"
MICROSOFT_TOKEN_PATH = "/oauth2/v2.0/token"


class Provider(Protocol):
    host: str  # the token endpoint's host, for messages

    def endpoint(self, where: str) -> Endpoint: ...

    def fetch(self, where: str) -> Grant: ...


def provider(oauth2: OAuth2Config, username: str) -> Provider:
    """The provider `oauth2` names, for the mailbox `username`."""
    if oauth2.provider == "google":
        return Google(oauth2, username)
    if oauth2.provider == "microsoft":
        return Microsoft(oauth2)
    return Generic(oauth2)


def _endpoint_module(where: str) -> Any:
    return library("pipeline.oauth.endpoint", "requests", where)


class Microsoft:
    """Entra ID's client-credentials grant through msal (app-only access to the mailbox)."""

    def __init__(self, oauth2: OAuth2Config) -> None:
        self.oauth2 = oauth2
        self.host = urlsplit(oauth2.token_url or MICROSOFT_LOGIN).hostname or "the token endpoint"
        self._app: Any = None
        self._session: Any = None  # the app's: it holds the status of the last answer
        self._credential: object = None  # what `_app` signs with: rebuilt when it changes
        self._thumbprint: str | None = None

    def endpoint(self, where: str) -> Endpoint:
        key = "token_url" if self.oauth2.token_url else "tenant"
        return Endpoint(where, self.host, f"{where}.{key}")

    def fetch(self, where: str) -> Grant:
        msal = library("msal", "msal", where)
        endpoint = _endpoint_module(where)
        credential = self._read_credential(where)
        if self._app is None or credential != self._credential:
            self._session = endpoint.session(self.oauth2, where)
            self._app = self._build(msal, credential, where)
            self._credential = credential
        cache = self._app.token_cache  # msal's own cache would hand back a refused token
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(item)  # (search is a generator over the dict remove_at changes)
        scopes = (self.oauth2.scopes or "").split()
        to = self.endpoint(where)
        answer = endpoint.call(
            self._session, to, lambda: self._app.acquire_token_for_client(scopes)
        )
        status = self._session.status
        if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
            raise refusal(to, answer, self._hints(), self.oauth2, status=status)
        return Grant(answer["access_token"], lifetime(answer.get("expires_in")))

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
        to = self.endpoint(where)

        def build() -> Any:
            try:
                return msal.ConfidentialClientApplication(
                    self.oauth2.client_id,
                    client_credential=credential,
                    authority=authority,
                    http_client=self._session,
                    **options,
                )
            except ValueError as exc:  # msal's discovery was refused: no such tenant
                status = self._session.status
                if failing(status):
                    raise failed(to, status) from None
                answer = str(exc.__context__ or exc)  # msal's own, quoting the endpoint's answer
                codes = ", ".join(codes_in(answer)) or "discovery failed"
                raise TokenError(
                    f"{where}: {self.host} does not know the authority {authority} ({codes}): "
                    f"check {where}.tenant" + (f" and {where}.token_url" if not known else ""),
                ) from None

        return _endpoint_module(where).call(self._session, to, build)

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

    def endpoint(self, where: str) -> Endpoint:
        return Endpoint(where, self.host, f"{where}.service_account_file (its token_uri)")

    def fetch(self, where: str) -> Grant:
        service_account = library("google.oauth2.service_account", "google-auth", where)
        transport = library("google.auth.transport.requests", "google-auth", where)
        errors = library("google.auth.exceptions", "google-auth", where)
        endpoint = _endpoint_module(where)
        key = f"{where}.service_account_file"
        path = self.oauth2.service_account_file
        assert path is not None  # the config requires it for google
        info = read_service_account(path, key)
        self.host = urlsplit(info["token_uri"]).hostname or self.host
        to = self.endpoint(where)
        try:
            credentials = service_account.Credentials.from_service_account_info(
                info, scopes=(self.oauth2.scopes or "").split(), subject=self.username
            )
        except ValueError:  # google-auth: the private key is not one
            raise ConfigError(f"{key}: {path}: its private_key cannot be read") from None
        client_id = str(info.get("client_id", "(see the key file)"))  # public, not a secret
        with endpoint.session(self.oauth2, where) as session:

            def refresh() -> None:
                try:
                    credentials.refresh(transport.Request(session))
                except errors.RefreshError as exc:
                    answer = exc.args[1] if len(exc.args) > 1 else {}
                    raise refusal(
                        to,
                        answer,
                        GOOGLE_HINTS,
                        self.oauth2,
                        status=session.status,
                        client_id=client_id,
                    ) from None
                except errors.TransportError as exc:
                    raise endpoint.unreachable(to, exc.__cause__ or exc) from None

            endpoint.call(session, to, refresh)
        expiry = credentials.expiry  # naive UTC
        now = datetime.now(UTC).replace(tzinfo=None)
        return Grant(
            credentials.token, lifetime((expiry - now).total_seconds() if expiry else None)
        )


class Generic:
    """RFC 6749's client-credentials grant against `token_url`."""

    def __init__(self, oauth2: OAuth2Config) -> None:
        self.oauth2 = oauth2
        self.host = urlsplit(oauth2.token_url or "").hostname or "the token endpoint"

    def endpoint(self, where: str) -> Endpoint:
        return Endpoint(where, self.host, f"{where}.token_url")

    def fetch(self, where: str) -> Grant:
        oauth2 = self.oauth2
        url = oauth2.token_url
        assert url is not None  # the config requires it for generic
        endpoint = _endpoint_module(where)
        # §2.3.1: client_id and secret are form-encoded before they become Basic's user and
        # password.
        auth = (quote_plus(oauth2.client_id or ""), quote_plus(oauth2.secret(where) or ""))
        form = {"grant_type": "client_credentials"}
        if oauth2.scopes:
            form["scope"] = oauth2.scopes
        to = self.endpoint(where)
        with endpoint.session(oauth2, where) as session:
            response = endpoint.call(
                session,
                to,
                lambda: session.post(
                    url, data=form, auth=auth, headers={"Accept": "application/json"}
                ),
            )
        answer = _json(response.content)
        if response.status_code != 200 or not isinstance(answer.get("access_token"), str):
            raise refusal(to, answer, {}, oauth2, status=response.status_code)
        token_type = answer.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise TokenError(
                f"{where}: {self.host} gave a token whose token_type is not Bearer: check {to.key}"
            )
        return Grant(answer["access_token"], lifetime(answer.get("expires_in")))


def _json(content: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(content)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
