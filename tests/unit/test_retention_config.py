"""`[retention] undelivered` purges a report only after an alert mail naming it was sent to
the admins: without `[alerts] admin` the config is refused at load, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

GPG = '[gpg]\nrecords_keys = ["0123456789ABCDEF0123456789ABCDEF01234567"]\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "intake.toml"
    path.write_text(GPG + text)
    return path


@pytest.mark.parametrize("alerts", ["", "[alerts]\nadmin = []\n"])
def test_undelivered_without_admins_is_refused(tmp_path: Path, alerts: str) -> None:
    path = write(tmp_path, f"[retention]\ndelivered = 30\nundelivered = 90\n{alerts}")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (line,) = str(caught.value).splitlines()
    assert line.startswith(f"{path}: retention.undelivered: ")
    assert "[alerts] admin" in line


def test_undelivered_with_admins_and_other_periods_without_are_accepted(tmp_path: Path) -> None:
    told = write(tmp_path, '[retention]\nundelivered = 90\n[alerts]\nadmin = ["a@example.ac.uk"]\n')
    assert load_config(told).retention.undelivered == 90
    assert load_config(write(tmp_path, "[retention]\ndelivered = 30\n")).retention.delivered == 30
