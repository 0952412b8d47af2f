"""Admin commands run by another user than the daemon's (root above all, by `sudo`) against a
data_dir the daemon's user owns: the commands that only read (status, quarantine list, purge
--dry-run, doctor) work and leave no file behind, so the daemon still starts; the commands that
change something refuse in one line, saying how to run them as that user. A records keyholder's
`show` as that user works with a temporary GnuPG home of that user's (README, "Quarantine"); a
home it cannot open is a one-line error; on PostgreSQL anyone may run `show`. Run as separate
processes (`python -m pipeline`), as root; the daemon's user here is `nobody`."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine
from sqlmodel import Session, select

from pipeline.models import AuditRow, EncryptedRecord, ReportRow, ReportState
from pipeline.store import BASELINE, MIGRATIONS, make_engine
from tests.integration.conftest import others_may_read_the_checkout
from tests.integration.test_cli import REPO, Run, intake, one_line_error, together, write_config
from tests.servers.gpg import KeySet

NOBODY = 65534  # Debian's nobody

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root: the test gives data_dir to another user"
    ),
    pytest.mark.skipif(
        not others_may_read_the_checkout(),
        reason="runs intake as nobody, who cannot read this checkout (a folder above it is "
        "private, e.g. made by mktemp -d): clone it where others may pass, e.g. under /tmp",
    ),
]

# The daemon starting as `nobody`: Python's own files are root's here, so what an upgrade
# imports is imported first, as root (on a throwaway database), then the process becomes nobody.
AS_THE_DAEMON = """
import os, sys, tempfile
from pipeline.store import make_engine
with tempfile.TemporaryDirectory() as warm:
    make_engine(f"sqlite:///{warm}/warm.db").dispose()
os.setgroups([]); os.setgid(65534); os.setuid(65534)
make_engine(sys.argv[1]).dispose()
"""

# A command as `sudo -u nobody intake ...` runs it, Python's own files imported first as root.
AS_NOBODY = AS_THE_DAEMON.replace(
    "os.setgroups", "import encodings.idna, encodings.latin_1, pipeline.cli\nos.setgroups"
).replace("make_engine(sys.argv[1]).dispose()", "sys.exit(pipeline.cli.main(sys.argv[1:]))")
REFERENCE = "R-2026-000123"  # as in README's commands
MARK = "Someone followed me home from the library. SHOW-MARK"


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder for the deployment that the user nobody may pass through (not so tmp_path:
    its parents are root's, mode 700)."""
    path = Path(tempfile.mkdtemp(prefix="intake-users-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


def files(folder: Path) -> set[tuple[str, int, int, int]]:
    """Every file and folder under `folder`: name, owner, group and mode."""
    found = {folder, *folder.rglob("*")}
    return {(str(p), p.stat().st_uid, p.stat().st_gid, p.stat().st_mode) for p in found}


def give_to_nobody(folder: Path) -> None:
    for path in (folder, *folder.rglob("*")):
        os.chown(path, NOBODY, NOBODY)


def daemon_starts(url: str) -> subprocess.CompletedProcess[str]:
    """Open the database as the daemon does at start (upgrading it under the lock), as nobody."""
    return subprocess.run(
        [sys.executable, "-c", AS_THE_DAEMON, url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_read_only_commands_as_root_leave_the_daemons_files_alone(folder: Path) -> None:
    config = write_config(folder)
    data_dir = folder / "var"
    url = f"sqlite:///{data_dir / 'intake.db'}"
    make_engine(url).dispose()  # the daemon has run once (a release without the lock file)
    (data_dir / "intake.db.migrate-lock").unlink(missing_ok=True)
    give_to_nobody(data_dir)
    before = files(data_dir)

    commands = [("status",), ("status", "--json"), ("quarantine", "list"), ("purge", "--dry-run")]
    runs = together(
        *(partial(intake, *args, "--config", str(config)) for args in commands),
        partial(intake, "doctor", "--config", str(config)),
    )

    for args, run in zip(commands, runs[:-1], strict=True):
        assert run.returncode == 0, (args, run)
    assert "PASS  database: " in runs[-1].stdout, runs[-1]
    assert files(data_dir) == before  # no lock file, no database file of root's
    started = daemon_starts(url)
    assert started.returncode == 0, started.stderr


def test_a_read_only_command_on_a_fresh_deployment_makes_no_database(folder: Path) -> None:
    config = write_config(folder)
    data_dir = folder / "var"
    give_to_nobody(data_dir)

    runs = together(
        partial(intake, "status", "--config", str(config)),
        partial(intake, "quarantine", "list", "--config", str(config)),
    )

    for run in runs:
        line = one_line_error(run, 1)
        assert line == (
            f"{config}: data_dir: sqlite:///{data_dir}/intake.db: no database yet: start the "
            "daemon (it creates it), or run intake db upgrade as the daemon's user"
        )
    assert list(data_dir.iterdir()) == []
    assert daemon_starts(f"sqlite:///{data_dir / 'intake.db'}").returncode == 0


def test_a_schema_behind_the_code_is_not_upgraded_by_a_read_only_command(folder: Path) -> None:
    config = write_config(folder)
    data_dir = folder / "var"
    url = f"sqlite:///{data_dir / 'intake.db'}"
    settings = AlembicConfig()  # a database at the baseline revision, as an old version left it
    settings.set_main_option("script_location", str(MIGRATIONS))
    with create_engine(url).begin() as connection:
        settings.attributes["connection"] = connection
        command.upgrade(settings, BASELINE)
    before = files(data_dir)

    line = one_line_error(intake("status", "--config", str(config)), 1)

    assert line.startswith(
        f"{config}: data_dir: {url}: schema at revision {BASELINE}, this version's"
    )
    assert line.endswith(
        "run intake db upgrade as the daemon's user, or start the daemon (it upgrades at start)"
    )
    assert files(data_dir) == before


def test_commands_that_change_data_refuse_another_user_and_say_how(folder: Path) -> None:
    config = write_config(folder)
    data_dir = folder / "var"
    make_engine(f"sqlite:///{data_dir / 'intake.db'}").dispose()
    give_to_nobody(data_dir)
    before = files(data_dir)
    home = str(folder / "keyholder")
    commands = [
        ("db", "upgrade"),
        ("purge",),
        ("retry",),
        ("run", "--once"),
        ("show", "R-2026-000001", "--gnupghome", home),
        ("quarantine", "release", "R-2026-000001", "--gnupghome", home),
        ("doctor", "--send-test", "advice-centre"),
    ]

    runs = together(*(partial(intake, *args, "--config", str(config)) for args in commands))

    for args, run in zip(commands, runs, strict=True):
        line = one_line_error(run, 1)
        assert line.startswith(f"{config}: data_dir {data_dir} belongs to nobody, and "), line
        given = " ".join(args)
        assert line.endswith(f": sudo -u nobody intake {given} --config {config}"), line
    assert files(data_dir) == before
    run = intake("db", "upgrade", env={"INTAKE_CONFIG": str(config)})  # the hint keeps --config
    assert one_line_error(run, 1).endswith(f"sudo -u nobody intake db upgrade --config {config}")


def as_nobody(*args: str) -> Run:
    """`intake ARGS` as `sudo -u nobody` runs it (which sets USER and LOGNAME)."""
    env = os.environ | {"USER": "nobody", "LOGNAME": "nobody"}
    done = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def stored_report(folder: Path, keys: KeySet, database_url: str | None = None) -> Path:
    """A deployment whose records key is the session's, holding one delivered report (its
    `report` record encrypted to that key); its config."""
    config = write_config(folder, database_url)
    config.write_text(config.read_text().replace("A" * 40, keys.records_fpr))
    engine = make_engine(database_url or f"sqlite:///{folder / 'var' / 'intake.db'}")
    record = json.dumps({"subject": "followed", "body": MARK})
    with Session(engine) as session:
        row = ReportRow(
            reference=REFERENCE,
            source="email",
            fingerprint="f" * 64,
            received_at=dt.datetime.now(dt.UTC),
            month="2026-12",
            state=ReportState.DELIVERED,
        )
        session.add(row)
        session.flush()
        sealed = keys.encrypt(record, keys.records_fpr).encode()
        session.add(EncryptedRecord(report_id=row.id, kind="report", data=sealed))
        session.commit()
    engine.dispose()
    return config


def keyholder_script(config: Path, keyfile: Path, fingerprint: str) -> str:
    """README's commands for a keyholder ("Quarantine"), as root types them, for the user nobody
    and this key, with `intake` as the `intake` function of Deploy step 3 runs it."""
    text = (REPO / "README.md").read_text()
    block = text.split("**Who runs them, with which `DIR`.**")[1].split("```sh\n")[1]
    commands = block.split("```")[0].replace("report-intake", "nobody")
    commands = commands.replace("/media/usb/records-key.asc", str(keyfile))
    intake = f'intake() {{ "{sys.executable}" -c "$AS_NOBODY" "$@" --config "{config}"; }}'
    return "\n".join([intake, commands.replace("FINGERPRINT", fingerprint), 'echo "home=$home"'])


def test_a_keyholder_shows_a_report_as_the_daemons_user_with_a_temporary_home(
    folder: Path, gpg_keys: KeySet
) -> None:
    """The keyholder's own home (here the session's, root's, mode 700) is refused in one line
    saying what to do, not a traceback; README's commands (their secret key in a temporary home
    the daemon's user makes in /dev/shm, for as long as the command runs) show the report."""
    config = stored_report(folder, gpg_keys)
    give_to_nobody(folder / "var")
    keyfile = folder / "records-key.asc"
    secret = gpg_keys.gpg.export_keys(gpg_keys.records_fpr, secret=True, expect_passphrase=False)
    keyfile.write_text(secret)
    script = keyholder_script(config, keyfile, gpg_keys.records_fpr)

    own = as_nobody("show", REFERENCE, "--config", str(config), "--gnupghome", str(gpg_keys.home))
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO,
        env=os.environ | {"AS_NOBODY": AS_NOBODY, "USER": "nobody", "LOGNAME": "nobody"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert one_line_error(own, 1) == (
        f"--gnupghome {gpg_keys.home}: nobody cannot open it (Permission denied): give a GnuPG "
        "home that nobody made, holding a records secret key, e.g. a temporary one in /dev/shm "
        '(README, "Quarantine: releasing an input, reading a report")'
    )
    assert done.stdout.startswith("unlocked\n"), (done.stdout, done.stderr)
    assert f"reference: {REFERENCE}\n" in done.stdout and MARK in done.stdout, done.stderr
    home = done.stdout.splitlines()[-1].removeprefix("home=")
    assert home.startswith("/dev/shm/keyholder.") and not Path(home).exists()
    owners = {path.stat().st_uid for path in (folder / "var").rglob("*")}
    assert owners == {NOBODY}
    engine = make_engine(f"sqlite:///{folder / 'var' / 'intake.db'}")
    with Session(engine) as session:
        actors = [(a.actor, a.detail) for a in session.exec(select(AuditRow))]
    engine.dispose()
    assert actors.count(("nobody", "intake show")) == 2  # each attempt is on record


def test_on_postgresql_anyone_the_database_lets_in_shows_a_report(
    folder: Path, gpg_keys: KeySet, pg_url: str
) -> None:
    """No database file is in data_dir: root shows a report with its own GnuPG home and leaves
    data_dir as it was; a release still runs as data_dir's owner (the daemon's gpg homedir)."""
    config = stored_report(folder, gpg_keys, pg_url)
    data_dir = folder / "var"
    give_to_nobody(data_dir)
    before = files(data_dir)
    home = str(gpg_keys.home)

    shown, release = together(
        partial(intake, "show", REFERENCE, "--config", str(config), "--gnupghome", home),
        partial(
            intake, "quarantine", "release", REFERENCE, "--config", str(config), "--gnupghome", home
        ),
    )

    assert shown.returncode == 0, shown.stderr
    assert "state: delivered\n" in shown.stdout and MARK in shown.stdout
    assert one_line_error(release, 1).startswith(f"{config}: data_dir {data_dir} belongs to nobody")
    assert files(data_dir) == before
