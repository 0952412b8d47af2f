"""A local OAuth2 authorisation server on loopback: access tokens for XOAUTH2 sign-in, and the
introspection Dovecot checks them with.

In: registered clients (a client secret or a certificate, and the mailbox the app may open) and
Google service accounts (a public key, the mailboxes it may act as, its scope). Out: tokens,
and a record of every token request (`requests`) for tests to count.

Endpoints, over HTTPS with `tls` (msal speaks only HTTPS) and always over plain HTTP on a second
port (`plain_url`: Dovecot's introspection client does not know the tests' CA):
- `POST /token` and `POST /{tenant}/oauth2/v2.0/token` (Entra ID's shape, with AADSTS numbers in
  its errors): `grant_type=client_credentials` with the client secret in the form or in HTTP
  Basic (RFC 6749 §2.3.1, form-encoded), or with a `client_assertion` JWT (msal's certificate
  flow, RFC 7523 §2.2) whose signature is checked with the registered certificate's key;
  `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an `assertion` signed by a
  service account (Google's flow, RFC 7523 §2.1) whose iss, sub, aud and scope are checked.
- `GET /{tenant}/v2.0/.well-known/openid-configuration`: the OIDC discovery msal reads first.
- `POST /introspect` (RFC 7662): `{"active": true, "username": mailbox}` for a token it issued
  that has not expired or been revoked (`revoke()`), else `{"active": false}`.

Error descriptions quote the secret the client sent, as a careless server might: a client must
never pass a description on. `expires_in` sets the life of the next tokens (any JSON value: a
string, NaN, Infinity). `canned` makes every token request get a `Canned` answer instead of a
grant: a proxy's HTML page, a JSON list, an outage (5xx, 429), a redirect, a page that echoes
the request's form, an answer that trickles in a byte at a time. A POST to any other path is
recorded in `stray` (where a followed redirect would land).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .net import LOOPBACK
from .tls import TlsFiles, server_context

TENANT = "uni.test"
CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_SCOPE = "https://mail.google.com/"
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"  # what Google's assertions must name


@dataclass
class Client:
    """An application: signs in with `secret` or with `certificate`'s key; its tokens open
    `mailbox` (app-only access, as Exchange's mailbox permission gives it)."""

    client_id: str
    mailbox: str
    secret: str | None = field(default=None, repr=False)
    certificate: x509.Certificate | None = None
    scope: str | None = None  # when set, the request must ask for exactly this


@dataclass
class ServiceAccount:
    """A Google service account with domain-wide delegation of `scope` for `subjects`."""

    email: str
    public_key: rsa.RSAPublicKey
    subjects: frozenset[str]
    scope: str = GOOGLE_SCOPE


@dataclass(frozen=True)
class TokenRequest:
    """One token request as the server saw it: which flow, for which client (client_id or
    service account), whether the secret came by HTTP Basic, and the error (None: issued)."""

    flow: str  # "secret", "certificate" or "jwt-bearer"
    client: str
    basic: bool
    error: str | None


@dataclass(frozen=True)
class Canned:
    """An answer the token endpoint gives instead of a grant. `{form}` in `body` becomes the
    request's form as it was sent (a page that echoes what it got, secrets and all); with
    `trickle`, the body is sent one byte every `trickle` seconds."""

    status: int = 200
    body: str = ""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    trickle: float = 0.0


@dataclass
class _Issued:
    mailbox: str
    expires: float  # time.time()
    revoked: bool = False


class Refused(Exception):
    """A token request refused with an OAuth2 error (RFC 6749 §5.2)."""

    def __init__(self, error: str, description: str, *, aadsts: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.description = f"AADSTS{aadsts}: {description}" if aadsts else description
        self.aadsts = aadsts


class TokenServer:
    """See the module docstring."""

    def __init__(self, *, tls: TlsFiles | None = None, tenant: str = TENANT) -> None:
        self.tls = tls
        self.tenant = tenant
        self.expires_in: object = 3600
        self.canned: Canned | None = None
        self.stray: list[str] = []  # paths POSTed to that are no endpoint of ours
        self.clients: dict[str, Client] = {}
        self.service_accounts: dict[str, ServiceAccount] = {}
        self.requests: list[TokenRequest] = []
        self.introspections = 0
        self._issued: dict[str, _Issued] = {}
        self._lock = threading.Lock()
        self._listeners: list[_Listener] = []

    # -- addresses --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL: https when the server has `tls`."""
        listener = self._listeners[0]
        return f"{'https' if listener.context else 'http'}://{LOOPBACK}:{listener.port}"

    @property
    def plain_url(self) -> str:
        return f"http://{LOOPBACK}:{self._listeners[-1].port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def microsoft_token_url(self) -> str:
        """The tenant's v2.0 token endpoint, as `oauth2.token_url` of provider microsoft."""
        return f"{self.url}/{self.tenant}/oauth2/v2.0/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.plain_url}/introspect"

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._listeners:
            return
        contexts = [server_context(self.tls), None] if self.tls else [None]
        self._listeners = [_Listener(self, context) for context in contexts]
        for listener in self._listeners:
            threading.Thread(target=listener.serve_forever, daemon=True).start()

    def stop(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.shutdown()
            listener.server_close()

    def __enter__(self) -> TokenServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what the tests set and read ----------------------------------------------------

    def add_client(self, client: Client) -> Client:
        with self._lock:
            self.clients[client.client_id] = client
        return client

    def add_service_account(self, account: ServiceAccount) -> ServiceAccount:
        with self._lock:
            self.service_accounts[account.email] = account
        return account

    def issued(self, flow: str | None = None) -> int:
        """How many tokens were issued (of one flow)."""
        with self._lock:
            return sum(1 for r in self.requests if r.error is None and flow in (None, r.flow))

    def revoke(self, token: str | None = None) -> None:
        """Revoke one token, or every token issued so far."""
        with self._lock:
            for value, issued in self._issued.items():
                if token in (None, value):
                    issued.revoked = True

    def active(self, token: str) -> str | None:
        """The mailbox a token opens, or None when it is unknown, expired or revoked."""
        with self._lock:
            issued = self._issued.get(token)
            if issued is None or issued.revoked or issued.expires <= time.time():
                return None
            return issued.mailbox

    def check(self, user: str, token: str) -> bool:
        """Whether `token` lets `user` sign in (the SMTP sink's `xoauth2_check`)."""
        return self.active(token) == user

    def reset(self) -> None:
        """Forget issued tokens and requests; the default token life, real answers. Clients
        stay."""
        with self._lock:
            self.expires_in = 3600
            self.canned = None
            self.stray.clear()
            self.requests.clear()
            self._issued.clear()
            self.introspections = 0

    # -- the grants ---------------------------------------------------------------------

    def grant(self, endpoint: str, form: dict[str, str], basic: tuple[str, str] | None) -> dict:
        """Answer a token request at `endpoint` (its full URL, the assertions' audience)."""
        grant_type = form.get("grant_type", "")
        if grant_type == JWT_BEARER:
            flow, name, grant = "jwt-bearer", "", self._jwt_bearer
        elif grant_type == "client_credentials":
            assertion = form.get("client_assertion_type") == CLIENT_ASSERTION
            flow = "certificate" if assertion else "secret"
            name = basic[0] if basic else form.get("client_id", "")
            grant = self._assertion if assertion else self._secret
        else:
            raise Refused("unsupported_grant_type", f"grant_type {grant_type!r}")
        try:
            name, mailbox = grant(endpoint, form, basic)
        except Refused as refused:
            self._record(TokenRequest(flow, name, basic is not None, refused.error))
            raise
        token = secrets.token_urlsafe(32)
        with self._lock:
            life = self.expires_in if type(self.expires_in) is int else 3600
            self._issued[token] = _Issued(mailbox, time.time() + life)
            self.requests.append(TokenRequest(flow, name, basic is not None, None))
            expires_in = self.expires_in
        return {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _client(self, client_id: str) -> Client:
        client = self.clients.get(client_id)
        if client is None:
            raise Refused("invalid_client", f"Application {client_id!r} not found", aadsts=700016)
        return client

    def _check_scope(self, client: Client, form: dict[str, str]) -> None:
        if client.scope is not None and form.get("scope") != client.scope:
            raise Refused(
                "invalid_scope", f"scope {form.get('scope')!r} is not valid", aadsts=70011
            )

    def _secret(
        self, endpoint: str, form: dict[str, str], basic: tuple[str, str] | None
    ) -> tuple[str, str]:
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        client = self._client(client_id)
        if client.secret is None or secret != client.secret:
            raise Refused(
                "invalid_client", f"Invalid client secret provided: {secret!r}", aadsts=7000215
            )
        self._check_scope(client, form)
        return client_id, client.mailbox

    def _assertion(
        self, endpoint: str, form: dict[str, str], basic: tuple[str, str] | None
    ) -> tuple[str, str]:
        client_id = form.get("client_id", "")
        client = self._client(client_id)
        assertion = form.get("client_assertion", "")
        header = jwt.get_unverified_header(assertion)
        presented = _unbase64(str(header.get("x5t#S256", "")))
        if client.certificate is None or presented != _sha256(client.certificate):
            raise Refused(
                "invalid_client", "The certificate is not registered for the app", aadsts=700027
            )
        try:
            claims = jwt.decode(
                assertion,
                client.certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["PS256", "RS256"],
                audience=endpoint,
                issuer=client_id,
                options={"require": ["exp", "aud", "iss", "sub", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise Refused(
                "invalid_client", f"Client assertion failed ({exc})", aadsts=7000274
            ) from None
        if claims["sub"] != client_id:
            raise Refused("invalid_client", "The assertion's sub is not the client", aadsts=700023)
        self._check_scope(client, form)
        return client_id, client.mailbox

    def _jwt_bearer(
        self, endpoint: str, form: dict[str, str], basic: tuple[str, str] | None
    ) -> tuple[str, str]:
        assertion = form.get("assertion", "")
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss", "")
            account = self.service_accounts.get(issuer)
            if account is None:
                raise Refused("invalid_grant", "Invalid JWT Signature.")
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=GOOGLE_AUDIENCE,  # google-auth's, whatever the token_uri
                issuer=account.email,
                options={"require": ["exp", "iat", "aud", "iss", "scope"]},
            )
        except jwt.PyJWTError:
            raise Refused("invalid_grant", "Invalid JWT Signature.") from None
        subject = claims.get("sub") or account.email
        if subject not in account.subjects:
            raise Refused(
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method",
            )
        if claims["scope"] != account.scope:
            raise Refused("unauthorized_client", "Client not authorized for the scopes requested")
        return account.email, subject

    # -- discovery and introspection ----------------------------------------------------

    def discovery(self, tenant: str) -> dict[str, str]:
        if tenant != self.tenant:
            raise Refused("invalid_tenant", f"Tenant '{tenant}' not found.", aadsts=90002)
        base = f"{self.url}/{tenant}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
        }

    def introspect(self, token: str) -> dict[str, Any]:
        with self._lock:
            self.introspections += 1
        mailbox = self.active(token)
        return {"active": True, "username": mailbox} if mailbox else {"active": False}


# -- HTTP --------------------------------------------------------------------------------


class _Listener(ThreadingHTTPServer):
    """One port of the server; with a context, TLS (the handshake runs in the request's
    thread, so a client that refuses the certificate holds up no one)."""

    daemon_threads = True

    def __init__(self, tokens: TokenServer, context: ssl.SSLContext | None) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.tokens = tokens
        self.context = context

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is None:
            super().finish_request(request, client_address)
            return
        try:
            wrapped = self.context.wrap_socket(request, server_side=True)
        except OSError:  # the client refused our certificate, or went away
            return
        with wrapped:
            super().finish_request(wrapped, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Listener

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `requests` instead."""

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            self._answer(lambda: self.server.tokens.discovery(parts[0]))
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        form = {key: values[0] for key, values in parse_qs(body).items()}
        path = self.path.split("?")[0]
        tokens = self.server.tokens
        if path == "/introspect":
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
            self._json(200, tokens.introspect(form.get("token") or bearer))
        elif path == "/token" or path == f"/{tokens.tenant}/oauth2/v2.0/token":
            canned = tokens.canned
            if canned is not None:
                self._canned(canned, body)
                return
            scheme = "https" if self.server.context else "http"
            endpoint = f"{scheme}://{LOOPBACK}:{self.server.port}{path}"
            self._answer(lambda: tokens.grant(endpoint, form, self._basic()))
        else:
            with tokens._lock:
                tokens.stray.append(path)
            self._json(404, {"error": "not_found"})

    def _basic(self) -> tuple[str, str] | None:
        """HTTP Basic client authentication: user and password form-decoded (§2.3.1)."""
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return unquote_plus(user), unquote_plus(password)

    def _answer(self, make: Any) -> None:
        try:
            answer = make()
        except Refused as refused:
            error: dict[str, Any] = {
                "error": refused.error,
                "error_description": refused.description,
            }
            if refused.aadsts:
                error["error_codes"] = [refused.aadsts]
            self._json(401 if refused.error == "invalid_client" else 400, error)
            return
        self._json(200, answer)

    def _canned(self, canned: Canned, form: str) -> None:
        data = canned.body.replace("{form}", form).encode()
        self.send_response(canned.status)
        self.send_header("Content-Type", canned.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in canned.headers:
            self.send_header(name, value)
        self.end_headers()
        if not canned.trickle:
            self.wfile.write(data)
            return
        try:
            for byte in data:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(canned.trickle)
        except OSError:  # the client gave up on us
            self.close_connection = True

    def _json(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


def _sha256(certificate: x509.Certificate) -> bytes:
    """The certificate's SHA-256 thumbprint (a JWT header's `x5t#S256`, RFC 7515)."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()


def _unbase64(text: str) -> bytes:
    """base64url as RFC 7515 wants it, or padded standard base64 as msal sends it."""
    try:
        return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "==")
    except ValueError:
        return b""


# -- keys and files the clients use ------------------------------------------------------


def make_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pkcs8(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def write_client_certificate(path: Path, key: rsa.RSAPrivateKey, name: str) -> x509.Certificate:
    """A self-signed certificate for an app registration, written with its key to one PEM
    file (key first), mode 0600: what `oauth2.certificate_file` names."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    path.write_text(_pkcs8(key) + pem)
    path.chmod(0o600)
    return certificate


def write_service_account_file(
    path: Path, key: rsa.RSAPrivateKey, email: str, token_uri: str
) -> Path:
    """A Google service account's JSON key file (as the Cloud console makes it), mode 0600."""
    info = {
        "type": "service_account",
        "project_id": "report-intake-test",
        "private_key_id": hashlib.sha1(_pkcs8(key).encode()).hexdigest(),
        "private_key": _pkcs8(key),
        "client_email": email,
        "client_id": "104857600000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info, indent=2))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class ServiceAccountKey:
    """A service account's key file and its private key (for signing bad assertions)."""

    path: Path
    email: str
    key: rsa.RSAPrivateKey = field(repr=False)


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def token_server(tls_files: TlsFiles) -> Iterator[TokenServer]:
    """The session's authorisation server, over HTTPS from the tests' CA (and plain HTTP on
    `plain_url` for Dovecot); prefer `tokens`, which also forgets earlier tokens."""
    with TokenServer(tls=tls_files) as server:
        yield server


@pytest.fixture
def tokens(token_server: TokenServer) -> TokenServer:
    """The session's token server with no tokens issued, no requests seen, 1-hour tokens."""
    token_server.reset()
    return token_server


@pytest.fixture(scope="session")
def google_service_account(
    token_server: TokenServer, tmp_path_factory: pytest.TempPathFactory
) -> ServiceAccountKey:
    """A service account's JSON key file whose token_uri is the token server, delegated
    https://mail.google.com/ for the mailbox `intake`."""
    key = make_rsa_key()
    email = "report-intake@report-intake-test.iam.gserviceaccount.com"
    path = tmp_path_factory.mktemp("google") / "service-account.json"
    write_service_account_file(path, key, email, token_server.token_url)
    token_server.add_service_account(ServiceAccount(email, key.public_key(), frozenset({"intake"})))
    return ServiceAccountKey(path, email, key)
