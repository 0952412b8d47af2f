"""Submission times that name no zone (Microsoft Forms, Jisc, a generic export) are read in the
form's `timezone`, by default `[display] timezone`; a time that names its zone keeps it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pipeline.config import Config, ConfigError, load_config
from pipeline.intake.exports import read_export

LONDON = ZoneInfo("Europe/London")


def export(tmp_path: Path, submitted: str) -> Path:
    path = tmp_path / "export.csv"
    path.write_text(f"Response ID,Timestamp,What happened?\nr1,{submitted},something\n")
    return path


@pytest.mark.parametrize(
    ("submitted", "utc"),
    [
        ("2026-06-24 10:15:00", datetime(2026, 6, 24, 9, 15, tzinfo=UTC)),  # BST
        ("2026-11-24 10:15:00", datetime(2026, 11, 24, 10, 15, tzinfo=UTC)),  # GMT
        ("2026-06-24T10:15:00+02:00", datetime(2026, 6, 24, 8, 15, tzinfo=UTC)),  # names its own
    ],
)
def test_a_time_without_zone_is_read_in_the_forms_zone(
    tmp_path: Path, submitted: str, utc: datetime
) -> None:
    found = read_export(export(tmp_path, submitted), "generic", "Response ID", zone=LONDON)
    assert found.rows[0].submitted_at == utc


def config(tmp_path: Path, form_extra: str = "", display: str = "") -> Config:
    path = tmp_path / "intake.toml"
    path.write_text(
        f'[gpg]\nrecords_keys = ["{"A" * 40}"]\n{display}'
        '[[forms]]\nid = "f"\npath = "exports/*.csv"\n'
        f'columns = {{description = "What happened?"}}\n{form_extra}'
    )
    return load_config(path)


def test_a_form_reads_in_the_display_zone_unless_it_names_its_own(tmp_path: Path) -> None:
    assert config(tmp_path).forms[0].timezone == "Europe/London"
    shown = config(tmp_path, display='[display]\ntimezone = "Europe/Dublin"\n')
    assert shown.forms[0].timezone == "Europe/Dublin"
    own = config(tmp_path, form_extra='timezone = "America/New_York"\n')
    assert own.forms[0].timezone == "America/New_York"
    with pytest.raises(ConfigError, match=r"forms\.0\.timezone"):
        config(tmp_path, form_extra='timezone = "Mars/Olympus"\n')
