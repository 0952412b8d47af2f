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


def passphrase_config(tmp_path: Path, line: str) -> Path:
    return write(tmp_path, f'[gpg]\nrecords_keys = ["{FPR}"]\n{line}\n')


def read_passphrase(path: Path) -> str | None:
    config = load_config(path)
    return config.gpg.read_outbox_passphrase(data_dir=config.data_dir, homedir=config.gpg_home)


def test_outbox_passphrase_from_a_private_file_outside_data_dir(tmp_path: Path) -> None:
    path = passphrase_config(tmp_path, 'outbox_passphrase_file = "secret/outbox"')
    secret = tmp_path / "conf" / "secret" / "outbox"
    secret.parent.mkdir()
    secret.write_text("from the file\n")
    secret.chmod(0o600)
    assert read_passphrase(path) == "from the file"
    secret.chmod(0o640)
    with pytest.raises(ConfigError, match=r"gpg.outbox_passphrase_file: .* chmod 600"):
        read_passphrase(path)
    secret.write_text("  \n")
    secret.chmod(0o600)
    with pytest.raises(ConfigError, match=r"gpg\.outbox_passphrase_file: the outbox passphrase is"):
        read_passphrase(path)


@pytest.mark.parametrize("inside", ["var/outbox-passphrase", "var/gnupg/pass", "link"])
def test_outbox_passphrase_file_in_the_data_folder_is_refused(tmp_path: Path, inside: str) -> None:
    path = passphrase_config(tmp_path, f'outbox_passphrase_file = "{inside}"')
    data = tmp_path / "conf" / "var" / "gnupg"
    data.mkdir(parents=True)
    for name in ("outbox-passphrase", "gnupg/pass"):
        (data.parent / name).write_text("p")
        (data.parent / name).chmod(0o600)
    (tmp_path / "conf" / "link").symlink_to(data.parent / "outbox-passphrase")
    with pytest.raises(ConfigError, match=r"gpg\.outbox_passphrase_file: .* is inside"):
        read_passphrase(path)


def test_outbox_passphrase_from_env_and_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = passphrase_config(tmp_path, 'outbox_passphrase_env = "INTAKE_TEST_OUTBOX"')
    with pytest.raises(ConfigError, match=r"gpg\.outbox_passphrase_env: .*INTAKE_TEST_OUTBOX"):
        read_passphrase(path)
    monkeypatch.setenv("INTAKE_TEST_OUTBOX", "from env")
    assert read_passphrase(path) == "from env"

    path = passphrase_config(
        tmp_path, 'outbox_passphrase_file = "${CREDENTIALS_DIRECTORY}/outbox-passphrase"'
    )
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set"):
        read_passphrase(path)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "outbox-passphrase").write_text("from systemd")
    (credentials / "outbox-passphrase").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert read_passphrase(path) == "from systemd"
    # Newer systemd gives the unit's user an ACL on a tmpfs: the mode shows group-readable.
    (credentials / "outbox-passphrase").chmod(0o440)
    assert read_passphrase(path) == "from systemd"
    # The same mode anywhere else is refused: only systemd's folder is private by itself.
    loose = tmp_path / "outbox-passphrase"
    loose.write_text("loose")
    loose.chmod(0o440)
    path = passphrase_config(tmp_path, f'outbox_passphrase_file = "{loose}"')
    with pytest.raises(ConfigError, match="readable by group or others"):
        read_passphrase(path)


def test_outbox_passphrase_inline_none_and_only_one_source(tmp_path: Path) -> None:
    assert read_passphrase(passphrase_config(tmp_path, 'outbox_passphrase = "inline"')) == "inline"
    assert read_passphrase(passphrase_config(tmp_path, "")) is None
    two = 'outbox_passphrase = "a"\noutbox_passphrase_env = "B"'
    with pytest.raises(ConfigError, match=r"gpg: .*set only one of"):
        load_config(passphrase_config(tmp_path, two))


def test_the_example_config_loads_as_shipped() -> None:
    """intake.example.toml is what admins copy: it loads, signing in to Microsoft 365 with
    OAuth2 and never sending a token in the clear."""
    example = Path(__file__).resolve().parents[2] / "intake.example.toml"
    config = load_config(example)
    assert config.imap is not None and config.imap.auth == "oauth2"
    assert config.imap.oauth2 is not None and config.imap.oauth2.provider == "microsoft"
    assert config.smtp.credential_key in ("imap.oauth2", "smtp.oauth2")
    assert config.smtp.security != "none"
