"""Configuration: one TOML file in, a validated `Config` out.

Relative paths are resolved against the config file's folder. Secrets come from the file, from a
file named by `*_file`, or from an environment variable named by `*_env`. Every problem is a
`ConfigError` whose message names the file and the key, e.g. `intake.toml: imap.port: ...`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import stat
import tomllib
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

Security = Literal["none", "starttls", "tls"]
Auth = Literal["password", "oauth2"]
Provider = Literal["microsoft", "google", "generic"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretSection(Section):
    """A section with a password given inline, in a file (`password_file`) or by `password_env`."""

    section: ClassVar[str] = ""  # the TOML table, for errors: "imap.password_file: ..."

    password: str | None = Field(default=None, repr=False)
    password_file: Path | None = None
    password_env: str | None = None

    @property
    def password_key(self) -> str:
        """The config key that gives the password, e.g. `imap.password_file`."""
        if self.password_env:
            return f"{self.section}.password_env"
        return f"{self.section}.password_file" if self.password_file else f"{self.section}.password"

    def secret(self) -> str | None:
        """The password, read from wherever the config says it is; ConfigError naming the key
        when it cannot be read."""
        return read_secret(
            f"{self.section}.password",
            inline=self.password,
            file=self.password_file,
            env=self.password_env,
        )


def read_secret(key: str, *, inline: str | None, file: Path | None, env: str | None) -> str | None:
    """A secret given inline, in a file (`key_file`) or by an environment variable (`key_env`);
    ConfigError naming the key when it cannot be read or is empty. Never the secret in a
    message."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"{key}_env: environment variable {env} is not set")
        where = f"{key}_env"
    elif file:
        path = credential_path(file, f"{key}_file")
        try:
            value = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{key}_file: {path}: no such file") from None
        except OSError as exc:
            raise ConfigError(f"{key}_file: {path}: cannot read it ({exc.strerror})") from None
        where = f"{key}_file"
    else:
        value, where = inline, key
    if value is not None and not value.strip():
        raise ConfigError(f"{where}: it is empty")
    return value.strip() if value is not None else None


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


class DatabaseConfig(Section):
    url: str = ""


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


class MaildirConfig(Section):
    """A local Maildir filled by an MTA (or the demo); a message is removed once stored."""

    path: Path
    anonymous: bool = False  # every message in this Maildir is anonymous


class AnonymousWhen(Section):
    column: str
    equals: list[str] = Field(min_length=1)


FormField = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class FormConfig(Section):
    """One web form whose responses are exported to a folder (see README: mapping a form)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    path: str  # a glob, relative to the config file's folder
    dialect: Literal["auto", "google", "microsoft", "qualtrics", "jisc", "generic"] = "auto"
    id_column: str | None = None
    date_format: str | None = None  # the submission timestamp's format
    # Per mapped date column (header -> strptime format), e.g. {"When did it happen?" = "%d/%m/%Y"}
    date_formats: dict[str, str] = Field(default_factory=dict)
    anonymous_when: AnonymousWhen | None = None
    columns: dict[FormField, str] = Field(default_factory=dict)
    identifying: list[FormField] = Field(default_factory=lambda: ["email", "name"])
    after: Literal["keep", "delete", "archive-encrypted"] = "archive-encrypted"
    archive_dir: Path | None = None
    settle_seconds: float = Field(default=2.0, ge=0)
    # The zone of submission times that name none (Microsoft Forms, Jisc); default: [display]
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return known_zone(value) if value is not None else None

    @model_validator(mode="after")
    def _needs_description(self) -> FormConfig:
        if "description" not in self.columns:
            raise ValueError("columns: map `description` to the column holding the report")
        return self


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


class IntakeConfig(Section):
    anonymous_addresses: list[str] = Field(default_factory=list)
    anonymous_subject_marker: str = "[anonymous]"
    intake_addresses: list[str] = Field(default_factory=list)
    # The authserv-id our receiving host writes in Authentication-Results (e.g. "mx.uni.ac.uk");
    # when set, no acknowledgement goes to a sender it could not verify (dmarc=fail and the like).
    authserv_id: str | None = None


WithholdKind = Literal["executable", "macro", "external"]
WITHHOLD_KINDS: tuple[WithholdKind, ...] = ("executable", "macro", "external")


class AttachmentsConfig(Section):
    """Attachments of named reports withheld from the referral by kind (with a note): inside
    PGP they pass the service's mail scanner unseen. Anonymous attachments are always cleaned."""

    withhold: list[WithholdKind] = Field(default_factory=lambda: list(WITHHOLD_KINDS))


class AlertsConfig(Section):
    """Admin alerts (never with report content): dead letters, held referrals, keys."""

    admin: list[str] = Field(default_factory=list)
    key_expiry_days: int = Field(default=30, ge=0)  # warn daily about keys expiring this soon
    ack_limit_per_hour: int = Field(default=3, ge=0)  # acknowledgements to one sender


class LimitsConfig(Section):
    """What one message may be; beyond a limit it is quarantined with the limit named."""

    message_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    attachments: int = Field(default=20, ge=0)
    depth: int = Field(default=10, ge=1)  # MIME nesting
    parts: int = Field(default=100, ge=1)
    headers: int = Field(default=500, ge=1)  # header fields per part
    header_bytes: int = Field(default=64 * 1024, ge=1)  # one header field, unfolded
    archive_bytes: int = Field(default=100 * 1024 * 1024, ge=1)  # decompressed, when we look in
    parse_seconds: float = Field(default=10.0, gt=0)


class RetentionConfig(Section):
    """Days after which a report's encrypted records are purged, by state (absent: kept for
    ever). `delivered`: every referral reached its service. `undelivered`: one did not (held
    for a key that never came, dead-lettered, or bounced); the admins are alerted a week
    before such a report goes, and unset it is never purged. Form archives are kept for ever
    while `routed`, `quarantined` or `undelivered` is unset; else as long as the longest."""

    delivered: int | None = Field(default=None, ge=1)
    routed: int | None = Field(default=None, ge=1)
    quarantined: int | None = Field(default=None, ge=1)
    undelivered: int | None = Field(default=None, ge=1)


class GpgConfig(Section):
    homedir: Path | None = None
    records_keys: list[str] = Field(min_length=1)
    keys_dir: Path = Path("rules/keys")
    binary: str = "gpg"
    # The outbox key's passphrase, from outside data_dir (required): a file, or an environment
    # variable (e.g. a systemd credential), or inline (tests and the demo only).
    outbox_passphrase: str | None = Field(default=None, repr=False)
    outbox_passphrase_file: Path | None = None  # may start with ${CREDENTIALS_DIRECTORY}
    outbox_passphrase_env: str | None = None

    @model_validator(mode="after")
    def _fingerprints(self) -> GpgConfig:
        for fpr in self.records_keys:
            if len(fpr) != 40 or any(c not in "0123456789ABCDEFabcdef" for c in fpr):
                raise ValueError(f"records_keys: {fpr!r} is not a 40-hex-digit fingerprint")
        given = [key for key in PASSPHRASE_KEYS if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"set only one of {', '.join(given)}")
        return self

    def read_outbox_passphrase(self, *, data_dir: Path, homedir: Path) -> str | None:
        """The outbox key's passphrase from wherever the config says it is; None when no key
        names one. ConfigError (naming the key) when it cannot be read, is empty, or lives
        where the data folder would hold it too."""
        if self.outbox_passphrase_env:
            value = os.environ.get(self.outbox_passphrase_env)
            if value is None:
                raise ConfigError(
                    f"gpg.outbox_passphrase_env: environment variable "
                    f"{self.outbox_passphrase_env} is not set"
                )
        elif self.outbox_passphrase_file:
            path = credential_path(self.outbox_passphrase_file)
            value = _read_private_file(path, data_dir, homedir)
        else:
            value = self.outbox_passphrase
        if value is not None and not value.strip():
            key = next(k for k in PASSPHRASE_KEYS if getattr(self, k) is not None)
            raise ConfigError(f"gpg.{key}: the outbox passphrase is empty")
        return value.strip() if value is not None else None


PASSPHRASE_KEYS = ("outbox_passphrase_file", "outbox_passphrase_env", "outbox_passphrase")
_CREDENTIALS = re.compile(r"^\$(\{CREDENTIALS_DIRECTORY\}|CREDENTIALS_DIRECTORY)(?=/|$)")


def credential_path(path: Path, key: str = "gpg.outbox_passphrase_file") -> Path:
    """`${CREDENTIALS_DIRECTORY}/name` (systemd's LoadCredential=) with the variable expanded."""
    match = _CREDENTIALS.match(str(path))
    if not match:
        return path
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        name = Path(str(path)[match.end() :]).name or "name"
        raise ConfigError(
            f"{key}: $CREDENTIALS_DIRECTORY is not set; systemd sets it "
            f"for a unit with LoadCredential={name}:/path/to/file"
        )
    return Path(folder + str(path)[match.end() :])


def from_systemd(path: Path) -> bool:
    """A credential systemd passed the unit (LoadCredential=): it lives in
    $CREDENTIALS_DIRECTORY, which only the unit's user may enter, whatever mode (or ACL, on
    newer systemd) the file itself shows."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    return bool(folder) and path.resolve().is_relative_to(Path(str(folder)).resolve())


def _read_private_file(path: Path, data_dir: Path, homedir: Path) -> str:
    """A secret file that only its owner can read and that is not in the data folder."""
    key = "gpg.outbox_passphrase_file"
    real = path.resolve()
    for name, folder in (("data_dir", data_dir), ("the gpg homedir", homedir)):
        if real.is_relative_to(folder.resolve()):
            raise ConfigError(
                f"{key}: {path} is inside {name} ({folder}); keep the passphrase outside it, "
                "or a copy of the data folder opens the outbox"
            )
    try:
        mode = stat.S_IMODE(real.stat().st_mode)
        if mode & 0o077 and not from_systemd(real):
            raise ConfigError(
                f"{key}: {path} is readable by group or others (mode {mode:o}); "
                f"run: chmod 600 {path}"
            )
        return real.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None


class RulesConfig(Section):
    dir: Path = Path("rules")


class TemplatesConfig(Section):
    dir: Path = Path("templates")


class ReferralsConfig(Section):
    """How a referral's outer message looks: an urgent one always carries `Importance: high`
    and `Priority: urgent`, and `urgent_marker` in its subject (none when empty)."""

    urgent_marker: str = "(urgent)"


class ScheduleConfig(Section):
    poll_seconds: int = Field(default=60, ge=1)
    outbox_seconds: int = Field(default=30, ge=1)
    purge_hours: float = Field(default=24, gt=0)  # the retention purge runs this often


class LoggingConfig(Section):
    """Log lines on standard error: `text` (default) or `json` (one object a line: time, level,
    logger, message, and reference/source where known). Never report content, at any level."""

    format: LogFormat = "text"
    level: LogLevel = "INFO"


class MetricsConfig(Section):
    """Prometheus text-format metrics written atomically to `textfile` after each job (the
    node_exporter textfile collector); unset: none."""

    textfile: Path | None = None


def known_zone(value: str) -> str:
    """An IANA time zone name this machine knows, or ValueError saying what to write."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"{value!r} is not a time zone known here; use an IANA name such as "
            '"Europe/London" or "UTC"'
        ) from None
    return value


class DisplayConfig(Section):
    """How referrals show times: in this IANA time zone (e.g. "Europe/London", "UTC")."""

    timezone: str = "Europe/London"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Config(Section):
    source: Path = Path("intake.toml")
    data_dir: Path = Path("var")
    database: DatabaseConfig = DatabaseConfig()
    imap: ImapConfig | None = None
    maildir: MaildirConfig | None = None
    forms: list[FormConfig] = Field(default_factory=list)
    smtp: SmtpConfig = SmtpConfig()
    intake: IntakeConfig = IntakeConfig()
    gpg: GpgConfig
    rules: RulesConfig = RulesConfig()
    templates: TemplatesConfig = TemplatesConfig()
    referrals: ReferralsConfig = ReferralsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    alerts: AlertsConfig = AlertsConfig()
    attachments: AttachmentsConfig = AttachmentsConfig()
    limits: LimitsConfig = LimitsConfig()
    retention: RetentionConfig = RetentionConfig()
    display: DisplayConfig = DisplayConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _smtp_oauth2_from_imap(self) -> Config:
        """`[smtp] auth = "oauth2"` without its own table signs in with [imap.oauth2] as
        imap.username (the same mailbox sends)."""
        smtp = self.smtp
        if smtp.auth != "oauth2" or (smtp.oauth2 and smtp.username):
            return self
        imap = self.imap
        oauth2 = smtp.oauth2 or (imap.oauth2 if imap else None)
        if oauth2 is None:
            raise ValueError('smtp.auth = "oauth2" needs an [smtp.oauth2] or [imap.oauth2] table')
        username = smtp.username or (imap.username if imap else None)
        if not username:
            raise ValueError('smtp.auth = "oauth2" needs smtp.username (the mailbox that sends)')
        inherited = smtp.oauth2 is None
        smtp = smtp.model_copy(update={"oauth2": oauth2, "username": username})
        if inherited:
            smtp._oauth2_from = "imap.oauth2"
        return self.model_copy(update={"smtp": smtp})

    @model_validator(mode="after")
    def _forms_in_the_display_zone(self) -> Config:
        """A form without its own `timezone` reads zone-less times in `[display] timezone`."""
        if all(form.timezone for form in self.forms):
            return self
        zone = self.display.timezone
        forms = [f if f.timezone else f.model_copy(update={"timezone": zone}) for f in self.forms]
        return self.model_copy(update={"forms": forms})

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'intake.db'}"

    @property
    def gpg_home(self) -> Path:
        return self.gpg.homedir or self.data_dir / "gnupg"

    @property
    def own_addresses(self) -> set[str]:
        """Addresses of the intake itself, never acknowledged (mail loops)."""
        own = {a.lower() for a in self.intake.intake_addresses + self.intake.anonymous_addresses}
        if self.imap and "@" in self.imap.username:
            own.add(self.imap.username.lower())
        return own


_PATH_KEYS = {
    ("data_dir",),
    ("maildir", "path"),
    ("gpg", "homedir"),
    ("gpg", "keys_dir"),
    ("rules", "dir"),
    ("templates", "dir"),
    ("imap", "password_file"),
    ("smtp", "password_file"),
    ("gpg", "outbox_passphrase_file"),
    ("imap", "ca_file"),
    ("smtp", "ca_file"),
    ("imap", "oauth2", "client_secret_file"),
    ("imap", "oauth2", "certificate_file"),
    ("imap", "oauth2", "service_account_file"),
    ("imap", "oauth2", "ca_file"),
    ("smtp", "oauth2", "client_secret_file"),
    ("smtp", "oauth2", "certificate_file"),
    ("smtp", "oauth2", "service_account_file"),
    ("smtp", "oauth2", "ca_file"),
    ("metrics", "textfile"),
}


_DEFAULT_PATHS = {("rules", "dir"): "rules", ("templates", "dir"): "templates"}


def _set_default_paths(raw: dict[str, object]) -> None:
    """Write default folders in, so that they too are resolved against the config's folder."""
    raw.setdefault("data_dir", "var")
    for (section, key), value in _DEFAULT_PATHS.items():
        node = raw.setdefault(section, {})
        if isinstance(node, dict):
            node.setdefault(key, value)
    gpg = raw.get("gpg")
    if isinstance(gpg, dict):
        gpg.setdefault("keys_dir", "rules/keys")


def _resolve_paths(raw: dict[str, object], base: Path) -> None:
    for keys in _PATH_KEYS:
        node: object = raw
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            if _CREDENTIALS.match(node[keys[-1]]):
                continue  # expanded when read: systemd sets it for the daemon only
            node[keys[-1]] = str(base / os.path.expanduser(node[keys[-1]]))
    forms = raw.get("forms")
    for form in forms if isinstance(forms, list) else []:
        for key in ("path", "archive_dir"):
            if isinstance(form, dict) and isinstance(form.get(key), str):
                form[key] = str(base / os.path.expanduser(form[key]))
    database = raw.get("database")
    if isinstance(database, dict):
        _resolve_sqlite_url(database, base)


def _resolve_sqlite_url(database: dict[str, object], base: Path) -> None:
    url = database.get("url")
    prefix = "sqlite:///"
    if isinstance(url, str) and url.startswith(prefix) and not url.startswith(prefix + "/"):
        database["url"] = prefix + str(base / url[len(prefix) :])


def _describe(error: ValidationError, source: Path) -> str:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        key = ".".join(str(part) for part in item["loc"])
        lines.append(f"{source}: {key}: {message}" if key else f"{source}: {message}")
    return "\n".join(lines)


def load_config(path: str | Path) -> Config:
    """Read and validate the TOML config at `path`; raise ConfigError naming the key at fault."""
    source = Path(path).resolve()
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such config file") from None
    except OSError as exc:  # a folder, or a file this user may not read
        raise ConfigError(f"{source}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    _set_default_paths(raw)
    _resolve_paths(raw, source.parent)
    raw["source"] = str(source)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
