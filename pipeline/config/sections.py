"""The config's other tables: database, maildir, forms, intake, attachments, alerts, limits,
retention, gpg, rules, templates, referrals, schedule, logging, metrics and display.

In: each table's values. Out: one frozen `Section` per table with its defaults; a value out of
range, an unknown time zone (`known_zone`) or a bad fingerprint is a validation error naming
the key, and `GpgConfig.read_outbox_passphrase` reads the outbox passphrase or raises a
`ConfigError` naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import ConfigError, Section
from pipeline.config.secrets import _read_private_file, credential_path

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class DatabaseConfig(Section):
    url: str = ""


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

    # What the big providers take: Gmail receives mail up to 50 MB, Exchange Online 36 MB by
    # default (up to 150 MB). A 25 MiB attachment is a 34 MB message once base64-encoded.
    message_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
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
    for a key that never came, dead-lettered, or bounced); unset, such a report is never
    purged; set (it needs `[alerts] admin`), it goes no sooner than a week after an alert mail
    naming it was sent. Form archives are kept for ever while `routed`, `quarantined` or
    `undelivered` is unset; else as long as the longest."""

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
