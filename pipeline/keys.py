"""Keys: the config in, the OpenPGP keys the deployment uses out (`intake keys`); a service's
public key file in, that key written into `gpg.keys_dir` out (`intake keys import`).

`key_table` lists the records keys (`gpg.records_keys`), the outbox key (in the daemon's gpg
homedir; there is none before the daemon's first start), the keys services.yaml pins (with the
services that pin each) and any other key in keys_dir, each with its fingerprint, user ids,
whether it can encrypt now (and why not) and until when its encryption subkey can. The keys
folder is read in a throwaway homedir, as the daemon will read it; nothing is written.

`import_command` reads one public key from a file, shows its user ids and subkey, then its
fingerprint last, asks on a terminal (`--yes` skips the question; without a terminal it refuses)
and writes the key, armoured and public only, into keys_dir, where the daemon takes it in at its
next poll: over the file that holds that key alone already (a renewed key replaces
`student-services.asc`, keeping its mode, owner and group), else as `<FINGERPRINT>.asc` (mode
0644, keys_dir's group), whatever the umask. A file holding a secret key, several
keys, or a key that cannot encrypt is refused. User ids are shown through `printable` (they can
hold terminal escapes); `--json` gives them as they are, JSON-escaped.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.app import scan_keys
from pipeline.config import Config, ConfigError
from pipeline.crypto import (
    Crypto,
    CryptoError,
    KeyInfo,
    PublicKey,
    printable,
    read_public_key,
    scratch_keyring,
)
from pipeline.rules import RuleError, Service, load_ruleset

# "unused": in keys_dir, pinned by nothing; "unknown": in keys_dir, services.yaml unreadable
Role = Literal["records", "outbox", "service", "unused", "unknown"]
NO_OUTBOX_KEY = "none yet: the daemon makes it at its first start"
# gpg run as another user (root) in the daemon's homedir would leave files the daemon cannot
# use: the outbox key is looked at only by the homedir's owner.
OTHER_OWNER = "not looked at: gpg.homedir belongs to"


@dataclass(frozen=True)
class KeyEntry:
    """One key as the deployment uses it; `problem` None when it can encrypt now."""

    role: Role
    fingerprint: str  # "" for an outbox key not made yet
    user_ids: tuple[str, ...]
    problem: str | None
    expires: float | None = None  # when its encryption subkey stops (None: never)
    subkey: str | None = None  # the encryption subkey gpg uses now
    used_by: tuple[str, ...] = ()  # the services that pin it

    @property
    def usable(self) -> bool:
        return self.problem is None

    @property
    def looked_at(self) -> bool:
        """False for an outbox key not made yet, or in a homedir of another user."""
        return not (self.problem and self.problem.startswith((NO_OUTBOX_KEY, OTHER_OWNER)))

    @property
    def pinned(self) -> bool:
        """Whether the deployment encrypts to it (or, for the outbox key, with it)."""
        return self.role not in ("unused", "unknown")

    def days_left(self, now: float | None = None) -> int | None:
        """Whole days until the key stops encrypting; None when it never does."""
        if self.expires is None:
            return None
        return int((self.expires - (now or time.time())) // 86400)

    def state(self) -> str:
        """`usable, encrypts until 2027-12-01 (in 365 days)`, or why it is not usable."""
        if self.problem:
            return f"NOT USABLE: {self.problem}"
        if self.expires is None:
            return "usable, does not expire"
        return f"usable, encrypts until {_day(self.expires)} (in {self.days_left()} days)"

    @property
    def user(self) -> str:
        """The first user id, printable; "" when the key has none."""
        return printable(self.user_ids[0]) if self.user_ids else ""

    def line(self) -> str:
        user = self.user or "(no user id)"
        used = f"  for {', '.join(self.used_by)}" if self.used_by else ""
        fingerprint = self.fingerprint or "-" * 40
        return f"{self.role:<7}  {fingerprint}  {user}{used}  {self.state()}"

    def to_json_dict(self) -> dict[str, object]:
        return {
            "role": self.role,
            "fingerprint": self.fingerprint or None,
            "user_ids": list(self.user_ids),
            "usable": self.usable,
            "problem": self.problem,
            "encryption_subkey": self.subkey,
            "expires": _day(self.expires) if self.expires else None,
            "used_by": list(self.used_by),
        }


def _day(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def _entry(role: Role, fpr: str, info: KeyInfo | None, used_by: tuple[str, ...] = ()) -> KeyEntry:
    if info is None:
        problem = "no public key with this fingerprint in gpg.keys_dir"
        return KeyEntry(role, fpr, (), problem, used_by=used_by)
    return KeyEntry(role, fpr, info.uids, info.problem, info.expires, info.subkey, used_by)


@dataclass(frozen=True)
class KeyTable:
    entries: list[KeyEntry]
    rules_error: str | None = None  # services.yaml could not be read: no service keys listed


def pinned_services(config: Config) -> tuple[dict[str, tuple[str, ...]], str | None]:
    """Fingerprint -> the ids of the services that pin it; or the rules' first error."""
    try:
        services: list[Service] = list(load_ruleset(config.rules.dir).services.values())
    except RuleError as exc:
        return {}, str(exc).splitlines()[0]
    pins: dict[str, tuple[str, ...]] = {}
    for service in services:
        pins[service.fingerprint] = (*pins.get(service.fingerprint, ()), service.id)
    return pins, None


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def outbox_entry(config: Config, passphrase: str | None = None) -> KeyEntry:
    """The outbox key in the daemon's homedir; with `passphrase`, whether it opens the key.
    A homedir not made yet is reported, not made."""
    if not config.gpg_home.is_dir():
        return KeyEntry("outbox", "", (), f"{NO_OUTBOX_KEY} (in {config.gpg_home})")
    owner = config.gpg_home.stat().st_uid
    if owner != os.geteuid():
        problem = f"{OTHER_OWNER} {user_name(owner)} ({config.gpg_home}); run as that user"
        return KeyEntry("outbox", "", (), problem)
    try:  # the gpg-agent this starts is stopped when done: no agent is left on the homedir
        with Crypto(config.gpg_home, config.gpg.binary, passphrase) as crypto:
            info = crypto.outbox_key()
            if info is None:
                return KeyEntry("outbox", "", (), f"{NO_OUTBOX_KEY} (in {config.gpg_home})")
            if passphrase is not None and info.problem is None:
                crypto.check_outbox_passphrase()
    except CryptoError as exc:
        return KeyEntry("outbox", "", (), str(exc))
    return _entry("outbox", info.fingerprint, info)


def key_table(config: Config, passphrase: str | None = None) -> KeyTable:
    """Every key the deployment uses (see the module docstring); CryptoError when keys_dir
    cannot be read."""
    keys = scan_keys(config)
    pins, rules_error = pinned_services(config)
    records = [fpr.upper() for fpr in config.gpg.records_keys]
    entries = [_entry("records", fpr, keys.get(fpr)) for fpr in records]
    entries.append(outbox_entry(config, passphrase))
    entries += [_entry("service", fpr, keys.get(fpr), ids) for fpr, ids in pins.items()]
    known = {*records, *pins}
    other: Role = "unknown" if rules_error else "unused"
    entries += [_entry(other, fpr, info) for fpr, info in keys.items() if fpr not in known]
    return KeyTable(entries, rules_error)


def list_command(config: Config, as_json: bool) -> int:
    """`intake keys [--json]`: one line (or JSON object) a key; exit 0."""
    table = key_table(config)
    if as_json:
        keys = [entry.to_json_dict() for entry in table.entries]
        print(json.dumps({"keys": keys, "rules_error": table.rules_error}, indent=2))
        return 0
    for entry in table.entries:
        print(entry.line())
    if table.rules_error:
        print(f"service keys not listed: {table.rules_error} (intake check-rules)")
    return 0


def key_target(config: Config, fingerprint: str) -> tuple[Path, list[Path]]:
    """Where an imported key is written: the first file of keys_dir holding this key alone (a
    renewed key replaces its file), else `<FINGERPRINT>.asc`; and the other files holding it,
    which the daemon merges with that one. CryptoError when keys_dir cannot be read."""
    with scratch_keyring(config.gpg.binary) as crypto:
        holding = [f for f in crypto.read_keys_dir(config.gpg.keys_dir) if fingerprint in f.keys]
    alone = [file.path for file in holding if len(file.keys) == 1]
    target = alone[0] if alone else config.gpg.keys_dir / f"{fingerprint}.asc"
    return target, [file.path for file in holding if file.path != target]


def describe_key(config: Config, key: PublicKey, target: Path, others: list[Path]) -> list[str]:
    """What an admin checks before importing: user ids, subkey, who pins it, which file it
    goes to, and last the fingerprint (what a forged user id must not be mistaken for)."""
    info = key.info
    pins, _ = pinned_services(config)
    if info.fingerprint in pins:
        pinned = f"pinned by {', '.join(pins[info.fingerprint])} in services.yaml"
    elif info.fingerprint in {f.upper() for f in config.gpg.records_keys}:
        pinned = "a records key (gpg.records_keys)"
    else:
        pinned = f"no service pins it yet: add `fingerprint: {info.fingerprint}` to services.yaml"
    entry = _entry("service", info.fingerprint, info)
    written = f"replaces {target.name}, which holds this key" if target.exists() else target.name
    merged = [
        f"also in:            {path.name} (with other keys: the daemon merges the two)"
        for path in others
    ]
    return [
        *(f"user id:            {printable(uid)}" for uid in info.uids),
        f"encryption subkey:  {info.subkey}, {entry.state()}",
        f"used:               {pinned}",
        f"file:               {written}",
        *merged,
        "Compare the fingerprint with the one the service gave you by another channel.",
        f"fingerprint:        {info.fingerprint}",
    ]


def _file_access(target: Path) -> tuple[int, int, int]:
    """The mode, owner and group `target` is written with: those of the file it replaces (the
    daemon, another user, may read it through its group); for a new file, a public key's 0644
    with keys_dir's group and this user as owner (-1: left as made). Never the umask: root's
    0077 would lock the daemon out of the key, and so of the whole folder."""
    try:
        old = target.stat()
    except FileNotFoundError:
        return 0o644, -1, target.parent.stat().st_gid
    return stat.S_IMODE(old.st_mode), old.st_uid, old.st_gid


def _write_key(target: Path, key: PublicKey) -> Path:
    """Write the armoured public key as `target`, atomically, with `_file_access`; OSError
    when it cannot be (PermissionError: another owner, a folder this user cannot write)."""
    mode, owner, group = _file_access(target)
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        with partial.open("x", encoding="ascii") as out:
            os.fchown(out.fileno(), owner, group)
            os.fchmod(out.fileno(), mode)
            out.write(key.armored)
        os.replace(partial, target)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    return target


def import_command(config: Config, keyfile: Path, yes: bool) -> int:
    """`intake keys import KEYFILE [--yes]`: 0 when written, 1 when refused or declined."""
    keys_dir = config.gpg.keys_dir
    if not keys_dir.is_dir():
        raise ConfigError(f"{config.source}: gpg.keys_dir: {keys_dir}: no such folder")
    try:
        data = keyfile.read_bytes()
    except OSError as exc:
        print(f"{keyfile}: cannot be read ({exc.strerror})", file=sys.stderr)
        return 1
    key = read_public_key(data, str(keyfile), config.gpg.binary)
    target, others = key_target(config, key.info.fingerprint)
    print("\n".join(describe_key(config, key, target, others)))
    if not yes:
        if not sys.stdin.isatty():
            print(
                "not imported: standard input is not a terminal; check the fingerprint above "
                "and run again with --yes",
                file=sys.stderr,
            )
            return 1
        verb = "Replace" if target.exists() else "Write"
        if input(f"{verb} {target}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not imported")
            return 1
    try:
        _write_key(target, key)
    except OSError as exc:
        print(
            f"{target}: not written ({exc.strerror}): run intake keys import as the owner of "
            "gpg.keys_dir and its files (root)",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {target}; the daemon takes it in at its next poll")
    return 0


def add_arguments(
    keys: argparse.ArgumentParser, add_config: Callable[[argparse.ArgumentParser], None]
) -> None:
    """`intake keys [--json]` and `intake keys import KEYFILE [--yes]`, each taking --config
    (`add_config`: the CLI's own)."""
    add_config(keys)
    keys.add_argument("--json", action="store_true", help="one JSON object")
    actions = keys.add_subparsers(dest="action", metavar="import")
    load = actions.add_parser("import", help="write a service's public key into gpg.keys_dir")
    # SUPPRESS: without it here, a --config given before `import` would be overwritten
    load.add_argument("--config", default=argparse.SUPPRESS, help="as for intake keys")
    load.add_argument("keyfile", type=Path, metavar="KEYFILE", help="a public key file")
    load.add_argument("--yes", action="store_true", help="import without asking")


def command(config: Config, args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "import":
        return import_command(config, args.keyfile, args.yes)
    return list_command(config, args.json)
