"""Secrets in the config: where a password, client secret or passphrase is read from.

In: a key's inline value, a `*_file` path (which may start with `${CREDENTIALS_DIRECTORY}`,
systemd's LoadCredential=) or a `*_env` variable name. Out: the secret as a stripped string
(`read_secret`, `SecretSection.secret`), or a `ConfigError` naming the key and never the secret.
`credential_path` expands the systemd folder, `from_systemd` tells a file systemd passed the
unit, and a private file (the outbox passphrase) must be readable by its owner only and lie
outside the data folder.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from pipeline.config.base import ConfigError, Section


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


def loose_mode(path: Path) -> int | None:
    """The file's mode when group or others may use it (and systemd did not pass it), else
    None; OSError when it cannot be looked at."""
    mode = stat.S_IMODE(path.stat().st_mode)
    return mode if mode & 0o077 and not from_systemd(path) else None


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
        mode = loose_mode(real)
        if mode is not None:
            raise ConfigError(
                f"{key}: {path} is readable by group or others (mode {mode:o}); "
                f"run: chmod 600 {path}"
            )
        return real.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
