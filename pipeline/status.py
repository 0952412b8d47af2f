"""Status: the database (and the configured source names) in, what `intake status` shows out.

- `counts`: reports and outbox mail by state, every known state (zeros too).
- `attention`: what an admin must act on, listed until it is resolved: every quarantined,
  unrouted or held report (a held report once per held referral), every failed or bounced
  mail, every failing source (`SourceStatus.error_since` set), rules or templates whose edit
  does not load (kind `rules` or `template`: the last good ones are in force) and an SMTP
  server that does not take our mail (kind `smtp`), oldest first.
- `alerts`: the alerts raised lately (kind, subject, when), newest first.
- `inputs`: the ledger of every input ever taken, by outcome (`SourceItem.outcome`); its sum is
  the number of messages and form rows taken, so a mailbox can be reconciled with the reports.
  Inputs taken before the ledger existed count as `unknown`.
- `sources`: per source, the last successful poll, the last error and since when it fails.

Metadata only: references, services, source names, reasons, counts and times (ISO 8601, UTC;
a report's time is when it was received, to the hour for an anonymous one); never content.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from pipeline.models import (
    AlertRow,
    OutboxRow,
    OutboxState,
    ReportRow,
    ReportState,
    SourceItem,
    SourceStatus,
    as_utc,
    to_the_hour,
    utcnow,
)
from pipeline.sources import PARTS
from pipeline.store import source_name

# Outcomes the ledger always shows (zeros too); others found in the table are shown as well.
LEDGER = ("stored", "duplicate", "bounce", "auto_reply", "quarantined", "unrouted", "held")
UNKNOWN = "unknown"  # an input taken before the ledger recorded outcomes (issue 9)
STUCK_REPORTS = (ReportState.QUARANTINED, ReportState.UNROUTED)
STUCK_MAIL = (OutboxState.HELD, OutboxState.FAILED, OutboxState.BOUNCED)
ALERT_DAYS = 7
ALERT_LIMIT = 50


def iso(moment: datetime | None) -> str | None:
    """`2026-12-01T09:30:00Z`; the database may hand back naive datetimes, which are UTC."""
    if moment is None:
        return None
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Attention:
    """One thing an admin must act on. `reference` and `source` are None where there is none."""

    kind: str  # "source", "rules", "template", "quarantined", "unrouted", "held", "failed", ...
    reference: str | None
    source: str | None
    reason: str
    since: datetime
    urgent: bool = False

    def to_json_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "reference": self.reference,
            "source": self.source,
            "reason": self.reason,
            "since": iso(self.since),
            "urgent": self.urgent,
        }

    def line(self) -> str:
        mark = "URGENT " if self.urgent else ""
        names = " ".join(name for name in (self.reference, self.source) if name)
        return f"{mark}{self.kind} {names} since {iso(self.since)}: {self.reason}"


@dataclass(frozen=True)
class Alert:
    kind: str
    subject: str
    when: datetime

    def to_json_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "subject": self.subject, "when": iso(self.when)}


@dataclass(frozen=True)
class SourceHealth:
    name: str
    last_success: datetime | None = None
    last_error: str | None = None
    error_since: datetime | None = None
    cause: str | None = None

    def to_json_dict(self) -> dict[str, object]:
        return {
            "last_success": iso(self.last_success),
            "last_error": self.last_error,
            "error_since": iso(self.error_since),
        }

    def line(self) -> str:
        success = f"last success {iso(self.last_success) or 'never'}"
        if self.error_since is None:
            return f"{self.name}: ok, {success}"
        return f"{self.name}: FAILING since {iso(self.error_since)}, {success}: {self.last_error}"


@dataclass(frozen=True)
class Status:
    counts: dict[str, dict[str, int]]
    attention: list[Attention]
    alerts: list[Alert]
    inputs: dict[str, int]
    sources: list[SourceHealth]

    def to_json(self) -> str:
        return json.dumps(
            {
                **self.counts,
                "attention": [item.to_json_dict() for item in self.attention],
                "alerts": [alert.to_json_dict() for alert in self.alerts],
                "inputs": self.inputs,
                "sources": {source.name: source.to_json_dict() for source in self.sources},
            }
        )

    def lines(self) -> list[str]:
        """The same, for a person."""
        lines = [
            f"{group}: " + ", ".join(f"{state} {n}" for state, n in states.items())
            for group, states in self.counts.items()
        ]
        taken = ", ".join(f"{outcome} {n}" for outcome, n in self.inputs.items())
        lines.append(f"inputs: {sum(self.inputs.values())} taken: {taken}")
        lines.append("sources:" if self.sources else "sources: none configured")
        lines += [f"  {source.line()}" for source in self.sources]
        lines.append(f"needs attention: {len(self.attention) or 'nothing'}")
        lines += [f"  {item.line()}" for item in self.attention]
        lines.append(f"alerts in the last {ALERT_DAYS} days: {len(self.alerts) or 'none'}")
        lines += [f"  {iso(a.when)} {a.kind}: {a.subject}" for a in self.alerts]
        return lines


def read_status(engine: Engine, configured: Iterable[str] = ()) -> Status:
    """Everything `intake status` shows; `configured`: the names of the configured sources
    (shown even before their first poll)."""
    with Session(engine) as session:
        health = source_health(session, configured)
        sources = [source for source in health if source.name not in PARTS]
        attention = [*failing_sources(health), *stuck_reports(session), *stuck_mail(session)]
        return Status(
            counts=status_counts(session),
            attention=sorted(attention, key=lambda item: iso(item.since) or ""),
            alerts=recent_alerts(session),
            inputs=inputs_ledger(session),
            sources=sources,
        )


def status_counts(session: Session) -> dict[str, dict[str, int]]:
    """Counts of reports by state and outbox mail by state (every known state, zeros too)."""
    reports = _count_by(session, ReportRow.state)
    outbox = _count_by(session, OutboxRow.state)
    return {
        "reports": {state: reports.get(state, 0) for state in _states(ReportState)},
        "outbox": {state: outbox.get(state, 0) for state in _states(OutboxState)},
    }


def inputs_ledger(session: Session) -> dict[str, int]:
    """Every input taken, by outcome: the known outcomes (zeros too), then any other."""
    rows = session.exec(select(SourceItem.outcome, func.count()).group_by(SourceItem.outcome))
    found = {outcome or UNKNOWN: int(n) for outcome, n in rows}
    ledger = {outcome: found.pop(outcome, 0) for outcome in LEDGER}
    return ledger | dict(sorted(found.items()))


def source_health(session: Session, configured: Iterable[str]) -> list[SourceHealth]:
    """Each configured source and each source with a status row, by name."""
    rows = {row.name: row for row in session.exec(select(SourceStatus))}
    names = list(dict.fromkeys([*configured, *sorted(rows)]))
    return [_health(name, rows.get(name)) for name in names]


def _health(name: str, row: SourceStatus | None) -> SourceHealth:
    if row is None:
        return SourceHealth(name)
    return SourceHealth(name, row.last_success_at, row.last_error, row.error_since, row.error_cause)


def failing_sources(sources: list[SourceHealth]) -> list[Attention]:
    """Failing sources, a rules or templates edit that does not load and an SMTP server that
    does not take our mail (each its own kind: `rules`, `template`, `smtp`)."""
    return [
        Attention(
            (source.cause or source.name) if source.name in PARTS else "source",
            None,
            None if source.name in PARTS else source.name,
            source.last_error or "failing",
            since,
        )
        for source in sources
        if (since := source.error_since) is not None
    ]


def stuck_reports(session: Session) -> list[Attention]:
    """Quarantined and unrouted reports (held ones are listed by their held referrals)."""
    query = select(ReportRow).where(col(ReportRow.state).in_(STUCK_REPORTS))
    reports = list(session.exec(query.order_by(col(ReportRow.id))))
    found = origins(session, [r.id for r in reports if r.id is not None])
    return [
        Attention(
            report.state,
            report.reference,
            found.get(report.id or 0),
            _report_reason(report),
            report.received_at,
            report.urgent,
        )
        for report in reports
    ]


def _report_reason(report: ReportRow) -> str:
    if report.state != ReportState.UNROUTED:
        return report.reason or "no reason recorded"
    rules = json.loads(report.decision or "{}").get("rules") or []
    matched = f"rules matched: {', '.join(rules)}" if rules else "no rule matched"
    return (
        f"the rules refer it to no service ({matched}); fix the rules, then "
        "`intake quarantine release` routes it again"
    )


def stuck_mail(session: Session) -> list[Attention]:
    """Held referrals, dead letters and bounced mail, with the report they belong to."""
    query = (
        select(OutboxRow, ReportRow)
        .join(ReportRow, col(OutboxRow.report_id) == col(ReportRow.id), isouter=True)
        .where(col(OutboxRow.state).in_(STUCK_MAIL))
        .order_by(col(OutboxRow.id))
    )
    pairs = list(session.exec(query))
    found = origins(session, [row.report_id for row, _ in pairs if row.report_id])
    return [
        Attention(
            row.state,
            report.reference if report else None,
            found.get(row.report_id or 0),
            f"{row.kind} to {row.target}: {row.last_error or row.state}",
            _mail_since(row, anonymous=bool(report and report.anonymous)),
            bool(report and report.urgent),
        )
        for row, report in pairs
    ]


def _mail_since(row: OutboxRow, *, anonymous: bool) -> datetime:
    """Held: since it was made. Failed: the time its last attempt was due (it was dead-lettered
    on that attempt). Bounced: when it was sent (the bounce came after). For an anonymous
    report's mail, to the hour only, like the report's own time."""
    since = row.created_at
    if row.state == OutboxState.FAILED:
        since = row.next_attempt_at
    elif row.state == OutboxState.BOUNCED and row.sent_at is not None:
        since = row.sent_at
    return to_the_hour(since) if anonymous else since


def origins(session: Session, report_ids: list[int]) -> dict[int, str]:
    """The source each report was first taken in from, by report id."""
    query = (
        select(SourceItem)
        .where(col(SourceItem.report_id).in_(report_ids))
        .order_by(col(SourceItem.seen_at).desc())
    )
    return {
        item.report_id: item.source or source_name(item.source_key)
        for item in session.exec(query)
        if item.report_id is not None
    }  # the earliest item of a report comes last and wins


def recent_alerts(session: Session, days: int = ALERT_DAYS) -> list[Alert]:
    """The alerts raised in the last `days` days, newest first (at most ALERT_LIMIT). An alert
    from before kinds and subjects were kept shows its key."""
    query = (
        select(AlertRow)
        .where(AlertRow.created_at >= utcnow() - timedelta(days=days))
        .order_by(col(AlertRow.created_at).desc())
        .limit(ALERT_LIMIT)
    )
    return [
        Alert(row.kind or row.key.split(":")[0], row.subject or row.key, row.created_at)
        for row in session.exec(query)
    ]


def _states(states: type) -> list[str]:
    return [value for name, value in vars(states).items() if name.isupper()]


def _count_by(session: Session, column: Any) -> dict[str, int]:
    rows = session.exec(select(column, func.count()).group_by(column))
    return {str(value): int(n) for value, n in rows}
