"""Doctor checks of this machine: a loaded `Config` in, `Check`s out.

Secrets (every configured password, client secret, certificate, service-account file and the
outbox passphrase: a file exists, only its owner can read it, it is not empty; an environment
variable is set; an inline secret sits in a config file only its owner can read; one systemd
passes the unit only is skipped outside it), data_dir (there, private, every file in it its
owner's) and its disk space, the form export folders, the Maildir and the metrics textfile's
folder (usable by the daemon's user: data_dir's owner), and the database (reachable, its schema
at this version's newest migration). Secrets are read to check them, never shown.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from sqlalchemy import URL

from pipeline.app import StartupError, outbox_passphrase
from pipeline.config import (
    Config,
    ConfigError,
    OAuth2Config,
    SignIn,
    credential_path,
    loose_mode,
)
from pipeline.doctor.result import FAIL, PASS, SKIP, WARN, Check
from pipeline.intake import SourceError
from pipeline.intake.forms import FormSource
from pipeline.keys import user_name
from pipeline.store import (
    DatabaseError,
    database_url,
    open_engine,
    schema_lag,
    schema_revision,
    shown,
    sqlite_path,
)

GIB = 1024**3
LOW_SPACE_BYTES = GIB  # data_dir's file system: warn below this much free space
LOW_SPACE_SHARE = 0.10  # or below this share of it
OAUTH2_FILES = ("certificate_file", "service_account_file")  # besides client_secret_file
IN_THE_UNIT = (
    "to check it, run doctor as the daemon runs, with the unit's credentials: systemd-run "
    "--pipe --wait -p User=USER -p LoadCredential=NAME:FILE intake doctor (the README's intake "
    "shell function)"
)


def check_config(config: Config) -> list[Check]:
    sources = [name for name in ("imap", "maildir") if getattr(config, name)]
    sources += [f"form {form.id}" for form in config.forms]
    found = ", ".join(sources) or "no source"
    return [Check("config", PASS, f"{config.source} is valid (sources: {found})")]


def _credential(key: str, path: Path) -> Path | Check:
    """The file a `*_file` key names, `${CREDENTIALS_DIRECTORY}` expanded; a SKIP when that is
    not set: systemd sets it for the unit only, so a shell cannot see the secret."""
    try:
        return credential_path(path, key)
    except ConfigError as exc:
        return Check(f"secret {key}", SKIP, str(exc), IN_THE_UNIT)


def file_secret(key: str, path: Path) -> Check:
    """A secret file: there, only its owner can read it, not empty."""
    name = f"secret {key}"
    real = _credential(key, path)
    if isinstance(real, Check):
        return real
    try:
        loose = loose_mode(real)
        data = real.read_bytes()
    except FileNotFoundError:
        return Check(name, FAIL, f"{real}: no such file", f"create it (mode 600) or correct {key}")
    except OSError as exc:
        fix = f"run doctor as the daemon's user, or correct {key}"
        return Check(name, FAIL, f"{real}: cannot be read ({exc.strerror})", fix)
    if loose is not None:
        detail = f"{real}: readable by group or others (mode {loose:o})"
        return Check(name, FAIL, detail, f"chmod 600 {real}")
    if not data.strip():
        return Check(
            name, FAIL, f"{real}: it is empty", f"write the secret into it, or correct {key}"
        )
    return Check(name, PASS, f"{real}: readable by its owner only")


def env_secret(key: str, variable: str) -> Check:
    value = os.environ.get(variable)
    if value is None or not value.strip():
        state = "is not set" if value is None else "is empty"
        fix = f"set {variable} for the daemon (and for doctor), or use {key[: -len('_env')]}_file"
        return Check(f"secret {key}", FAIL, f"environment variable {variable} {state}", fix)
    return Check(f"secret {key}", PASS, f"environment variable {variable} is set")


def inline_secret(config: Config, key: str) -> Check:
    """A secret written in the config file itself: only its owner should read that file."""
    loose = loose_mode(config.source)
    if loose is None:
        return Check(f"secret {key}", PASS, f"inline in {config.source} (readable by its owner)")
    detail = f"inline in {config.source}, which group or others can read (mode {loose:o})"
    return Check(f"secret {key}", WARN, detail, f"chmod 600 {config.source}, or use {key}_file")


def _given(
    config: Config, key: str, inline: str | None, file: Path | None, env: str | None
) -> Check | None:
    """The check of a secret given by `key_env`, `key_file` or `key`; None when none is."""
    if env:
        return env_secret(f"{key}_env", env)
    if file:
        return file_secret(f"{key}_file", file)
    return inline_secret(config, key) if inline is not None else None


def _oauth2_secrets(config: Config, where: str, oauth2: OAuth2Config) -> list[Check]:
    given = _given(
        config,
        f"{where}.client_secret",
        oauth2.client_secret,
        oauth2.client_secret_file,
        oauth2.client_secret_env,
    )
    checks = [given] if given else []
    for key in OAUTH2_FILES:
        path = getattr(oauth2, key)
        if path is not None:
            checks.append(file_secret(f"{where}.{key}", path))
    return checks


def _sign_in_secrets(config: Config, section: SignIn) -> list[Check]:
    where = section.section
    if section.auth == "oauth2" and section.oauth2 is not None:
        if where == "smtp" and config.imap and section.oauth2 is config.imap.oauth2:
            return []  # [smtp] signs in with [imap.oauth2]: checked there
        return _oauth2_secrets(config, f"{where}.oauth2", section.oauth2)
    if not section.username:
        return []
    given = _given(
        config, f"{where}.password", section.password, section.password_file, section.password_env
    )
    if given is None:
        fix = f"set {where}.password_file (or {where}.password_env)"
        return [Check(f"secret {where}.password", FAIL, f"{where}.username needs a password", fix)]
    return [given]


def _outbox_passphrase(config: Config) -> Check:
    """As the daemon reads it: set, readable, private, outside data_dir and the gpg homedir."""
    gpg = config.gpg
    key = next(
        (k for k in ("outbox_passphrase_file", "outbox_passphrase_env") if getattr(gpg, k)),
        "outbox_passphrase",
    )
    if key == "outbox_passphrase_file" and gpg.outbox_passphrase_file is not None:
        real = _credential(f"gpg.{key}", gpg.outbox_passphrase_file)
        if isinstance(real, Check):
            return real
    try:
        outbox_passphrase(config)
    except StartupError as exc:
        message = str(exc).removeprefix(f"{config.source}: ")
        return Check(f"secret gpg.{key}", FAIL, message, f"correct gpg.{key}")
    if gpg.outbox_passphrase is not None:
        return inline_secret(config, "gpg.outbox_passphrase")
    if gpg.outbox_passphrase_env:
        return env_secret("gpg.outbox_passphrase_env", gpg.outbox_passphrase_env)
    return file_secret("gpg.outbox_passphrase_file", gpg.outbox_passphrase_file or Path())


def check_secrets(config: Config) -> list[Check]:
    checks = _sign_in_secrets(config, config.imap) if config.imap else []
    return [*checks, *_sign_in_secrets(config, config.smtp), _outbox_passphrase(config)]


def daemon_uid(config: Config) -> int:
    """The daemon's user as far as this machine tells: data_dir's owner, else doctor's own."""
    folder = config.data_dir
    return folder.stat().st_uid if folder.is_dir() else os.geteuid()


def may(uid: int, path: Path, access: int) -> bool:
    """Whether the user `uid` may `access` (os.R_OK | os.W_OK | os.X_OK) `path`: os.access for
    doctor's own user, else by its mode bits (owner, group or others; ACLs are not read)."""
    if uid == os.geteuid():
        return os.access(path, access)
    if uid == 0:
        return True
    found = path.stat()
    try:
        user = pwd.getpwuid(uid)
        groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    except KeyError:
        groups = set()
    shift = 6 if found.st_uid == uid else 3 if found.st_gid in groups else 0
    return (found.st_mode >> shift) & access == access


def _foreign(folder: Path, owner: int) -> Check | None:
    """A FAIL when files in data_dir belong to another user than its owner (made by root
    running a command the daemon's user should have run): the daemon cannot change them."""
    found = [path for path in folder.rglob("*") if path.lstat().st_uid != owner]
    if not found:
        return None
    name = user_name(owner)
    some = ", ".join(str(path.relative_to(folder)) for path in found[:3])
    detail = (
        f"{len(found)} file(s) in {folder} belong to another user than its owner {name} "
        f"({some}{', ...' if len(found) > 3 else ''}): the daemon may fail on them"
    )
    return Check("data_dir", FAIL, detail, f"chown -R {name}: {folder}")


def check_data_dir(config: Config) -> list[Check]:
    folder = config.data_dir
    if not folder.exists():
        fix = f"create it for the daemon's user (install -d -m 700 -o USER {folder}; the daemon "
        fix += "makes it at start when it may), or correct data_dir"
        return [Check("data_dir", WARN, f"{folder} does not exist yet", fix)]
    if not folder.is_dir():
        return [Check("data_dir", FAIL, f"{folder} is not a folder", "correct data_dir")]
    loose = loose_mode(folder)
    if loose is not None:
        detail = f"{folder} is readable by group or others (mode {loose:o})"
        return [Check("data_dir", FAIL, detail, f"chmod 700 {folder}")]
    owner = folder.stat().st_uid
    foreign = _foreign(folder, owner)
    if foreign is not None:
        return [foreign]
    if owner != os.geteuid():
        name, me = user_name(owner), user_name(os.geteuid())
        detail = f"{folder} belongs to {name}, doctor runs as {me}: the daemon may find otherwise"
        return [Check("data_dir", WARN, detail, f"run doctor as {name} (sudo -u {name} ...)")]
    return [Check("data_dir", PASS, f"{folder} is private (mode 700)")]


def _size(count: float) -> str:
    return f"{count / GIB:.1f} GiB"


def check_disk(config: Config) -> list[Check]:
    """Free space where data_dir is (or will be): the database, held mail, form archives."""
    place = config.data_dir
    while not place.exists() and place != place.parent:
        place = place.parent
    usage = shutil.disk_usage(place)
    share = usage.free / usage.total if usage.total else 0.0
    detail = f"{_size(usage.free)} free of {_size(usage.total)} ({share:.0%}) at {place}"
    if usage.free < LOW_SPACE_BYTES or share < LOW_SPACE_SHARE:
        fix = "free some space, or move data_dir to a larger file system"
        return [Check("disk space", WARN, detail, fix)]
    return [Check("disk space", PASS, detail)]


def check_forms(config: Config) -> list[Check]:
    """Each form's export folder is there and can be read (and changed, unless after = keep)."""
    checks = []
    for form in config.forms:
        name = f"form {form.id}"
        try:
            files = FormSource(form, config.data_dir).files()
        except SourceError as exc:
            fix = "create the folder the exports are saved to, or correct forms.path"
            checks.append(Check(name, FAIL, str(exc).removeprefix(f"form:{form.id}: "), fix))
            continue
        except OSError as exc:
            fix = "let the daemon's user read the folder, or correct forms.path"
            checks.append(Check(name, FAIL, f"{form.path}: cannot be read ({exc.strerror})", fix))
            continue
        folder = Path(form.path).parent
        access = os.R_OK | os.X_OK | (0 if form.after == "keep" else os.W_OK)
        if folder.is_dir() and not os.access(folder, access):  # (a glob in it: not checked)
            need = "read" if form.after == "keep" else "read and change"
            fix = f"let the daemon's user {need} files in {folder}"
            checks.append(Check(name, FAIL, f"{folder}: the daemon cannot {need} it", fix))
            continue
        checks.append(Check(name, PASS, f"{form.path}: {len(files)} export file(s) waiting"))
    return checks


def _no_folder(config: Config, url: URL, folder: Path) -> Check:
    """The SQLite database's folder is not there: neither the daemon nor db upgrade makes it."""
    key = "database.url" if config.database.url else "data_dir"
    fix = f"create it for the daemon's user (install -d -m 700 -o USER {folder}), or correct {key}"
    return Check("database", FAIL, f"{shown(url)}: the folder {folder} does not exist", fix)


def check_database(config: Config) -> list[Check]:
    """Reachable, and its schema at the newest migration this version has. Writes nothing."""
    try:
        url = database_url(config.database_url)
        path = sqlite_path(url)
        if path is not None and not path.parent.is_dir():
            return [_no_folder(config, url, path.parent)]
        engine = open_engine(config.database_url)
    except DatabaseError as exc:
        return [Check("database", FAIL, str(exc), "correct database.url")]
    try:
        current, head = schema_revision(engine)
    except DatabaseError as exc:
        fix = "check database.url; is the database server up, does the database exist?"
        return [Check("database", FAIL, str(exc), fix)]
    finally:
        engine.dispose()
    if current == head:
        return [Check("database", PASS, f"{shown(engine.url)}: schema current (revision {head})")]
    return [Check("database", FAIL, *schema_lag(engine.url, current, head))]


def check_metrics(config: Config) -> list[Check]:
    """`[metrics] textfile`: its folder is there and the daemon's user may write in it (the file
    is written beside it and renamed over it)."""
    path = config.metrics.textfile
    if path is None:
        return []
    folder, name = path.parent, user_name(daemon_uid(config))
    if not folder.is_dir():
        fix = "create it (node_exporter's --collector.textfile.directory), or correct "
        return [Check("metrics", FAIL, f"{folder}: no such folder", fix + "metrics.textfile")]
    if not may(daemon_uid(config), folder, os.W_OK | os.X_OK):
        detail = f"{folder}: the daemon's user {name} cannot write in it"
        fix = f"let {name} write in {folder} (and name it in the unit's ReadWritePaths=), or "
        return [Check("metrics", FAIL, detail, fix + "correct metrics.textfile")]
    if path.suffix != ".prom":
        fix = "end metrics.textfile in .prom: node_exporter reads only *.prom files"
        return [Check("metrics", WARN, f"{path}: not a .prom file", fix)]
    return [Check("metrics", PASS, f"{path}: the daemon's user {name} may write it")]


def check_maildir(config: Config) -> list[Check]:
    """`[maildir] path`: a Maildir whose messages the daemon's user may read and remove."""
    if config.maildir is None:
        return []
    path, uid = config.maildir.path, daemon_uid(config)
    missing = [sub for sub in ("cur", "new", "tmp") if not (path / sub).is_dir()]
    if not path.is_dir() or missing:
        found = "no such folder" if not path.is_dir() else f"not a Maildir (no {missing[0]}/)"
        fix = "point maildir.path at the Maildir the MTA delivers to (cur, new and tmp in it)"
        return [Check("maildir", FAIL, f"{path}: {found}", fix)]
    folders = [path, path / "new", path / "cur"]
    if not all(may(uid, folder, os.R_OK | os.W_OK | os.X_OK) for folder in folders):
        name = user_name(uid)
        detail = f"{path}: the daemon's user {name} cannot read and remove messages in it"
        fix = f"let {name} read and change {path}, its new/ and cur/ (and name it in the unit's "
        return [Check("maildir", FAIL, detail, fix + "ReadWritePaths=), or correct maildir.path")]
    waiting = sum(1 for folder in folders[1:] for entry in folder.iterdir() if entry.is_file())
    return [Check("maildir", PASS, f"{path}: a Maildir, {waiting} message(s) waiting")]
