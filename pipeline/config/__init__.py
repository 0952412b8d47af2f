"""Configuration: one TOML file in, a validated `Config` out.

Relative paths are resolved against the config file's folder. Secrets come from the file, from a
file named by `*_file`, or from an environment variable named by `*_env`. Every problem is a
`ConfigError` whose message names the file and the key, e.g. `intake.toml: imap.port: ...`.

Modules, in the order they build on each other: `base` (ConfigError, Section), `secrets`
(read_secret, credential_path, from_systemd, private files, SecretSection), `signin` (the
[imap] and [smtp] tables, OAuth2Config, is_loopback), `sections` (every other table), `load`
(Config and load_config). Every public name is importable from `pipeline.config` itself.
"""

from pipeline.config.base import ConfigError, Section
from pipeline.config.load import Config, load_config
from pipeline.config.secrets import (
    SecretSection,
    credential_path,
    from_systemd,
    loose_mode,
    read_secret,
)
from pipeline.config.sections import (
    PASSPHRASE_KEYS,
    WITHHOLD_KINDS,
    AlertsConfig,
    AnonymousWhen,
    AttachmentsConfig,
    DatabaseConfig,
    DisplayConfig,
    FormConfig,
    FormField,
    GpgConfig,
    IntakeConfig,
    LimitsConfig,
    LogFormat,
    LoggingConfig,
    LogLevel,
    MaildirConfig,
    MetricsConfig,
    ReferralsConfig,
    RetentionConfig,
    RulesConfig,
    ScheduleConfig,
    TemplatesConfig,
    WithholdKind,
    known_zone,
)
from pipeline.config.signin import (
    DEFAULT_SCOPES,
    SECRET_KEYS,
    Auth,
    ImapConfig,
    OAuth2Config,
    Provider,
    Security,
    SignIn,
    SmtpConfig,
    is_loopback,
)

__all__ = [
    "DEFAULT_SCOPES",
    "PASSPHRASE_KEYS",
    "SECRET_KEYS",
    "WITHHOLD_KINDS",
    "AlertsConfig",
    "AnonymousWhen",
    "AttachmentsConfig",
    "Auth",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "DisplayConfig",
    "FormConfig",
    "FormField",
    "GpgConfig",
    "ImapConfig",
    "IntakeConfig",
    "LimitsConfig",
    "LogFormat",
    "LogLevel",
    "LoggingConfig",
    "MaildirConfig",
    "MetricsConfig",
    "OAuth2Config",
    "Provider",
    "ReferralsConfig",
    "RetentionConfig",
    "RulesConfig",
    "ScheduleConfig",
    "SecretSection",
    "Section",
    "Security",
    "SignIn",
    "SmtpConfig",
    "TemplatesConfig",
    "WithholdKind",
    "credential_path",
    "from_systemd",
    "is_loopback",
    "known_zone",
    "load_config",
    "loose_mode",
    "read_secret",
]
