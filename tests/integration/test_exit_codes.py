"""`run --once` exit codes, through `run_daemon.py --once` and `intake run --once`: 0 all well,
2 a source could not be read, 4 mail not handed to the SMTP server, 8 a report quarantined or
unrouted; the codes add up."""

from __future__ import annotations

from tests.integration.conftest import ADMIN, Deployment, email
from tests.integration.forms_data import PLATFORMS, form_config
from tests.integration.test_status_attention import run_referring_nobody_by_default
from tests.servers.net import free_port

TOO_BIG = "[limits]\nmessage_bytes = 2000\n"


def test_all_well_exits_0(deployment: Deployment) -> None:
    deployment.imap.append(email("A report that goes through. EXIT-0"))

    run = deployment.intake("run", "--once")

    assert run.returncode == 0, run.stderr
    assert len(deployment.smtp.wait_for(2)) == 2


def test_mail_the_server_defers_exits_4(deployment: Deployment) -> None:
    deployment.imap.append(email("A report whose referral must wait. EXIT-4"))
    deployment.smtp.script("451 4.3.0 try again later")

    run = deployment.run_once()

    assert run.returncode == 4, run.stderr
    assert len(deployment.smtp.messages) == 1  # the other mail went; the deferred one waits


def test_quarantined_report_exits_8(deployment: Deployment) -> None:
    deployment.write(extra=TOO_BIG)
    deployment.imap.append(email("Too big to read. " + "x" * 3000))

    run = deployment.run_once()

    assert run.returncode == 8, run.stderr
    assert deployment.imap.uids("INBOX") == []  # taken, kept encrypted in quarantine


def test_codes_add_up(deployment: Deployment) -> None:
    """A source down (2) whose alert the server defers (4): 6. A quarantined report (8) while a
    form's folder is missing (2): 10."""
    config = deployment.config_path.read_text()
    deployment.config_path.write_text(
        config.replace(f"port = {deployment.imap.port}", f"port = {free_port()}")
    )
    deployment.smtp.script("451 4.3.0 try again later")

    down = deployment.intake("run", "--once")

    assert down.returncode == 6, down.stderr
    assert not [m for m in deployment.smtp.messages if m.rcpt_tos == [ADMIN]]  # deferred

    form = form_config(PLATFORMS["generic"], "report-form", "missing-folder", "keep")
    deployment.write(extra=TOO_BIG + form)
    deployment.imap.append(email("Too big to read. " + "x" * 3000))

    both = deployment.run_once()

    assert both.returncode == 10, both.stderr
    assert "form:report-form: forms.path:" in both.stderr


def test_unrouted_report_exits_8(deployment: Deployment) -> None:
    deployment.imap.append(email("Something odd happened in the lab. EXIT-UNROUTED"))

    assert run_referring_nobody_by_default(deployment) == 8
