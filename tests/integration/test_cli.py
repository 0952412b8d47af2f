"""The `intake` command as an admin meets it, run as a separate process (`python -m pipeline`):
`--version`, where the config is found without --config, `db upgrade` and `db current`, and
every misuse (a bad argument, a config or database that cannot be used) is one line on
standard error with exit status 2 or 1, never a traceback."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine

from pipeline.cli import DEFAULT_CONFIG
from pipeline.store import BASELINE, MIGRATIONS, make_engine, open_engine, schema_revision

REPO = Path(__file__).resolve().parents[2]
RECORDS_KEY = "A" * 40  # loading the config checks its form only


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def intake(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> Run:
    """`python -m pipeline ARGS` in a separate process, without INTAKE_CONFIG unless `env`
    gives it."""
    environment = {k: v for k, v in os.environ.items() if k != "INTAKE_CONFIG"} | (env or {})
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def together(*calls: Callable[[], Run]) -> list[Run]:
    """`intake` calls side by side: each spends a second importing."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def one_line_error(run: Run, status: int) -> str:
    """The single line a misuse gives on standard error, after checking there is no more."""
    assert run.returncode == status, run
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


def write_config(folder: Path, database_url: str | None = None) -> Path:
    """The smallest config `db` and `status` load: a data folder (made) and a records key."""
    (folder / "var").mkdir(mode=0o700, exist_ok=True)
    database = f'[database]\nurl = "{database_url}"\n' if database_url else ""
    config = folder / "intake.toml"
    config.write_text(f'data_dir = "var"\n[gpg]\nrecords_keys = ["{RECORDS_KEY}"]\n{database}')
    return config


def test_version_is_the_installed_package_version() -> None:
    run = intake("--version")
    assert (run.returncode, run.stdout) == (0, f"intake {version('report-intake')}\n")


def test_a_bad_argument_is_one_line_and_exit_2() -> None:
    cases = {
        (): "the following arguments are required: command",
        ("nosuch",): "invalid choice: 'nosuch'",
        ("status", "--bogus"): "unrecognized arguments: --bogus",
        ("db",): "the following arguments are required: action",
    }
    runs = together(*(partial(intake, *args) for args in cases))
    for run, says in zip(runs, cases.values(), strict=True):
        line = one_line_error(run, 2)
        assert line.startswith("intake") and says in line and "--help" in line


def test_db_current_and_upgrade_by_hand(tmp_path: Path) -> None:
    database = tmp_path / "var" / "intake.db"
    config = write_config(tmp_path)
    settings = AlembicConfig()  # a database at the baseline revision, as an old version left it
    settings.set_main_option("script_location", str(MIGRATIONS))
    with create_engine(f"sqlite:///{database}").begin() as connection:
        settings.attributes["connection"] = connection
        command.upgrade(settings, BASELINE)
    head = schema_revision(open_engine(f"sqlite:///{database}"))[1]

    behind = intake("db", "current", "--config", str(config))
    assert behind.returncode == 1, behind
    assert f"revision: {BASELINE}\nhead: {head}\ncurrent: no" in behind.stdout

    upgraded = intake("db", "upgrade", "--config", str(config))
    assert upgraded.returncode == 0, upgraded
    assert upgraded.stdout == f"database schema upgraded from {BASELINE} to {head}\n"

    current = intake("db", "current", "--config", str(config))
    assert current.returncode == 0, current
    assert f"database: sqlite:///{database}\n" in current.stdout
    assert f"revision: {head}\nhead: {head}\ncurrent: yes\n" in current.stdout


def test_the_config_comes_from_intake_config_else_the_default_path(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    from_env, default = together(
        partial(intake, "db", "upgrade", env={"INTAKE_CONFIG": str(config)}),
        partial(intake, "status"),
    )
    assert from_env.returncode == 0, from_env
    assert from_env.stdout.startswith("database schema created at ")
    with sqlite3.connect(tmp_path / "var" / "intake.db") as connection:
        assert connection.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    if not Path(DEFAULT_CONFIG).exists():  # a machine with a deployment reads it
        assert one_line_error(default, 1) == (
            f"{DEFAULT_CONFIG}: no such config file (give --config FILE or INTAKE_CONFIG)"
        )


def _drop_root_file_access() -> tuple[str, ...]:
    """A command prefix under which root, too, obeys file modes (no CAP_DAC_*)."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a mode 000 file stays readable")
    caps = "-dac_override,-dac_read_search"
    return ("setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}")


def test_a_config_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    missing, folder, utf16 = tmp_path / "missing.toml", tmp_path / "folder", tmp_path / "16.toml"
    folder.mkdir()
    utf16.write_bytes(b'data_dir = "\xff"\n')
    unreadable = write_config(tmp_path)
    unreadable.chmod(0)
    cases = {
        partial(intake, "status", "--config", str(missing)): f"{missing}: no such config file",
        partial(intake, "status", "--config", str(folder)): (
            f"{folder}: cannot read the config file: Is a directory"
        ),
        partial(intake, "status", env={"INTAKE_CONFIG": str(folder)}): (
            f"{folder}: cannot read the config file: Is a directory (from INTAKE_CONFIG)"
        ),
        partial(intake, "status", "--config", str(utf16)): f"{utf16}: not UTF-8 text (byte 12)",
        partial(
            intake, "status", "--config", str(unreadable), prefix=_drop_root_file_access()
        ): f"{unreadable}: cannot read the config file: Permission denied",
    }
    for run, says in zip(together(*cases), cases.values(), strict=True):
        assert one_line_error(run, 1) == says


def test_a_database_that_cannot_be_used_is_one_line(tmp_path: Path) -> None:
    """An unknown dialect (in `status`, password hidden), no URL at all, a driver that is not
    installed, a SQLite folder that is not there (given, or the default in data_dir)."""
    forms = "use sqlite:///PATH or postgresql+psycopg://USER@HOST/NAME"
    cases = {
        ("status", "mysql://intake:s3cret@db.example.ac.uk/intake"): (
            "database.url: mysql://intake:***@db.example.ac.uk/intake: unknown database dialect "
            f"'mysql': {forms}"
        ),
        ("db", "current", "intake.db"): f"database.url: not a database URL: {forms}",
        ("db", "upgrade", "postgresql+psycopg2://intake@db/intake"): (
            "database.url: postgresql+psycopg2://intake@db/intake: driver 'psycopg2' is not "
            f"installed: {forms}"
        ),
        ("db", "current", "sqlite:///no/such/folder/intake.db"): (
            f"database.url: sqlite:///{tmp_path}/url/no/such/folder/intake.db: the folder "
            f"{tmp_path}/url/no/such/folder does not exist"
        ),
        ("status", None): (
            f"data_dir: sqlite:///{tmp_path}/default/gone/intake.db: the folder "
            f"{tmp_path}/default/gone does not exist"
        ),
    }
    calls, configs = [], []
    for number, (*args, url) in enumerate(cases):
        folder = tmp_path / (
            "default" if url is None else "url" if "sqlite" in url else str(number)
        )
        folder.mkdir()
        configs.append(write_config(folder, url))
        if url is None:  # the default database, in a data_dir that is not there
            configs[-1].write_text(f'data_dir = "gone"\n[gpg]\nrecords_keys = ["{RECORDS_KEY}"]\n')
        calls.append(partial(intake, *args, "--config", str(configs[-1])))
    for run, config, says in zip(together(*calls), configs, cases.values(), strict=True):
        assert one_line_error(run, 1) == f"{config}: {says}"
        assert "s3cret" not in run.stderr


def test_a_postgresql_database_that_does_not_exist_is_one_line(tmp_path: Path, pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/intake_never_created"
    config = write_config(tmp_path, missing)
    line = one_line_error(intake("db", "upgrade", "--config", str(config)), 1)
    assert line.startswith(f"{config}: database.url: cannot open {missing}: ")
    assert 'database "intake_never_created" does not exist' in line
    assert line.endswith(
        "(is the server up, does the database exist (createdb), may this user connect?)"
    )


def test_output_to_a_reader_that_went_away_ends_quietly(tmp_path: Path) -> None:
    """`intake status | head`: a pipe whose reader is gone ends the command as SIGPIPE would
    (status 141), without a traceback."""
    config = write_config(tmp_path)
    make_engine(f"sqlite:///{tmp_path / 'var' / 'intake.db'}").dispose()
    reader, writer = os.pipe()
    os.close(reader)  # the reader went away before the first line
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pipeline", "status", "--config", str(config)],
            cwd=REPO,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(writer)
    assert (run.returncode, run.stderr) == (141, "")
