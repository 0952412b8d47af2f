"""Admin commands run by another user than the daemon's (root above all, by `sudo`) against a
data_dir the daemon's user owns: the commands that only read (status, quarantine list, purge
--dry-run, doctor) work and leave no file behind, so the daemon still starts; the commands that
change something refuse in one line, saying how to run them as that user. Run as separate
processes (`python -m pipeline`), as root; the daemon's user here is `nobody`."""

from __future__ import annotations

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

from pipeline.store import BASELINE, MIGRATIONS, make_engine
from tests.integration.test_cli import REPO, intake, one_line_error, together, write_config

NOBODY = 65534  # Debian's nobody

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the test gives data_dir to another user"
)

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
