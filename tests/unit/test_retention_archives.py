"""Which form archives retention may delete: only a form's own, and none while a report that
may need them is kept for ever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.config import RetentionConfig
from pipeline.retention import archive_period, archives_due

EVERY_STATE = {"delivered": 30, "routed": 60, "quarantined": 400, "undelivered": 90}


@pytest.mark.parametrize("kept_for_ever", ["routed", "quarantined", "undelivered"])
def test_archives_are_kept_while_a_state_that_needs_them_is_kept_for_ever(
    kept_for_ever: str,
) -> None:
    policy = RetentionConfig(**{k: v for k, v in EVERY_STATE.items() if k != kept_for_ever})
    assert archive_period(policy) is None
    assert archive_period(RetentionConfig(delivered=30)) is None
    assert archive_period(RetentionConfig()) is None


def test_with_every_state_set_archives_go_after_the_longest_period() -> None:
    assert archive_period(RetentionConfig(**EVERY_STATE)) == timedelta(days=400)
    without_delivered = {k: v for k, v in EVERY_STATE.items() if k != "delivered"}
    assert archive_period(RetentionConfig(**without_delivered)) == timedelta(days=400)


def test_only_the_forms_own_archives_are_due(tmp_path: Path) -> None:
    shared = tmp_path / "shared"  # an archive_dir other tools write to as well
    shared.mkdir()
    old, recent = "20240101T000000000000Z", "20991231T000000000000Z"
    ours = shared / f"responses.csv.{old}.asc"
    other_form = shared / f"feedback.json.{old}.asc"
    for name in (
        ours.name,
        other_form.name,
        f"responses.csv.{recent}.asc",  # not old enough
        f"other-tool-backup.{old}.asc",  # another tool's, named alike
        f"responses.csv.{old}.asc.part",  # still being written
    ):
        (shared / name).write_bytes(b"sealed")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    policy = RetentionConfig(**EVERY_STATE)

    assert archives_due([(shared, "exports/*.csv")], policy, now) == [ours]
    both = [(shared, "exports/*.csv"), (shared, "json/feedback.json")]
    assert archives_due(both, policy, now) == [other_form, ours]
    assert archives_due([(shared, "exports/*.csv")], RetentionConfig(delivered=30), now) == []
    assert archives_due([(tmp_path / "missing", "*.csv")], policy, now) == []
