"""A whole deployment on real parts: Dovecot, the SMTP sink, gpg keys, SQLite or PostgreSQL.

`deployment` writes a config, a rules folder (the shipped routing rules plus services whose
keys are the session's test keys) and uses the shipped templates; `Deployment.run_once()` runs
`run_daemon.py --once` as a separate process, exactly as an operator would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.app import App
from pipeline.cli import main
from pipeline.config import Config, load_config
from pipeline.daemon import run_once
from pipeline.demo import write_rules
from tests.servers.dovecot import Dovecot
from tests.servers.gpg import KeySet
from tests.servers.smtp import Received, SmtpSink

REPO = Path(__file__).resolve().parents[2]


def others_may_read_the_checkout() -> bool:
    """Whether another user (the tests' `nobody`) can import this checkout's package: every
    folder above it passable by others. A clone in a private folder (`mktemp -d` makes one
    mode 0700) is not."""
    return all(folder.stat().st_mode & 0o001 for folder in (REPO / "pipeline", *REPO.parents))


INTAKE = "report@example.ac.uk"
ANONYMOUS = "anonymous@example.ac.uk"
ADMIN = "security-admin@example.ac.uk"
OUTBOX_PASSPHRASE = "correct horse battery staple 8c1f"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Deployment:
    root: Path
    keys: KeySet
    imap: Dovecot
    smtp: SmtpSink
    database_url: str | None = None
    keys_dir: Path | None = None  # a private copy for tests that change keys
    # How the config gives the outbox passphrase (a whole line under [gpg]; "" for none).
    passphrase_line: str = f'outbox_passphrase = "{OUTBOX_PASSPHRASE}"'
    logs: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / "intake.toml"

    @property
    def data_dir(self) -> Path:
        return self.root / "var"

    @property
    def temp_dir(self) -> Path:
        """The system temp folder of every process the deployment runs (TMPDIR)."""
        return self.root / "tmp"

    @property
    def rules_dir(self) -> Path:
        return self.root / "rules"

    def config(self) -> Config:
        return load_config(self.config_path)

    def write(self, extra: str = "", imap_extra: str = "") -> None:
        """(Re)write the config file; `extra` is appended, `imap_extra` goes into [imap]."""
        database = f'[database]\nurl = "{self.database_url}"\n' if self.database_url else ""
        self.config_path.write_text(
            f"""data_dir = "var"
{database}
[imap]
host = "{self.imap.host}"
port = {self.imap.port}
security = "none"
username = "{self.imap.username}"
password_env = "TEST_IMAP_PASSWORD"
timeout_seconds = 10
{imap_extra}
[smtp]
host = "{self.smtp.host}"
port = {self.smtp.port}
from = "Report and Support <{INTAKE}>"
timeout_seconds = 10

[intake]
anonymous_addresses = ["{ANONYMOUS}"]
intake_addresses = ["{INTAKE}"]

[gpg]
records_keys = ["{self.keys.records_fpr}"]
keys_dir = "{self.keys_dir or self.keys.keys_dir}"
{self.passphrase_line}

[rules]
dir = "rules"

[templates]
dir = "{REPO / "templates"}"

[alerts]
admin = ["{ADMIN}"]
{extra}"""
        )

    def intake(self, *args: str) -> Run:
        """`python -m pipeline ARGS --config ...` as a separate process."""
        return self._run(
            [sys.executable, "-m", "pipeline", *args, "--config", str(self.config_path)]
        )

    def run_once(self, crash_at: str | None = None) -> Run:
        """`run_daemon.py --once`; with `crash_at`, INTAKE_CRASH_AT makes it SIGKILL itself."""
        argv = [sys.executable, str(REPO / "run_daemon.py"), "--config", str(self.config_path)]
        run = self._run([*argv, "--once"], {"INTAKE_CRASH_AT": crash_at} if crash_at else {})
        self.logs.append(run.stderr)
        return run

    def run_in_process(self) -> int:
        """One `--once` run inside the test process (faster; same code path as the daemon)."""
        os.environ["TEST_IMAP_PASSWORD"] = self.imap.password
        app = App.open(self.config())
        try:
            return run_once(app)
        finally:
            app.close()
            del os.environ["TEST_IMAP_PASSWORD"]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of the processes this deployment runs."""
        self.temp_dir.mkdir(exist_ok=True)
        return {
            **os.environ,
            "TEST_IMAP_PASSWORD": self.imap.password,
            "TMPDIR": str(self.temp_dir),
            **(extra or {}),
        }

    def own_keys(self) -> Path:
        """Give this deployment a private copy of the keys folder, to change keys in."""
        self.keys_dir = self.root / "keys"
        shutil.copytree(self.keys.keys_dir, self.keys_dir)
        self.write()
        return self.keys_dir

    def decrypted(self, received: Received) -> bytes | None:
        """A referral's inner MIME message, decrypted with the services' keys; None for a mail
        that is not PGP/MIME (an acknowledgement, an alert)."""
        if received.message.get_content_type() != "multipart/encrypted":
            return None
        encrypted = received.message.get_payload()[1].get_payload(decode=True)  # type: ignore[index,union-attr]
        return self.keys.decrypt(encrypted)

    def referrals(self) -> list[bytes]:
        """Every referral the SMTP sink received so far, decrypted."""
        found = (self.decrypted(received) for received in self.smtp.messages)
        return [inner for inner in found if inner is not None]

    def assert_nowhere(self, canaries: list[str], files: list[Path]) -> None:
        """None of the canaries in these files nor in any log of the runs so far."""
        for path in files:
            data = path.read_bytes()
            for canary in canaries:
                assert canary.encode() not in data, f"{canary} in {path}"
        for log in self.logs:
            for canary in canaries:
                assert canary not in log

    def _run(self, argv: list[str], extra_env: dict[str, str] | None = None) -> Run:
        env = self.env(extra_env)
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=self.root, timeout=120
        )
        return Run(done.returncode, done.stdout, done.stderr)


Intake = Callable[..., Run]


@pytest.fixture
def intake(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Intake:
    """intake(*args): `intake ARGS --config ...` run in this process (quicker than a new one, as
    admin commands that open the App would be): exit status, standard output and error."""
    monkeypatch.setenv("TEST_IMAP_PASSWORD", deployment.imap.password)

    def run(*args: str) -> Run:
        capsys.readouterr()
        code = main([*args, "--config", str(deployment.config_path)])
        out = capsys.readouterr()
        return Run(code, out.out, out.err)

    return run


@pytest.fixture
def deployment(
    tmp_path: Path, gpg_keys: KeySet, dovecot: Dovecot, smtp_sink: SmtpSink
) -> Iterator[Deployment]:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    write_rules(rules_dir, gpg_keys.emails, gpg_keys.services)
    found = Deployment(tmp_path, gpg_keys, dovecot, smtp_sink)
    found.write()
    yield found
    subprocess.run(
        ["gpgconf", "--homedir", str(found.data_dir / "gnupg"), "--kill", "gpg-agent"],
        capture_output=True,
        check=False,
    )


def email(
    body: str,
    *,
    sender: str = "Sam Student <sam.student@example.ac.uk>",
    to: str = INTAKE,
    subject: str = "Something happened",
    message_id: str = "<m1@example.ac.uk>",
    extra_headers: str = "",
) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
        f"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n{extra_headers}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()
