"""The bench's servers and deployments: nothing in, a running world out.

`World` starts a private Dovecot (tests/servers/dovecot.py), the bench's SMTP sink, throwaway
keys (tests/servers/gpg.py: records and two services) and a GnuPG home holding only their
public keys for the floor, all under one temp folder that `close()` removes. It appends mail
(`append`, one IMAP connection for a whole backlog), writes the counting gpg wrapper
(`counting_gpg`) and makes `Deployment`s: a folder with a config file (TOML), the bench's rules
and its own data folder, run as `python -m pipeline ...` processes.

`postgres_admin(url)` checks the PostgreSQL server the bench may use; `PostgresDatabase` makes
a fresh database on it for one deployment and drops it afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from bench.backlog import ANONYMOUS_ADDRESS, INTAKE_ADDRESS, RULES, Message
from bench.sink import Sink
from pipeline.demo import write_rules
from tests.servers.dovecot import Dovecot
from tests.servers.gpg import KeySet, make_keyset
from tests.servers.postgres import HOST, PORT, USER

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = f"postgresql://{USER}@{HOST}:{PORT}/postgres"
PASSWORD_ENV = "BENCH_IMAP_PASSWORD"
OUTBOX_PASSPHRASE = "bench outbox passphrase 5d1e"
#: The bench's own limit, so that it measures memory on large mail whatever the default is.
MESSAGE_BYTES = 50_000_000
APPEND_CHUNK = 50  # messages per MULTIAPPEND at most
APPEND_BYTES = 16 * 1024 * 1024  # and bytes

#: A gpg that writes its option flags (never values: no content is ever in gpg's argv) as one
#: line to a file, then runs the real gpg.
COUNTING_GPG = """\
#!/bin/sh
flags=""
for arg in "$@"; do
  case "$arg" in --*) flags="$flags ${{arg%%=*}}";; -*) flags="$flags $arg";; esac
done
printf '%s\\n' "$flags" >> '{count_file}'
exec '{real}' "$@"
"""


class BenchError(RuntimeError):
    """The bench could not set something up or a pass did not finish; the message says what."""


class World:
    """See the module docstring."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep  # leave the folder (configs, logs, databases) for a look afterwards
        self.root = Path(tempfile.mkdtemp(prefix="intake-bench-"))
        self.dovecot = Dovecot()
        self.sink = Sink()
        self.keys: KeySet | None = None
        self.floor_home = self.root / "floor-gnupg"
        self._started: list[str] = []

    def start(self) -> World:
        self.dovecot.start()
        self._started.append("dovecot")
        self.sink.start()
        self._started.append("sink")
        (self.root / "keys").mkdir()
        self.keys = make_keyset(self.root / "keys")
        self.floor_home.mkdir(mode=0o700)
        public = b"".join(path.read_bytes() for path in sorted(self.keys.keys_dir.glob("*.asc")))
        gpg(self.floor_home, "--import", data=public)
        return self

    def close(self) -> None:
        if "sink" in self._started:
            self.sink.stop()
        if "dovecot" in self._started:
            self.dovecot.close()
        if self.keys is not None:
            self.keys.close()
        kill_agent(self.floor_home)
        if self.keep:
            print(f"bench: its folder is kept: {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> World:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def keyset(self) -> KeySet:
        if self.keys is None:
            raise BenchError("The bench's keys are not made yet: call World.start() first.")
        return self.keys

    def service_addresses(self) -> set[str]:
        return {address.lower() for address in self.keyset.emails.values()}

    def append(self, messages: Iterable[Message], folder: str = "INBOX") -> None:
        """APPEND every message to `folder` over one IMAP connection, in MULTIAPPEND chunks
        of at most `APPEND_CHUNK` messages or `APPEND_BYTES` (a larger message goes alone)."""
        with self.dovecot.client(timeout=120) as imap:
            if not imap.folder_exists(folder):
                imap.create_folder(folder)
            chunk: list[bytes] = []
            for message in messages:
                size = sum(map(len, chunk))
                if chunk and (len(chunk) == APPEND_CHUNK or size + len(message.raw) > APPEND_BYTES):
                    imap.multiappend(folder, chunk)
                    chunk = []
                chunk.append(message.raw)
            if chunk:
                imap.multiappend(folder, chunk)

    def inbox_count(self) -> int:
        return len(self.dovecot.uids())

    def counting_gpg(self, name: str) -> tuple[Path, Path]:
        """A counting wrapper of the real gpg (see `COUNTING_GPG`) and its count file."""
        real = shutil.which("gpg")
        if real is None:
            raise BenchError("gpg is not installed: apt-get install gnupg")
        script, count_file = self.root / f"{name}-gpg", self.root / f"{name}-gpg.count"
        script.write_text(COUNTING_GPG.format(count_file=count_file, real=real))
        script.chmod(0o755)
        count_file.write_text("")
        return script, count_file

    def deployment(self, name: str, **settings: Any) -> Deployment:
        """A new deployment in the folder `name`; `settings` are `Deployment` fields."""
        deployment = Deployment(self.root / name, self, **settings)
        deployment.root.mkdir()
        rules = deployment.root / "rules"
        rules.mkdir()
        write_rules(rules, self.keyset.emails, self.keyset.services)
        (rules / "routing.yaml").write_text(RULES)
        deployment.write()
        return deployment


@dataclass
class Deployment:
    """One deployment of the project under `root`; `write()` (re)writes its config."""

    root: Path
    world: World
    database_url: str | None = None
    gpg_binary: Path | None = None
    idle: bool = False
    poll_seconds: int = 3600
    outbox_seconds: int = 3600
    forms: str = ""  # [[forms]] tables
    logs: list[Path] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / "intake.toml"

    def write(self) -> None:
        keys, imap, sink = self.world.keyset, self.world.dovecot, self.world.sink
        database = f'[database]\nurl = "{self.database_url}"\n' if self.database_url else ""
        binary = f'binary = "{self.gpg_binary}"\n' if self.gpg_binary else ""
        self.config_path.write_text(
            f"""data_dir = "var"
{database}
[imap]
host = "{imap.host}"
port = {imap.port}
security = "none"
username = "{imap.username}"
password_env = "{PASSWORD_ENV}"
idle = {"true" if self.idle else "false"}

[smtp]
host = "{sink.host}"
port = {sink.port}
from = "Report and Support <{INTAKE_ADDRESS}>"

[intake]
anonymous_addresses = ["{ANONYMOUS_ADDRESS}"]
intake_addresses = ["{INTAKE_ADDRESS}"]

[gpg]
records_keys = ["{keys.records_fpr}"]
keys_dir = "{keys.keys_dir}"
outbox_passphrase = "{OUTBOX_PASSPHRASE}"
{binary}
[rules]
dir = "rules"

[templates]
dir = "{REPO / "templates"}"

[limits]
message_bytes = {MESSAGE_BYTES}

[schedule]
poll_seconds = {self.poll_seconds}
outbox_seconds = {self.outbox_seconds}
{self.forms}"""
        )

    def argv(self, *args: str) -> list[str]:
        """`python -m pipeline ARGS --config FILE` (the `intake` command)."""
        return [sys.executable, "-m", "pipeline", *args, "--config", str(self.config_path)]

    def env(self) -> dict[str, str]:
        temp = self.root / "tmp"
        temp.mkdir(exist_ok=True)
        return {**os.environ, PASSWORD_ENV: self.world.dovecot.password, "TMPDIR": str(temp)}

    def log_file(self, name: str) -> Path:
        path = self.root / f"{name}.log"
        self.logs.append(path)
        return path

    def close(self) -> None:
        kill_agent(self.root / "var" / "gnupg")


def gpg(home: Path, *args: str, data: bytes = b"", binary: str = "gpg") -> bytes:
    """Run gpg in `home` in batch mode; its standard output, or BenchError with its errors."""
    argv = [binary, "--homedir", str(home), "--batch", "--quiet", "--no-tty", *args]
    done = subprocess.run(argv, input=data, capture_output=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def kill_agent(home: Path) -> None:
    if home.exists():
        kill = ["gpgconf", "--homedir", str(home), "--kill", "all"]
        subprocess.run(kill, capture_output=True, check=False)


def postgres_admin(url: str) -> str | None:
    """Why the PostgreSQL server at `url` cannot be used (None: it can)."""
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {make_url(url).render_as_string()} does not answer: {exc}".strip()
    return None


class PostgresDatabase:
    """A fresh database on the server of `admin_url`, dropped by `drop()`; `url` is its
    SQLAlchemy URL for the project (driver psycopg 3)."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"intake_bench_{secrets.token_hex(6)}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        url = make_url(admin_url).set(drivername="postgresql+psycopg", database=self.name)
        self.url = url.render_as_string(hide_password=False)

    def drop(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )
