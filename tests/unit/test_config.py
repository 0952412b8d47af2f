"""config.py: errors name the file and key; relative paths follow the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "intake.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f'[gpg]\nrecords_keys = ["{FPR}"]\n'))
    base = tmp_path / "conf"
    assert config.data_dir == base / "var"
    assert config.database_url == f"sqlite:///{base / 'var' / 'intake.db'}"
    assert config.gpg_home == base / "var" / "gnupg"
    assert config.rules.dir == base / "rules"
    assert config.schedule.poll_seconds == 60 and config.imap is None


def test_sqlite_url_relative_to_config(tmp_path: Path) -> None:
    path = write(
        tmp_path, f'[database]\nurl = "sqlite:///db/x.db"\n[gpg]\nrecords_keys = ["{FPR}"]\n'
    )
    assert load_config(path).database_url == f"sqlite:///{tmp_path / 'conf' / 'db' / 'x.db'}"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[gpg]\nrecords_keys = ["abc"]\n', "gpg"),
        (
            f'[gpg]\nrecords_keys = ["{FPR}"]\n[imap]\nhost = "h"\nusername = "u"\nport = "x"\n',
            "imap.port",
        ),
        (f'[gpg]\nrecords_keys = ["{FPR}"]\n[smtp]\nsecurity = "ssl"\n', "smtp.security"),
        (f'[gpg]\nrecords_keys = ["{FPR}"]\n[schedule]\npoll_secs = 5\n', "schedule.poll_secs"),
        ("[imap]\nhost = 1\n", "gpg"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}: {key}" in str(caught.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[gpg\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_password_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "conf" / "pw"
    base = f'[gpg]\nrecords_keys = ["{FPR}"]\n[imap]\nhost = "h"\nusername = "u"\n'
    path = write(tmp_path, base + 'password_file = "pw"\n')
    secret_file.write_text("from-file\n")
    assert load_config(path).imap.secret() == "from-file"  # type: ignore[union-attr]
    path = write(tmp_path, base + 'password_env = "INTAKE_TEST_PW"\n')
    monkeypatch.setenv("INTAKE_TEST_PW", "from-env")
    assert load_config(path).imap.secret() == "from-env"  # type: ignore[union-attr]
    monkeypatch.delenv("INTAKE_TEST_PW")
    with pytest.raises(ConfigError, match="INTAKE_TEST_PW"):
        load_config(path).imap.secret()  # type: ignore[union-attr]
