"""Nothing lost, nothing sent twice: real SIGKILLs at named points, servers that go away,
keys that expire, UIDVALIDITY that changes. Real Dovecot, gpg, SMTP sink, SQLite/PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from pipeline.faults import POINTS
from tests.integration.conftest import ADMIN, REPO, Deployment, email
from tests.servers.smtp import Received

FAST_RETRY = "[schedule]\npoll_seconds = 1\noutbox_seconds = 1\n"


def message_ids(messages: list[Received]) -> Counter[str]:
    return Counter(str(m.message["Message-ID"]) for m in messages)


def status(deployment: Deployment) -> dict[str, dict[str, int]]:
    run = deployment.intake("status", "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def set_smtp(deployment: Deployment, extra: str = "") -> None:
    config = deployment.config_path.read_text()
    deployment.config_path.write_text(
        config.replace(
            "timeout_seconds = 10\n\n[intake]", f"timeout_seconds = 10\n{extra}\n[intake]"
        )
    )


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, deployment: Deployment) -> Deployment:
    if request.param == "postgres":
        deployment.database_url = request.getfixturevalue("pg_url")
        deployment.write()
    return deployment


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_point_then_restart_finishes_the_work(
    database: Deployment, point: str
) -> None:
    deployment = database
    for n in range(3):
        deployment.imap.append(email(f"Report number {n}", message_id=f"<crash-{n}@x>"))

    nth = (
        1 if point in ("after-flag", "after-move") else 2
    )  # a batch leaves at once; the rest per item
    crashed = deployment.run_once(crash_at=f"{point}:{nth}")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    finished = deployment.run_once()
    assert finished.returncode == 0, finished.stderr

    received = deployment.smtp.messages
    ids = message_ids(received)
    assert len(ids) == 6  # three referrals and three acknowledgements, none missing
    duplicates = {mid: n for mid, n in ids.items() if n > 1}
    if point == "after-smtp":
        assert sum(duplicates.values()) - len(duplicates) <= 1  # the one in flight, same Message-ID
    else:
        assert duplicates == {}
    assert deployment.imap.uids("INBOX") == []
    counts = status(deployment)
    assert counts["reports"]["delivered"] == 3
    assert counts["outbox"]["sent"] == 6


def test_kill_again_and_again_during_a_batch_of_200(deployment: Deployment) -> None:
    with deployment.imap.client() as imap:
        for n in range(200):
            sender = f"Student {n} <student{n}@example.ac.uk>"
            imap.append("INBOX", email(f"Batch {n}", sender=sender, message_id=f"<batch-{n}@x>"))
    kills = 0
    for n in [17, 53, 101, 7, 211, 29, 83, 3, 151, 41] * 10:
        run = deployment.run_once(crash_at=f"any:{n}")
        if run.returncode == 0:
            break
        assert run.returncode == -signal.SIGKILL, run.stderr
        kills += 1
    else:
        pytest.fail("the batch never finished")
    assert deployment.run_once().returncode == 0

    ids = message_ids(deployment.smtp.messages)
    assert kills >= 5
    assert len(ids) == 400  # every referral and acknowledgement, once per Message-ID
    duplicated = sum(n - 1 for n in ids.values())
    assert duplicated <= kills  # only a kill between the server's 250 and the commit repeats
    assert status(deployment)["reports"]["delivered"] == 200
    print(f"200 reports, {kills} kills, {duplicated} resends with the same Message-ID")


def test_smtp_down_then_back_delivers_everything(deployment: Deployment) -> None:
    set_smtp(deployment, "retry_seconds = 0.5")
    for n in range(3):
        deployment.imap.append(email(f"While SMTP is down {n}", message_id=f"<down-{n}@x>"))
    deployment.smtp.stop()
    try:
        assert deployment.run_once().returncode == 4  # mail not handed to the SMTP server
    finally:
        deployment.smtp.start()
    assert status(deployment)["outbox"]["queued"] == 6
    time.sleep(1.0)

    assert deployment.run_once().returncode == 0

    assert len(message_ids(deployment.smtp.wait_for(6))) == 6
    assert status(deployment)["reports"]["delivered"] == 3


def test_permanent_failure_is_a_dead_letter_with_an_alert(deployment: Deployment) -> None:
    deployment.smtp.script("550 5.1.1 no such mailbox", times=1)
    deployment.imap.append(email("Dead letter please. DEAD-MARK"))

    assert deployment.run_once().returncode == 4  # a dead letter: mail not handed over

    counts = status(deployment)
    assert counts["outbox"]["failed"] == 1
    alerts = [m for m in deployment.smtp.messages if m.rcpt_tos == [ADMIN]]
    assert len(alerts) == 1
    alert = alerts[0].message
    assert "could not be delivered" in str(alert["Subject"])
    assert b"DEAD-MARK" not in alerts[0].data and b"sam.student" not in alerts[0].data
    text = deployment.intake("status").stdout
    assert "failed 1" in text
    assert "ERROR" in deployment.logs[-1]

    requeue = deployment.intake("retry", "--send")
    assert requeue.returncode == 0, requeue.stderr
    assert status(deployment)["outbox"]["failed"] == 0


def test_uidvalidity_change_processes_nothing_twice(deployment: Deployment) -> None:
    deployment.imap.append(email("Committed, then the mailbox is rebuilt. UIDV-1"))
    crashed = deployment.run_once(crash_at="after-commit")
    assert crashed.returncode == -signal.SIGKILL
    subprocess.run(
        [
            "doveadm",
            "-c",
            str(deployment.imap.conf_path),
            "mailbox",
            "update",
            "-u",
            deployment.imap.username,
            "--uid-validity",
            str(int(time.time()) + 7),
            "INBOX",
        ],
        check=True,
        capture_output=True,
    )

    assert deployment.run_once().returncode == 0

    assert len(deployment.smtp.messages) == 2  # one referral, one acknowledgement
    assert deployment.imap.uids("INBOX") == []
    assert status(deployment)["reports"]["delivered"] == 1


def test_expired_then_removed_key_holds_referral_until_fixed(deployment: Deployment) -> None:
    keys_dir = deployment.own_keys()
    expired, public = deployment.keys.make_key(
        "Old advice", "advice@su.example.ac.uk", expire=dt.date(2020, 1, 1)
    )
    (keys_dir / "advice-centre.asc").write_text(public)
    services = deployment.rules_dir / "services.yaml"
    services.write_text(
        services.read_text().replace(deployment.keys.services["advice-centre"], expired)
    )
    deployment.imap.append(email("Held until the key is fixed. HELD-MARK"))

    assert deployment.run_once().returncode == 0

    advice = deployment.keys.emails["advice-centre"]
    assert [m for m in deployment.smtp.messages if advice in m.rcpt_tos] == []
    assert status(deployment)["outbox"]["held"] == 1
    assert status(deployment)["reports"]["held"] == 1
    alerts = [m for m in deployment.smtp.messages if m.rcpt_tos == [ADMIN]]
    assert any("held" in str(a.message["Subject"]) for a in alerts)
    assert all(b"HELD-MARK" not in m.data for m in deployment.smtp.messages)
    (keys_dir / "advice-centre.asc").unlink()  # removed altogether: still held, still no plaintext
    assert deployment.run_once().returncode == 0
    assert status(deployment)["outbox"]["held"] == 1

    fixed, public = deployment.keys.make_key("New advice", "advice@su.example.ac.uk")
    (keys_dir / "advice-centre.asc").write_text(public)
    services.write_text(services.read_text().replace(expired, fixed))
    retry = deployment.intake("retry", "--send")

    assert retry.returncode == 0, retry.stderr
    referral = next(m for m in deployment.smtp.messages if advice in m.rcpt_tos)
    assert referral.message.get_content_type() == "multipart/encrypted"
    encrypted = referral.message.get_payload()[1].get_payload(decode=True)  # type: ignore[index,union-attr]
    assert "HELD-MARK" in deployment.keys.decrypt(encrypted).decode()
    assert status(deployment)["reports"]["delivered"] == 1


def test_broken_rule_edit_keeps_last_good_rules(deployment: Deployment) -> None:
    deployment.write(extra=FAST_RETRY)
    daemon = subprocess.Popen(
        [sys.executable, str(REPO / "run_daemon.py"), "--config", str(deployment.config_path)],
        env=deployment.env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deployment.imap.append(email("Before the edit", message_id="<r1@x>"))
        deployment.smtp.wait_for(2, timeout=20)
        routing = deployment.rules_dir / "zz-broken.yaml"
        routing.write_text(
            "rules:\n  - name: broken\n    when: {colour: red}\n    refer: [advice-centre]\n"
        )
        time.sleep(1.5)
        deployment.imap.append(email("After the broken edit", message_id="<r2@x>"))
        received = deployment.smtp.wait_for(5, timeout=20)  # 2 + alert + referral + ack
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=20)
    assert daemon.returncode == 0
    assert f"{routing}:3: " in stderr and "colour" in stderr, stderr
    alerts = [m for m in received if m.rcpt_tos == [ADMIN]]
    assert any("rule files have errors" in str(a.message["Subject"]) for a in alerts)
    assert sum(deployment.keys.emails["advice-centre"] in m.rcpt_tos for m in received) == 2


def test_bounce_is_recorded_against_the_referral_not_taken_as_a_report(
    deployment: Deployment,
) -> None:
    deployment.imap.append(email("A report whose referral bounces."))
    assert deployment.run_once().returncode == 0
    referral = next(
        m for m in deployment.smtp.messages if m.message.get_content_type() == "multipart/encrypted"
    )
    message_id = str(referral.message["Message-ID"])
    dsn = (
        "From: MAILER-DAEMON@mx.example.ac.uk\r\nReturn-Path: <>\r\nTo: report@example.ac.uk\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.ac.uk\r\n\r\n"
        f"Final-Recipient: rfc822; {referral.rcpt_tos[0]}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: report@example.ac.uk\r\nMessage-ID: {message_id}\r\nSubject: Referral\r\n\r\n--B--\r\n"
    ).encode()
    deployment.imap.append(dsn)

    assert deployment.run_once().returncode == 0

    counts = status(deployment)
    assert sum(counts["reports"].values()) == 1  # the bounce is no report
    assert counts["outbox"]["bounced"] == 1
    alerts = [m for m in deployment.smtp.messages if m.rcpt_tos == [ADMIN]]
    assert any("bounced" in str(a.message["Subject"]) for a in alerts)
    assert deployment.imap.uids("INBOX") == []


def test_server_without_move_or_uidplus_leaves_messages_flagged_and_says_so(
    deployment: Deployment, dovecot_factory
) -> None:
    server = dovecot_factory(capabilities_without={"MOVE", "UIDPLUS"})
    deployment.imap = server
    deployment.write()
    server.append(email("No MOVE, no UIDPLUS."))

    assert deployment.run_once().returncode == 0
    assert deployment.run_once().returncode == 0  # flagged messages are not taken again

    assert len(deployment.smtp.messages) == 3  # referral, acknowledgement, one admin alert
    with server.client() as imap:
        imap.select_folder("INBOX", readonly=True)
        assert imap.search(["DELETED"]) == imap.search(["ALL"]) != []
    assert server.uids("Processed") == []  # nothing is copied anywhere by default
    assert "UIDPLUS" in deployment.intake("status").stdout


def test_key_about_to_expire_is_warned_about(deployment: Deployment) -> None:
    keys_dir = deployment.own_keys()
    soon, public = deployment.keys.make_key(
        "Soon advice", "advice@su.example.ac.uk", expire=dt.date.today() + dt.timedelta(days=10)
    )
    (keys_dir / "advice-centre.asc").write_text(public)
    services = deployment.rules_dir / "services.yaml"
    services.write_text(
        services.read_text().replace(deployment.keys.services["advice-centre"], soon)
    )

    run = deployment.run_once()

    assert run.returncode == 0
    assert f"key {soon} expires in" in run.stderr
    alerts = [m for m in deployment.smtp.messages if m.rcpt_tos == [ADMIN]]
    assert [str(a.message["Subject"]).count("expires in") for a in alerts] == [1]
