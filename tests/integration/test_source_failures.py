"""Sources that cannot be read, through `run_daemon.py --once` on Dovecot and the SMTP sink: one
admin alert per source and cause naming the source and the config key, none on the next poll,
one "recovered" once it reads again, and a `source_status` row that says so. (The later runs of
a test use `run_in_process`, the same code without a new interpreter, to keep the tests fast.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlmodel import Session, select

from pipeline.models import SourceStatus
from pipeline.sources import PARTS
from pipeline.store import make_engine
from tests.integration.conftest import ADMIN, Deployment, email
from tests.integration.forms_data import PLATFORMS, form_config
from tests.servers.net import free_port

WRONG_PASSWORD = "wrong-Pa55-8d0e"  # must appear in no alert and no log


def admin_alerts(deployment: Deployment) -> list[EmailMessage]:
    return [m.message for m in deployment.smtp.messages if m.rcpt_tos == [ADMIN]]


def statuses(deployment: Deployment) -> dict[str, SourceStatus]:
    """The sources' status rows (not those of the rules and the outbox)."""
    engine = make_engine(deployment.config().database_url)
    try:
        with Session(engine) as session:
            rows = session.exec(select(SourceStatus)).all()
            return {row.name: row for row in rows if row.name not in PARTS}
    finally:
        engine.dispose()


def edit_config(deployment: Deployment, old: str, new: str) -> None:
    text = deployment.config_path.read_text()
    assert old in text
    deployment.config_path.write_text(text.replace(old, new))


def password_file(deployment: Deployment, path: Path) -> None:
    """The IMAP password from `path` instead of the environment."""
    edit_config(deployment, 'password_env = "TEST_IMAP_PASSWORD"', f'password_file = "{path}"')


def write_secret(path: Path, text: str) -> None:
    path.write_text(text + "\n")
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Case:
    """How to break a source, what its alert must name, and how to fix it."""

    source: str  # the start of the SourceStatus name
    cause: str
    break_it: Callable[[Deployment], None]
    names: Callable[[Deployment], list[str]]  # what the alert and last_error must contain
    fix: Callable[[Deployment], None]


def _wrong_password(d: Deployment) -> None:
    write_secret(d.root / "imap.pw", WRONG_PASSWORD)
    password_file(d, d.root / "imap.pw")


def _closed_port(d: Deployment) -> None:
    edit_config(d, f"port = {d.imap.port}", f"port = {free_port()}")


def _missing_password_file(d: Deployment) -> None:
    password_file(d, d.root / "secrets" / "imap.pw")


def _create_password_file(d: Deployment) -> None:
    (d.root / "secrets").mkdir()
    write_secret(d.root / "secrets" / "imap.pw", d.imap.password)


def _tls_to_a_plain_server(d: Deployment) -> None:
    edit_config(d, 'security = "none"\nusername', 'security = "tls"\nusername')


def _refused_layout(d: Deployment) -> None:
    d.write(extra=form_config(PLATFORMS["generic"], "report-form", "exports", "keep"))
    (d.root / "exports").mkdir()
    (d.root / "exports" / "other.csv").write_text("id,colour\n1,blue\n")


def _form_folder_missing(d: Deployment) -> None:
    d.write(extra=form_config(PLATFORMS["generic"], "report-form", "exports", "keep"))


CASES = {
    "login-refused": Case(
        "imap:",
        "login",
        _wrong_password,
        lambda d: [f"imap ({d.imap.host}:{d.imap.port})", "login refused", "imap.password_file"],
        lambda d: write_secret(d.root / "imap.pw", d.imap.password),
    ),
    "unreachable": Case(
        "imap:",
        "unreachable",
        _closed_port,
        lambda d: ["imap (127.0.0.1:", "Connection refused", "imap.host and imap.port"],
        lambda d: d.write(),
    ),
    "missing-password-file": Case(
        "imap:",
        "password",
        _missing_password_file,
        lambda d: [f"imap.password_file: {d.root / 'secrets' / 'imap.pw'}: no such file"],
        _create_password_file,
    ),
    "tls-failure": Case(
        "imap:",
        "tls",
        _tls_to_a_plain_server,
        lambda d: [f"imap ({d.imap.host}:{d.imap.port}): TLS failed", "imap.security"],
        lambda d: d.write(),
    ),
    "refused-layout": Case(
        "form:report-form",
        "export",
        _refused_layout,
        lambda d: ["form:report-form", "other.csv", "unknown layout", "forms.columns"],
        lambda d: (d.root / "exports" / "other.csv").unlink(),
    ),
    "form-folder-missing": Case(
        "form:report-form",
        "folder",
        _form_folder_missing,
        lambda d: [f"form:report-form: forms.path: {d.root / 'exports'}: no such folder"],
        lambda d: (d.root / "exports").mkdir(),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_failing_source_is_alerted_once_then_recovered(deployment: Deployment, name: str) -> None:
    case = CASES[name]
    deployment.imap.append(email("Waits in the mailbox while a source fails. WAIT-1"))
    case.break_it(deployment)

    first = deployment.run_once()

    assert first.returncode == 2, first.stderr
    assert deployment.run_in_process() == 2
    alerts = admin_alerts(deployment)
    assert len(alerts) == 1, [str(a["Subject"]) for a in alerts]
    body = alerts[0].get_content()
    assert case.source in str(alerts[0]["Subject"])
    for text in case.names(deployment):
        assert text in body and text in first.stderr
    assert "FileNotFoundError" not in body and "WAIT-1" not in body
    failing = next(s for n, s in statuses(deployment).items() if n.startswith(case.source))
    assert failing.error_cause == case.cause and failing.error_since is not None
    assert all(text in (failing.last_error or "") for text in case.names(deployment))

    case.fix(deployment)
    assert deployment.run_in_process() == 0
    alerts = admin_alerts(deployment)
    assert len(alerts) == 2
    assert "recovered" in str(alerts[1]["Subject"]) and case.source in str(alerts[1]["Subject"])
    recovered = statuses(deployment)[failing.name]
    assert recovered.last_success_at is not None
    assert (recovered.last_error, recovered.error_cause, recovered.error_since) == (None,) * 3
    assert deployment.imap.uids("INBOX") == []  # nothing lost: taken once the source reads
    for log in deployment.logs:
        assert WRONG_PASSWORD not in log
    assert all(WRONG_PASSWORD.encode() not in m.data for m in deployment.smtp.messages)


def test_spell_keeps_its_start_reminds_once_a_day_and_a_new_cause_alerts(
    deployment: Deployment,
) -> None:
    _closed_port(deployment)
    assert deployment.run_in_process() == 2
    first = next(iter(statuses(deployment).values()))
    engine = make_engine(deployment.config().database_url)
    with Session(engine) as session:  # the spell began two days ago
        row = session.get(SourceStatus, first.name)
        assert row is not None and row.error_since is not None
        started = row.error_since - timedelta(days=2)
        row.error_since = started
        session.add(row)
        session.commit()
    engine.dispose()

    assert deployment.run_in_process() == 2
    assert deployment.run_in_process() == 2

    subjects = [str(a["Subject"]) for a in admin_alerts(deployment)]
    assert len(subjects) == 2 and "still cannot be read (unreachable, 2 day(s))" in subjects[1]
    assert statuses(deployment)[first.name].error_since == started

    deployment.write()
    _wrong_password(deployment)  # another cause within the same spell
    assert deployment.run_in_process() == 2

    subjects = [str(a["Subject"]) for a in admin_alerts(deployment)]
    assert len(subjects) == 3 and "cannot be read (login)" in subjects[2]
    status = statuses(deployment)[first.name]
    assert status.error_cause == "login" and status.error_since == started
