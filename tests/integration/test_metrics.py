"""`[metrics] textfile`: the Prometheus text file after real runs (Dovecot, the SMTP sink, gpg),
parsed: reports, held and quarantined, the outbox queue and its age, the sources' last good
poll, alerts; written atomically, mode 0644, never with report content."""

from __future__ import annotations

import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.metrics import MetricsError, write_textfile
from tests.integration.conftest import Deployment, email

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


@dataclass
class Exposition:
    help: dict[str, str] = field(default_factory=dict)
    type: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples[("report_intake_" + name, frozenset(labels.items()))]

    def labels(self, name: str, label: str) -> dict[str, float]:
        return {
            dict(pairs)[label]: value
            for (found, pairs), value in self.samples.items()
            if found == "report_intake_" + name
        }


def parse(text: str) -> Exposition:
    """The text exposition format, strictly: HELP and TYPE before a family's samples."""
    parsed = Exposition()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            parsed.help[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("gauge", "counter"), line
            parsed.type[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, line
            name, labels, value = match.groups()
            assert name.startswith("report_intake_"), line
            assert name in parsed.help and name in parsed.type, f"{name}: no HELP/TYPE first"
            pairs = frozenset(LABEL.findall(labels or ""))
            assert (name, pairs) not in parsed.samples, f"{line}: twice"
            parsed.samples[(name, pairs)] = float(value)
    return parsed


@pytest.fixture
def textfile(deployment: Deployment) -> Path:
    folder = deployment.root / "node-exporter"
    folder.mkdir()
    return folder / "report-intake.prom"


def test_the_metrics_file_after_runs(deployment: Deployment, textfile: Path) -> None:
    keys_dir = deployment.own_keys()
    (keys_dir / "student-services.asc").unlink()  # its referrals are held
    extra = (
        '[metrics]\ntextfile = "node-exporter/report-intake.prom"\n[limits]\nmessage_bytes = 4000\n'
    )
    deployment.write(extra=extra)
    deployment.imap.append(email("Something happened. Cnry-metrics-1", subject="Cnry-subj"))
    deployment.imap.append(email("A hate crime happened.", message_id="<m2@example.ac.uk>"))
    too_large = "Cnry-large " * 500
    deployment.imap.append(email(too_large, message_id="<m3@example.ac.uk>"))
    before = time.time()
    run = deployment.run_once()
    assert run.returncode == 8, run.stderr  # the large one is quarantined
    after = time.time()

    metrics = parse(textfile.read_text())
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644  # node_exporter runs as another user
    assert [p.name for p in textfile.parent.iterdir()] == [textfile.name]  # no temporary left
    assert "Cnry" not in textfile.read_text()
    reports = metrics.labels("reports", "state")
    assert {state: reports[state] for state in ("delivered", "held", "quarantined")} == {
        "delivered": 1,
        "held": 1,
        "quarantined": 1,
    }
    assert reports["queued"] == reports["unrouted"] == reports["routed"] == 0
    assert metrics.value("quarantined_reports") == 1
    assert metrics.value("held_referrals") == 1
    assert metrics.labels("outbox_mail", "state")["held"] == 1
    assert metrics.labels("outbox_mail", "state")["queued"] == 0
    assert metrics.value("outbox_oldest_queued_age_seconds") == 0
    source = f"imap:{deployment.imap.username}@{deployment.imap.host}/INBOX"
    polled = metrics.value("source_last_success_timestamp_seconds", source=source)
    assert before - 1 <= polled <= after + 1
    assert metrics.value("source_failing", source=source) == 0
    alerts = metrics.labels("alerts_total", "kind")
    assert alerts["key"] >= 1 and alerts["quarantined"] == 1  # the service key, the large one
    assert metrics.type["report_intake_alerts_total"] == "counter"

    deployment.smtp.stop()
    try:
        deployment.imap.append(email("While SMTP is down.", message_id="<m4@example.ac.uk>"))
        run = deployment.run_once()
    finally:
        deployment.smtp.start()
    assert run.returncode & 4, run.stderr  # mail waits
    metrics = parse(textfile.read_text())
    assert metrics.labels("outbox_mail", "state")["queued"] == 2  # referral, acknowledgement
    assert 0 < metrics.value("outbox_oldest_queued_age_seconds") < 120

    deployment.imap.stop()
    try:
        run = deployment.run_once()
    finally:
        deployment.imap.start()
    assert run.returncode & 2, run.stderr  # the source failed
    metrics = parse(textfile.read_text())
    assert metrics.value("source_failing", source=source) == 1
    last = metrics.value("source_last_success_timestamp_seconds", source=source)
    assert polled < last < time.time()  # the second run's good poll, not this one


def test_no_metrics_file_unless_configured(deployment: Deployment) -> None:
    deployment.imap.append(email("Something happened."))
    assert deployment.run_once().returncode == 0
    assert not list(deployment.root.rglob("*.prom"))


def test_a_folder_that_cannot_be_written_is_an_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match=r"^metrics\.textfile: .*missing/x\.prom: cannot write"):
        write_textfile(tmp_path / "missing" / "x.prom", "# nothing\n")
