"""Signing in to a mail server: the `[imap]` and `[smtp]` tables and their `oauth2` tables.

In: the tables' values (host, security, username, `auth`, a password or an `[*.oauth2]`
table, `ca_file`). Out: `ImapConfig`, `SmtpConfig` (both a `SignIn`: a verifying TLS context,
the key to name in messages) and `OAuth2Config` (the provider's keys checked, default scopes,
the client secret). A password or token over `security = "none"` to a host that is not
loopback (`is_loopback`) is refused.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from pipeline.config.base import ConfigError, Section
from pipeline.config.secrets import SecretSection, read_secret

Security = Literal["none", "starttls", "tls"]
Auth = Literal["password", "oauth2"]
Provider = Literal["microsoft", "google", "generic"]


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address: traffic that never leaves this machine."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


DEFAULT_SCOPES: dict[str, str] = {
    "microsoft": "https://outlook.office365.com/.default",
    "google": "https://mail.google.com/",
}


class OAuth2Config(Section):
    """How to get an OAuth2 access token for XOAUTH2 sign-in (`[imap.oauth2]`, `[smtp.oauth2]`).

    microsoft: the client-credentials grant against Entra ID (`tenant`, `client_id`, and a
    client secret or `certificate_file`). google: a service account with domain-wide
    delegation (`service_account_file`; the mailbox is the subject). generic: RFC 6749's
    client-credentials grant against `token_url` (`client_id` and a client secret)."""

    provider: Provider
    tenant: str | None = None
    client_id: str | None = None
    client_secret: str | None = Field(default=None, repr=False)
    client_secret_file: Path | None = None  # may start with ${CREDENTIALS_DIRECTORY}
    client_secret_env: str | None = None
    certificate_file: Path | None = None  # microsoft: PEM holding the private key and certificate
    service_account_file: Path | None = None  # google: the JSON key file
    token_url: str | None = None  # overrides the provider's default (sovereign clouds)
    scope: str | None = None  # default per provider (DEFAULT_SCOPES)
    ca_file: Path | None = None  # a private CA for the token endpoint (default: the system's)

    # What each provider reads besides provider, scope and ca_file: any other key is refused.
    PROVIDER_KEYS: ClassVar[dict[str, frozenset[str]]] = {
        "microsoft": frozenset(
            {
                "tenant",
                "client_id",
                "client_secret_file",
                "client_secret_env",
                "client_secret",
                "certificate_file",
                "token_url",
            }
        ),
        "google": frozenset({"service_account_file"}),  # the key file names client and endpoint
        "generic": frozenset(
            {"client_id", "client_secret_file", "client_secret_env", "client_secret", "token_url"}
        ),
    }

    @staticmethod
    def safe_endpoint(url: str) -> bool:
        """Whether a client secret or a signed assertion may be sent to `url`: https, or
        plain http to a loopback host only."""
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url.strip())
            host = parts.hostname or ""
        except ValueError:  # a malformed address ("https://[::1")
            return False
        return bool(host) and (
            parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host))
        )

    @field_validator("token_url")
    @classmethod
    def _https(cls, url: str | None) -> str | None:
        if url is not None and not cls.safe_endpoint(url):
            raise ValueError(
                "not an https:// address: the client secret would go in the clear (plain "
                "http:// only to a loopback host)"
            )
        return url

    @model_validator(mode="after")
    def _complete(self) -> OAuth2Config:
        used = self.PROVIDER_KEYS[self.provider] | {"provider", "scope", "ca_file"}
        unused = [
            k for k in type(self).model_fields if k not in used and getattr(self, k) is not None
        ]
        if unused:
            them = "it" if len(unused) == 1 else "them"
            raise ValueError(
                f"provider {self.provider} does not use {', '.join(unused)}: remove {them}"
            )
        secrets = [k for k in SECRET_KEYS if getattr(self, k) is not None]
        if len(secrets) > 1:
            raise ValueError(f"set only one of {', '.join(secrets)}")
        if self.provider == "google":
            if self.service_account_file is None:
                raise ValueError("provider google needs service_account_file (the JSON key)")
            return self
        if not self.client_id:
            raise ValueError(f"provider {self.provider} needs client_id")
        if self.provider == "microsoft":
            if not self.tenant and not self.token_url:
                raise ValueError("provider microsoft needs tenant (e.g. uni.onmicrosoft.com)")
            if secrets and self.certificate_file is not None:
                raise ValueError(f"set only one of {secrets[0]}, certificate_file")
            if not secrets and self.certificate_file is None:
                raise ValueError(
                    "provider microsoft needs one of client_secret_file, client_secret_env, "
                    "client_secret or certificate_file"
                )
            return self
        if not self.token_url:
            raise ValueError("provider generic needs token_url")
        if not secrets:
            raise ValueError(
                "provider generic needs one of client_secret_file, client_secret_env, client_secret"
            )
        return self

    @property
    def scopes(self) -> str | None:
        """The scope asked for: `scope`, else the provider's default (none for generic)."""
        return self.scope or DEFAULT_SCOPES.get(self.provider)

    def secret(self, where: str) -> str | None:
        """The client secret; `where` is the table (`imap.oauth2`) for errors."""
        return read_secret(
            f"{where}.client_secret",
            inline=self.client_secret,
            file=self.client_secret_file,
            env=self.client_secret_env,
        )


SECRET_KEYS = ("client_secret_file", "client_secret_env", "client_secret")


class SignIn(SecretSection):
    """A server we sign in to: TLS always verified (against `ca_file` when set), a password or
    an OAuth2 token, never in the clear to another host."""

    host: str
    security: Security
    username: str | None = None
    auth: Auth = "password"
    oauth2: OAuth2Config | None = None
    ca_file: Path | None = None  # a private CA's certificates (PEM); default: the system's
    _oauth2_from: str | None = PrivateAttr(default=None)  # set when the table is another's

    @property
    def credential_key(self) -> str:
        """The config key that gives what we sign in with, for messages: `smtp.oauth2`, or
        `imap.oauth2` when [smtp] signs in with [imap]'s table."""
        if self.auth == "oauth2":
            return self._oauth2_from or f"{self.section}.oauth2"
        return self.password_key

    @property
    def signs_in(self) -> bool:
        return self.auth == "oauth2" or bool(self.username)

    def tls_context(self) -> ssl.SSLContext:
        """A context that verifies the server's certificate and name: against `ca_file` when
        set, else the system's CAs. There is no way to switch verification off."""
        if self.ca_file is None:
            return ssl.create_default_context()
        try:
            return ssl.create_default_context(cafile=str(self.ca_file))
        except FileNotFoundError:
            raise ConfigError(f"{self.section}.ca_file: {self.ca_file}: no such file") from None
        except ssl.SSLError:  # an OSError too: first
            raise ConfigError(
                f"{self.section}.ca_file: {self.ca_file}: holds no PEM certificate"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"{self.section}.ca_file: {self.ca_file}: cannot read it ({exc.strerror})"
            ) from None

    @model_validator(mode="after")
    def _safe_sign_in(self) -> SignIn:
        if self.security == "none" and self.signs_in and not is_loopback(self.host):
            what = "an OAuth2 token" if self.auth == "oauth2" else "the password"
            raise ValueError(
                f'security = "none" would send {what} in the clear to {self.host}: '
                f'set {self.section}.security = "tls" or "starttls"'
            )
        return self


class ImapConfig(SignIn):
    section: ClassVar[str] = "imap"

    port: int = 993
    security: Security = "tls"
    username: str

    @model_validator(mode="after")
    def _oauth2_table(self) -> ImapConfig:
        if self.auth == "oauth2" and self.oauth2 is None:
            raise ValueError('auth = "oauth2" needs an [imap.oauth2] table')
        return self

    folder: str = "INBOX"
    # Folders of the same mailbox polled as well; every message in them is anonymous, whatever
    # its headers say (an anonymous alias routed there by a mail-flow rule).
    anonymous_folders: list[str] = Field(default_factory=list)
    # Opt-in: keep named originals in this folder once stored. Unset (default): expunged.
    # Anonymous originals are never kept in the mailbox.
    processed_folder: str | None = None
    delete_processed: bool = False  # forces expunging even when processed_folder is set
    batch_size: int = Field(default=20, ge=1)
    timeout_seconds: float = Field(default=30.0, gt=0)
    idle: bool = True  # IMAP IDLE where the server offers it; polling stays the fallback


class SmtpConfig(SignIn):
    """Without its own [smtp.oauth2], `auth = "oauth2"` uses [imap.oauth2] and, without its own
    username, imap.username (Config fills both in)."""

    section: ClassVar[str] = "smtp"

    host: str = "localhost"
    port: int = 25
    security: Security = "none"
    from_: str = Field(default="Report and Support <report@example.ac.uk>", alias="from")
    timeout_seconds: float = Field(default=30.0, gt=0)
    retry_seconds: float = Field(default=60, gt=0)  # first retry within this; doubling after
    queue_lifetime_days: float = Field(default=5, gt=0)  # then a temporary failure is final

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
