"""A file root left in the daemon's way does not stop mail quietly: a `<db>.outbox.lock` the
daemon's user cannot open ends each outbox run with one line naming the file and the `chown`
that fixes it, `intake status` lists it (kind outbox), an alert is raised, `run --once` sets
exit bit 4, and mail goes again once the file is fixed. And root cannot make data_dir in a
deployment folder the daemon's user owns: a command that changes data refuses before it exists.
Run as root; the daemon's user here is `nobody`, its runs separate processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.app import App
from pipeline.demo import write_rules
from tests.integration.conftest import (
    ADMIN,
    OUTBOX_PASSPHRASE,
    REPO,
    Deployment,
    Run,
    email,
    others_may_read_the_checkout,
)
from tests.integration.test_cli import intake, one_line_error, write_config
from tests.servers.dovecot import Dovecot
from tests.servers.gpg import KeySet
from tests.servers.smtp import SmtpSink

NOBODY = 65534  # Debian's nobody

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root: the test gives the deployment to another user"
    ),
    pytest.mark.skipif(
        not others_may_read_the_checkout(),
        reason="runs intake as nobody, who cannot read this checkout (a folder above it is "
        "private, e.g. made by mktemp -d): clone it where others may pass, e.g. under /tmp",
    ),
]


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder the user nobody may pass through (tmp_path's parents are root's, mode 700)."""
    path = Path(tempfile.mkdtemp(prefix="intake-blocked-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


def give_to_nobody(folder: Path) -> None:
    for path in (folder, *folder.rglob("*")):
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


# The daemon's run as nobody. Python's own files are root's here (mode 700 above them), so a
# run as root on a copy of the deployment imports what a run needs first (its mail goes to a
# sink of its own), then the process becomes nobody and runs `intake run --once`; its exit
# status is that run's.
AS_THE_DAEMON = """
import os, sys
from pipeline.config import load_config
from pipeline.daemon import serve
serve(load_config(sys.argv[1]), once=True)
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.exit(serve(load_config(sys.argv[2]), once=True))
"""


@dataclass
class Daemon:
    """The deployment, given to nobody, and a copy of it as it was before (root's)."""

    deployment: Deployment
    warm: Path
    warm_sink: SmtpSink

    def run_once(self) -> Run:
        """`intake run --once` as nobody (after a run as root on a fresh copy of `warm`)."""
        with tempfile.TemporaryDirectory() as copy:
            shutil.copytree(self.warm, copy, dirs_exist_ok=True)
            config = Path(copy) / "intake.toml"
            port = f"port = {self.deployment.smtp.port}"
            config.write_text(config.read_text().replace(port, f"port = {self.warm_sink.port}"))
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    AS_THE_DAEMON,
                    str(config),
                    str(self.deployment.config_path),
                ],
                env=self.deployment.env(),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
            )
            stop_agent(Path(copy) / "var" / "gnupg")
        return Run(done.returncode, done.stdout, done.stderr)


def stop_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


@pytest.fixture
def daemon(
    folder: Path, gpg_keys: KeySet, dovecot: Dovecot, smtp_sink: SmtpSink
) -> Iterator[Daemon]:
    """A deployment in `folder` with a report taken in and its mail queued (nothing sent), all
    its files given to nobody."""
    (folder / "rules").mkdir()
    write_rules(folder / "rules", gpg_keys.emails, gpg_keys.services)
    deployment = Deployment(folder, gpg_keys, dovecot, smtp_sink)
    deployment.own_keys()  # a copy nobody may read
    dovecot.append(email("Something happened in the library."))
    os.environ["TEST_IMAP_PASSWORD"] = dovecot.password
    try:
        app = App.open(deployment.config())
        try:
            assert [result.counts for result in app.poll()] == [{"stored": 1}]
        finally:
            app.close()
    finally:
        del os.environ["TEST_IMAP_PASSWORD"]
    deployment.env()  # its TMPDIR
    warm = Path(tempfile.mkdtemp(prefix="intake-warm-"))
    shutil.copytree(folder, warm, dirs_exist_ok=True)
    give_to_nobody(folder)
    try:
        with SmtpSink() as warm_sink:
            yield Daemon(deployment, warm, warm_sink)
    finally:
        stop_agent(deployment.data_dir / "gnupg")
        shutil.rmtree(warm)


def status(deployment: Deployment) -> dict[str, list[dict[str, str]]]:
    run = deployment.intake("status", "--json")  # read-only: root may run it
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_a_lock_file_the_daemon_cannot_open_is_named_listed_alerted_and_exit_4(
    daemon: Daemon,
) -> None:
    deployment = daemon.deployment
    lock = deployment.data_dir / "intake.db.outbox.lock"
    lock.touch()  # root left it, mode 0600
    lock.chmod(0o600)

    blocked = daemon.run_once()

    assert blocked.returncode == 4, blocked.stderr  # mail could not be handed over
    assert deployment.smtp.messages == []
    fix = f"chown nobody {lock} (or remove it"
    said = f"outbox failed: OutboxBlocked: cannot use the outbox's lock file {lock}: Permission"
    assert said in blocked.stderr and fix in blocked.stderr, blocked.stderr
    found = status(deployment)
    [attention] = [item for item in found["attention"] if item["kind"] == "outbox"]
    assert str(lock) in attention["reason"] and fix in attention["reason"]
    assert [alert["kind"] for alert in found["alerts"]] == ["outbox"]

    os.chown(lock, NOBODY, NOBODY)  # what the message says
    fixed = daemon.run_once()

    assert fixed.returncode == 0, fixed.stderr
    sent = {tuple(m.rcpt_tos) for m in deployment.smtp.messages}
    assert len(deployment.smtp.messages) == 3  # the referral, the acknowledgement, the alert
    assert (ADMIN,) in sent
    assert [item for item in status(deployment)["attention"] if item["kind"] == "outbox"] == []


def test_root_cannot_make_data_dir_in_a_folder_the_daemons_user_owns(folder: Path) -> None:
    config = write_config(folder)
    with config.open("a") as settings:  # [gpg] is its last table
        settings.write(f'outbox_passphrase = "{OUTBOX_PASSPHRASE}"\n')
    (folder / "var").rmdir()  # not made yet
    give_to_nobody(folder)

    run = intake("run", "--once", "--config", str(config))  # it would make var, as root

    assert not (folder / "var").exists()
    line = one_line_error(run, 1)
    assert line.startswith(f"{config}: {folder}, where data_dir goes, belongs to nobody, "), line
    assert line.endswith(f": sudo -u nobody intake run --once --config {config}"), line
