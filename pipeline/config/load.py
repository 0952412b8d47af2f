"""Loading the config: one TOML file in, a validated `Config` out.

Relative paths are resolved against the config file's folder (a `${CREDENTIALS_DIRECTORY}`
path is left for when it is read), default folders with them; `[smtp]` signing in with OAuth2
without its own table takes `[imap.oauth2]`, and forms without a zone take `[display]`'s.
Every problem is one `ConfigError` line per key: `intake.toml: imap.port: ...`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from pipeline.config.base import ConfigError, Section
from pipeline.config.secrets import _CREDENTIALS
from pipeline.config.sections import (
    AlertsConfig,
    AttachmentsConfig,
    DatabaseConfig,
    DisplayConfig,
    FormConfig,
    GpgConfig,
    IntakeConfig,
    LimitsConfig,
    LoggingConfig,
    MaildirConfig,
    MetricsConfig,
    ReferralsConfig,
    RetentionConfig,
    RulesConfig,
    ScheduleConfig,
    TemplatesConfig,
)
from pipeline.config.signin import ImapConfig, SmtpConfig


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

    @model_validator(mode="after")
    def _undelivered_needs_admins(self) -> Config:
        """`[retention] undelivered` purges a report only a week after an alert mail naming it
        was sent to the admins: without any, none would ever be purged."""
        if self.retention.undelivered is not None and not self.alerts.admin:
            raise ValueError(
                "retention.undelivered: the admins are told by mail a week before such a report "
                "is purged, and [alerts] admin names none: add their addresses to [alerts] "
                "admin, or remove retention.undelivered"
            )
        return self

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
