"""Alerts for reports that reach no service, on a real SQLite database: an urgent report raises
its own urgent alert (never coalesced with others), ordinary ones are coalesced: one an hour
for unrouted and for quarantined reports, one a day per service for held referrals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pipeline.config import Config
from pipeline.models import AlertRow, OutboxRow, ReportState
from pipeline.store import make_engine
from pipeline.unreached import Unreached, alert_unreached

CONFIG = Config.model_validate(
    {"gpg": {"records_keys": ["A" * 40]}, "alerts": {"admin": ["admin@example.ac.uk"]}}
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    found = make_engine(f"sqlite:///{tmp_path / 'intake.db'}")
    yield found
    found.dispose()


def raised(engine: Engine) -> list[tuple[str | None, str | None, bool]]:
    """(kind, subject, whether its mail is urgent) of each alert, by subject."""
    with Session(engine) as session:
        rows = session.exec(select(AlertRow).order_by(col(AlertRow.subject))).all()
        mail = {m.target.rpartition("#")[0]: m.urgent for m in session.exec(select(OutboxRow))}
        return [(row.kind, row.subject, mail[row.key]) for row in rows]


def test_urgent_reports_each_raise_their_own_urgent_alert(engine: Engine) -> None:
    for item in (
        Unreached("R-2026-000001", ReportState.UNROUTED, "no rule matched", urgent=True),
        Unreached("R-2026-000002", ReportState.UNROUTED, "no rule matched", urgent=True),
        Unreached("R-2026-000003", ReportState.QUARANTINED, "parts: 600", urgent=True),
        Unreached("R-2026-000004", ReportState.HELD, "expired", urgent=True, service="advice"),
    ):
        alert_unreached(engine, CONFIG, item)

    assert raised(engine) == [
        ("urgent", "URGENT: R-2026-000001 reached no service: the rules refer it to nobody", True),
        ("urgent", "URGENT: R-2026-000002 reached no service: the rules refer it to nobody", True),
        ("urgent", "URGENT: R-2026-000003 is quarantined: it could not be read", True),
        (
            "urgent",
            "URGENT: R-2026-000004: the referral to advice is held: its key cannot be used",
            True,
        ),
    ]


def test_ordinary_ones_are_coalesced(engine: Engine) -> None:
    for item in (
        Unreached("R-2026-000001", ReportState.UNROUTED, "rules matched: a"),
        Unreached("R-2026-000002", ReportState.UNROUTED, "no rule matched"),
        Unreached("R-2026-000003", ReportState.HELD, "expired", service="advice"),
        Unreached("R-2026-000004", ReportState.HELD, "expired", service="advice"),
        Unreached("R-2026-000005", ReportState.QUARANTINED, "parts: 600"),
        Unreached("R-2026-000006", ReportState.QUARANTINED, "depth: 12"),
    ):
        alert_unreached(engine, CONFIG, item)

    assert raised(engine) == [
        ("unrouted", "R-2026-000001 reached no service: the rules refer it to nobody", False),
        ("quarantined", "R-2026-000005 is quarantined: it could not be read", False),
        ("held", "referrals to advice are held: its key cannot be used", False),
    ]


def test_the_text_says_what_to_do() -> None:
    unrouted = Unreached("R-2026-000001", ReportState.UNROUTED, "rules matched: a").text()
    assert "intake quarantine release R-2026-000001 --gnupghome" in unrouted
    assert "rules matched: a" in unrouted
    quarantined = Unreached("R-2026-000002", ReportState.QUARANTINED, "parts: 600").text()
    assert "intake quarantine release R-2026-000002" in quarantined and "parts: 600" in quarantined
    held = Unreached("R-2026-000003", ReportState.HELD, "expired", service="advice").text()
    assert "intake retry" in held and "advice" in held


def test_a_flood_of_urgent_reports_raises_five_alerts_and_one_for_the_rest(engine: Engine) -> None:
    for n in range(1, 13):  # anyone can write "unsafe tonight" in a subject
        alert_unreached(
            engine,
            CONFIG,
            Unreached(f"R-2026-{n:06d}", ReportState.QUARANTINED, "size", urgent=True),
        )
    subjects = [subject for _, subject, _ in raised(engine)]
    assert len(subjects) == 6
    assert "URGENT: more urgent reports reach no service: see intake status" in subjects
