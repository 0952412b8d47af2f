"""`pipeline.status` on a real SQLite database: attention, alerts, the inputs ledger and the
sources, from rows as the daemon writes them (and rows from before the ledger)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from pipeline.cli import main
from pipeline.models import (
    AlertRow,
    AuditRow,
    OutboxRow,
    OutboxState,
    ReportRow,
    ReportState,
    SourceItem,
    SourceStatus,
)
from pipeline.status import read_status
from pipeline.store import (
    decision_json,
    input_outcome,
    make_engine,
    mark_source,
    save_report,
    settle_reports,
    source_name,
)

WHEN = datetime(2026, 11, 24, 10, 17, 5, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    found = make_engine(f"sqlite:///{tmp_path / 'intake.db'}")
    yield found
    found.dispose()


def report(state: str, fingerprint: str, **fields: Any) -> ReportRow:
    return ReportRow(
        source="email",
        fingerprint=fingerprint,
        received_at=WHEN,
        month="2026-11",
        state=state,
        **fields,
    )


def store(engine: Engine, row: ReportRow, key: str, mail: list[OutboxRow] | None = None) -> str:
    reference = save_report(engine, row, key, lambda _reference: ({}, mail or []))
    assert reference is not None
    return reference


def test_source_name_drops_the_item_part() -> None:
    assert source_name("imap:intake@mail.example/INBOX:1796:42") == "imap:intake@mail.example/INBOX"
    assert source_name("maildir:/var/mail/in:1700000000.M1P2.host") == "maildir:/var/mail/in"
    assert source_name("form:wellbeing:" + "a" * 64) == "form:wellbeing"
    assert source_name("form:wellbeing:student:12345") == "form:wellbeing"  # an old raw id


def test_input_outcome_names_what_an_admin_must_act_on() -> None:
    assert [input_outcome(s) for s in ("queued", "routed", "delivered")] == ["stored"] * 3
    for state in (ReportState.QUARANTINED, ReportState.UNROUTED, ReportState.HELD):
        assert input_outcome(state) == state


def test_every_stuck_report_and_mail_is_listed_with_reference_source_reason_since(
    engine: Engine,
) -> None:
    unrouted = report(
        ReportState.UNROUTED, "f2", urgent=True, decision=decision_json([], "ack-default", ["r1"])
    )
    quarantined = report(ReportState.QUARANTINED, "f1", reason="parts: 600 parts (limit 500)")
    held = OutboxRow(
        kind="referral",
        target="advice-centre",
        message_id="<h@x>",
        state=OutboxState.HELD,
        last_error="key expired",
        created_at=WHEN + timedelta(minutes=1),
    )
    q_ref = store(engine, quarantined, "imap:i@h/INBOX:7:1")
    u_ref = store(engine, unrouted, "form:wellbeing:abc")
    h_ref = store(engine, report(ReportState.HELD, "f3"), "maildir:/m:k1", [held])
    store(engine, report(ReportState.DELIVERED, "f4"), "maildir:/m:k2")  # nothing to do
    with Session(engine) as session:
        session.add(
            OutboxRow(
                kind="alert",
                target="x#0",
                message_id="<a@x>",
                state=OutboxState.FAILED,
                last_error="SMTP 550 for recipient",
                next_attempt_at=WHEN + timedelta(hours=2),
            )
        )
        session.commit()

    status = json.loads(read_status(engine).to_json())

    attention = status["attention"]
    assert [(a["kind"], a["reference"]) for a in attention] == [
        ("quarantined", q_ref),
        ("unrouted", u_ref),
        ("held", h_ref),
        ("failed", None),
    ]  # oldest first
    first, second, third, fourth = attention
    assert first == {
        "kind": "quarantined",
        "reference": q_ref,
        "source": "imap:i@h/INBOX",
        "reason": "parts: 600 parts (limit 500)",
        "since": "2026-11-24T10:17:05Z",
        "urgent": False,
    }
    assert second["source"] == "form:wellbeing" and second["urgent"] is True
    assert "no service" in second["reason"] and "r1" in second["reason"]
    assert third["source"] == "maildir:/m"
    assert third["reason"] == "referral to advice-centre: key expired"
    assert third["since"] == "2026-11-24T10:18:05Z"
    assert fourth["reason"] == "alert to x#0: SMTP 550 for recipient"
    assert fourth["since"] == "2026-11-24T12:17:05Z"
    assert status["reports"]["unrouted"] == 1 and status["outbox"]["failed"] == 1


def test_held_mail_of_an_anonymous_report_shows_its_time_to_the_hour(engine: Engine) -> None:
    held = OutboxRow(
        kind="referral",
        target="advice-centre",
        message_id="<h@x>",
        state=OutboxState.HELD,
        last_error="key expired",
        created_at=WHEN,
    )
    store(engine, report(ReportState.HELD, "f", anonymous=True), "maildir:/m:k", [held])

    (item,) = json.loads(read_status(engine).to_json())["attention"]

    assert item["since"] == "2026-11-24T10:00:00Z"


def test_inputs_ledger_sums_to_the_inputs_taken_old_rows_count_as_unknown(
    engine: Engine,
) -> None:
    first = store(engine, report(ReportState.QUEUED, "f1"), "maildir:/m:1")
    store(engine, report(ReportState.QUARANTINED, "f2"), "maildir:/m:2")
    store(engine, report(ReportState.UNROUTED, "f3"), "maildir:/m:3")
    mark_source(engine, "maildir:/m:4", 1, "duplicate")
    mark_source(engine, "maildir:/m:4", 1, "duplicate")  # the same input again: counted once
    mark_source(engine, "maildir:/m:5", None, "bounce")
    mark_source(engine, "maildir:/m:6", None, "auto_reply")
    with Session(engine) as session:
        session.add(SourceItem(source_key="maildir:/m:old", report_id=None))  # before issue 9
        session.commit()

    inputs = json.loads(read_status(engine).to_json())["inputs"]

    assert first
    assert inputs == {
        "stored": 1,
        "duplicate": 1,
        "bounce": 1,
        "auto_reply": 1,
        "quarantined": 1,
        "unrouted": 1,
        "held": 0,
        "unknown": 1,
    }
    assert sum(inputs.values()) == 7
    with Session(engine) as session:
        item = session.get(SourceItem, "maildir:/m:5")
        assert item is not None and item.source == "maildir:/m"


def test_sources_configured_and_recorded_failing_ones_need_attention(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(SourceStatus(name="imap:i@h/INBOX", last_success_at=WHEN))
        session.add(
            SourceStatus(
                name="form:old",
                last_error="form:old: /in/x.csv: unknown layout",
                error_cause="export",
                error_since=WHEN,
            )
        )
        session.commit()

    status = read_status(engine, ["maildir:/m", "imap:i@h/INBOX"])
    shown = json.loads(status.to_json())

    assert list(shown["sources"]) == ["maildir:/m", "imap:i@h/INBOX", "form:old"]
    assert shown["sources"]["maildir:/m"] == {
        "last_success": None,
        "last_error": None,
        "error_since": None,
    }
    assert shown["sources"]["imap:i@h/INBOX"]["last_success"] == "2026-11-24T10:17:05Z"
    assert shown["attention"] == [
        {
            "kind": "source",
            "reference": None,
            "source": "form:old",
            "reason": "form:old: /in/x.csv: unknown layout",
            "since": "2026-11-24T10:17:05Z",
            "urgent": False,
        }
    ]
    text = "\n".join(status.lines())
    assert "form:old: FAILING since 2026-11-24T10:17:05Z" in text
    assert "maildir:/m: ok, last success never" in text


def test_recent_alerts_newest_first_old_rows_show_their_key(engine: Engine) -> None:
    now = datetime.now(UTC)
    with Session(engine) as session:
        session.add(AlertRow(key="key:advice-centre:2026-11-20", created_at=now - timedelta(1)))
        session.add(
            AlertRow(key="u", kind="urgent", subject="URGENT: R-2026-000001 ...", created_at=now)
        )
        session.add(AlertRow(key="gone", kind="x", subject="old", created_at=now - timedelta(30)))
        session.commit()

    alerts = json.loads(read_status(engine).to_json())["alerts"]

    assert [(a["kind"], a["subject"]) for a in alerts] == [
        ("urgent", "URGENT: R-2026-000001 ..."),
        ("key", "key:advice-centre:2026-11-20"),
    ]
    assert alerts[0]["when"].endswith("Z")


def test_json_keeps_the_counts_and_adds_exactly_four_keys(engine: Engine) -> None:
    shown = json.loads(read_status(engine).to_json())

    assert set(shown) == {"reports", "outbox", "attention", "alerts", "inputs", "sources"}
    assert shown["reports"]["unrouted"] == 0 and shown["outbox"]["queued"] == 0


def test_an_unrouted_report_with_its_acknowledgement_sent_stays_unrouted(engine: Engine) -> None:
    ack = OutboxRow(kind="ack", target="reporter", message_id="<k@x>")
    store(engine, report(ReportState.UNROUTED, "f"), "maildir:/m:1", [ack])
    with Session(engine) as session:
        row = session.get(OutboxRow, 1)
        assert row is not None
        row.state = OutboxState.SENT
        session.add(row)
        session.commit()
        assert settle_reports(session, {1}) == []
        session.commit()
        stored = session.get(ReportRow, 1)
        assert stored is not None and stored.state == ReportState.UNROUTED


def test_status_before_the_database_exists_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "intake.toml"
    config.write_text(
        f'data_dir = "{tmp_path}/never/made"\n[gpg]\nrecords_keys = ["{"A" * 40}"]\n'
        '[database]\nurl = "postgresql+psycopg://intake:s3cret@127.0.0.1:1/intake"\n'
    )
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{config}: database.url: cannot open postgresql+psycopg://intake:***@" in err
    assert "s3cret" not in err


def _send(engine: Engine, *ids: int) -> None:
    with Session(engine) as session:
        for row_id in ids:
            row = session.get(OutboxRow, row_id)
            assert row is not None
            row.state = OutboxState.SENT
            session.add(row)
        session.commit()


def test_a_queued_report_is_delivered_once_all_its_mail_is_sent_and_audited_once(
    engine: Engine,
) -> None:
    mail = [OutboxRow(kind="referral", target=t, message_id=f"<{t}@x>") for t in ("a", "b")]
    first = store(engine, report(ReportState.QUEUED, "f1"), "maildir:/m:1", mail)
    other = store(engine, report(ReportState.QUEUED, "f2"), "maildir:/m:2")  # no mail at all
    _send(engine, 1)
    with Session(engine) as session:
        assert settle_reports(session, {1}) == []  # "b" still waits
        session.commit()
    _send(engine, 2)
    with Session(engine) as session:
        assert settle_reports(session, {1}) == [first]  # only the reports named
        assert settle_reports(session) == [other]  # the first look of a drain: every report
        assert settle_reports(session) == []  # moved once
        session.commit()
        states = {r.reference: r.state for r in session.exec(select(ReportRow))}
        lines = session.exec(select(AuditRow).where(AuditRow.detail == ReportState.DELIVERED))
        audited = [line.reference for line in lines]
    assert states == {first: ReportState.DELIVERED, other: ReportState.DELIVERED}
    assert audited.count(first) == 1 and audited.count(other) == 1
