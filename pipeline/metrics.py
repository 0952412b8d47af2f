"""Metrics: the database (and the configured source names) in, a Prometheus text-format file
out, for node_exporter's textfile collector (`[metrics] textfile`, rewritten after each job).

Every metric is named `report_intake_*` and has `# HELP` and `# TYPE` lines:

  report_intake_reports{state}                        reports by state (every state, zeros too)
  report_intake_quarantined_reports                   quarantined reports (an admin must look)
  report_intake_outbox_mail{state}                    outbox mail by state (`queued`: the queue)
  report_intake_outbox_oldest_queued_age_seconds      age of the oldest queued mail (0: none)
  report_intake_held_referrals                        referrals held for a service key
  report_intake_source_last_success_timestamp_seconds{source}   last good poll (unix; 0: never)
  report_intake_source_failing{source}                1 while the source cannot be read
  report_intake_alerts_total{kind}                    admin alerts raised, by kind

Labels carry states, configured source names and alert kinds only; never content. The file is
written to a temporary name in its folder (no `.prom` suffix, so the collector skips it), made
mode 0644 (node_exporter runs as another user) and renamed over the old one: the collector
never reads half a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from pipeline.models import AlertRow, OutboxRow, OutboxState, ReportState, as_utc, utcnow
from pipeline.status import source_health, status_counts

PREFIX = "report_intake_"


class MetricsError(Exception):
    """The metrics file cannot be written; the message names the key and the path."""


@dataclass
class Metric:
    name: str  # without PREFIX
    help: str
    kind: str = "gauge"
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def single(name: str, help: str, value: float) -> Metric:
    """A gauge without labels."""
    return Metric(name, help, samples=[({}, value)])


def labelled(
    name: str, help: str, label: str, values: Mapping[str, float], kind: str = "gauge"
) -> Metric:
    """One sample per key of `values`, the key as the value of `label`."""
    return Metric(name, help, kind, [({label: key}, value) for key, value in values.items()])


def collect(engine: Engine, sources: Iterable[str], now: datetime | None = None) -> list[Metric]:
    """Every metric, read in one session; `sources`: the configured sources' names (a source
    no longer configured has no series: it would look stale for ever)."""
    now = now or utcnow()
    configured = set(sources)
    with Session(engine) as session:
        counts = status_counts(session)
        oldest = session.exec(
            select(func.min(OutboxRow.created_at)).where(OutboxRow.state == OutboxState.QUEUED)
        ).one()
        held = session.exec(
            select(func.count())
            .select_from(OutboxRow)
            .where(OutboxRow.state == OutboxState.HELD, OutboxRow.kind == "referral")
        ).one()
        health = [h for h in source_health(session, configured) if h.name in configured]
        alerts = session.exec(select(AlertRow.kind, func.count()).group_by(col(AlertRow.kind)))
        by_kind = dict(sorted((kind or "unknown", int(n)) for kind, n in alerts))
    age = max((now - as_utc(oldest)).total_seconds(), 0.0) if oldest else 0.0
    last = {s.name: as_utc(s.last_success).timestamp() if s.last_success else 0 for s in health}
    failing = {s.name: 1 if s.error_since else 0 for s in health}
    return [
        labelled("reports", "Reports by state.", "state", counts["reports"]),
        single(
            "quarantined_reports",
            "Reports quarantined: an admin must look.",
            counts["reports"][ReportState.QUARANTINED],
        ),
        labelled(
            "outbox_mail",
            "Outbox mail by state; queued is the queue depth.",
            "state",
            counts["outbox"],
        ),
        single("outbox_oldest_queued_age_seconds", "Age of the oldest queued mail (0: none).", age),
        single("held_referrals", "Referrals held: their service's key cannot be used.", held),
        labelled(
            "source_last_success_timestamp_seconds",
            "When each source was last polled without error (unix time; 0: never).",
            "source",
            last,
        ),
        labelled("source_failing", "1 while the source cannot be read, else 0.", "source", failing),
        labelled("alerts_total", "Admin alerts raised, by kind.", "kind", by_kind, "counter"),
    ]


def _value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _label(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def exposition(metrics: list[Metric]) -> str:
    """The Prometheus text exposition format (version 0.0.4) of these metrics."""
    lines = []
    for metric in metrics:
        name = PREFIX + metric.name
        lines += [f"# HELP {name} {metric.help}", f"# TYPE {name} {metric.kind}"]
        for labels, value in metric.samples:
            pairs = ",".join(f"{key}={_label(text)}" for key, text in labels.items())
            lines.append(
                f"{name}{{{pairs}}} {_value(value)}" if pairs else f"{name} {_value(value)}"
            )
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically, mode 0644; MetricsError naming the key."""
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise MetricsError(f"metrics.textfile: {path}: cannot write it ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise MetricsError(f"metrics.textfile: {path}: cannot write it ({exc.strerror})") from None


def write_metrics(engine: Engine, path: Path, sources: Iterable[str]) -> None:
    """Collect every metric now and write the file."""
    write_textfile(path, exposition(collect(engine, sources)))
