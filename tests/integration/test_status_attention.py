"""`intake status` through the real daemon (Dovecot, the SMTP sink, gpg): what reached nobody is
listed in `attention` until resolved, alerts are listed, and the inputs ledger accounts for
every message taken. Unrouted reports are alerted (an urgent one on its own, "URGENT:"), still
acknowledged, and never shown as delivered. Nothing of the reports' content is shown.

The loader refuses a default that refers nobody, so an unrouted report is made the only way
left: the daemon's own jobs (`run_once`) in this process, with the loaded default emptied."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.app import App
from pipeline.cli import main
from pipeline.daemon import run_once
from tests.integration.conftest import ADMIN, Deployment, email

ROUTING = """rules:
  - name: urgent
    when: {any_keyword: ["in danger"]}
    set: {urgent: true}
  - name: harassment
    when: {any_keyword: ["harassed"]}
    refer: [advice-centre]
default: {refer: [student-services], acknowledge: ack-default}
"""
MISSING_KEY = "A" * 40


def unmatched_bounce() -> bytes:
    return (
        b"From: MAILER-DAEMON@mx.example.ac.uk\r\nReturn-Path: <>\r\nTo: report@example.ac.uk\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn9@mx>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; "
        b'boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n'
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; someone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: report@example.ac.uk\r\n"
        b"Message-ID: <never-sent@example.ac.uk>\r\nSubject: Referral\r\n\r\n--B--\r\n"
    )


def run_referring_nobody_by_default(deployment: Deployment) -> int:
    """One `--once` run of the daemon's jobs whose default route refers nobody."""
    os.environ["TEST_IMAP_PASSWORD"] = deployment.imap.password
    app = App.open(deployment.config())
    try:
        default = app.rules.default
        assert default is not None and default.refer
        app.rules.default = replace(default, refer=())
        return run_once(app)
    finally:
        app.close()
        del os.environ["TEST_IMAP_PASSWORD"]


def status_json(deployment: Deployment) -> dict[str, Any]:
    run = deployment.intake("status", "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def since(item: dict[str, object]) -> datetime:
    return datetime.strptime(str(item["since"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def test_everything_that_reached_nobody_is_listed_alerted_and_accounted_for(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    (deployment.rules_dir / "routing.yaml").write_text(ROUTING)
    started = datetime.now(UTC).replace(microsecond=0)
    # 1. A referral and its acknowledgement refused for good by the SMTP server: dead letters.
    deployment.smtp.script("550 5.1.1 no such user", times=2, at="RCPT")
    deployment.imap.append(
        email("I was harassed on the bus. FAILMARK", sender="Fay <fay@example.ac.uk>")
    )
    deployment.run_once()
    # 2. The advice centre's key goes missing; an anonymous folder the mailbox lacks.
    services = deployment.rules_dir / "services.yaml"
    services.write_text(
        services.read_text().replace(deployment.keys.services["advice-centre"], MISSING_KEY)
    )
    deployment.write(imap_extra='anonymous_folders = ["Missing"]\n')
    odd = email(
        "Something odd happened in the lab. ODDMARK",
        sender="Olu <olu@example.ac.uk>",
        message_id="<odd@example.ac.uk>",
    )
    for raw in (
        email("I was harassed in the library. HELDMARK", message_id="<held@example.ac.uk>"),
        odd,
        email(
            "I feel in danger tonight. URGENTMARK",
            sender="Uma <uma@example.ac.uk>",
            message_id="<urgent@example.ac.uk>",
        ),
        b"\x00\x01\x02 garbage GARBAGEMARK",
        odd,  # the same message again: a duplicate
        email(
            "I am away. AWAYMARK",
            sender="Al <al@example.ac.uk>",
            subject="Out of office",
            message_id="<away@example.ac.uk>",
            extra_headers="Auto-Submitted: auto-replied\r\n",
        ),
        unmatched_bounce(),
    ):
        deployment.imap.append(raw)
    run_referring_nobody_by_default(deployment)

    status = status_json(deployment)

    assert {"reports", "outbox", "attention", "alerts", "inputs", "sources"} == set(status)
    # The ledger: 8 messages appended, 8 inputs taken, each counted once by what it became.
    inputs = status["inputs"]
    assert sum(inputs.values()) == 8, inputs
    assert inputs["stored"] == 1 and inputs["held"] == 1 and inputs["unrouted"] == 2
    assert inputs["quarantined"] == 1 and inputs["duplicate"] == 1
    assert inputs["auto_reply"] == 1 and inputs["bounce"] == 1
    assert status["reports"]["unrouted"] == 2 and status["reports"]["delivered"] == 0

    inbox = f"imap:{deployment.imap.username}@{deployment.imap.host}/INBOX"
    attention = status["attention"]
    by_kind: dict[str, list[dict[str, object]]] = {}
    for item in attention:
        by_kind.setdefault(str(item["kind"]), []).append(item)
    assert sorted(by_kind) == ["failed", "held", "quarantined", "source", "unrouted"]
    failed = sorted(str(item["reason"]) for item in by_kind["failed"])
    assert failed[0].startswith("ack to reporter: SMTP 550")
    assert failed[1].startswith("referral to advice-centre: SMTP 550")
    (held,) = by_kind["held"]
    assert str(held["reason"]).startswith("referral to advice-centre: ")
    (quarantined,) = by_kind["quarantined"]
    assert "no headers" in str(quarantined["reason"])
    unrouted = by_kind["unrouted"]
    assert [item["urgent"] for item in unrouted] == [False, True]
    assert all("no service" in str(item["reason"]) for item in unrouted)
    (source,) = by_kind["source"]
    assert source["source"] == inbox and source["reference"] is None
    assert "Missing" in str(source["reason"])
    references = [item["reference"] for item in attention if item["kind"] != "source"]
    assert len(set(references)) == 5 and all(str(r).startswith("R-") for r in references)
    assert all(item["source"] == inbox for item in attention)
    now = datetime.now(UTC)
    assert all(started <= since(item) <= now for item in attention)
    assert status["sources"][inbox]["error_since"] is not None

    # Alerts: unrouted (names the report and what to do), its urgent twin on its own.
    urgent_reference = unrouted[1]["reference"]
    nobody = "reached no service: the rules refer it to nobody"
    alerts = {(a["kind"], a["subject"]) for a in status["alerts"]}
    assert ("urgent", f"URGENT: {urgent_reference} {nobody}") in alerts
    assert ("unrouted", f"{unrouted[0]['reference']} {nobody}") in alerts
    mail = {str(m.message["Subject"]): m for m in deployment.smtp.messages if m.rcpt_tos == [ADMIN]}
    assert f"[report-intake] URGENT: {urgent_reference} {nobody}" in mail
    assert b"intake show" in mail[f"[report-intake] {unrouted[0]['reference']} {nobody}"].data
    # Unrouted reports are still acknowledged, as the rules say.
    assert any(m.rcpt_tos == ["olu@example.ac.uk"] for m in deployment.smtp.messages)
    assert any(m.rcpt_tos == ["uma@example.ac.uk"] for m in deployment.smtp.messages)

    capsys.readouterr()
    assert main(["status", "--config", str(deployment.config_path)]) == 0
    text = capsys.readouterr()
    assert "inputs: 8 taken: stored 1, duplicate 1, bounce 1, auto_reply 1" in text.out
    assert f"URGENT unrouted {urgent_reference} {inbox} since " in text.out
    assert f"quarantined {quarantined['reference']} {inbox}" in text.out
    assert f"{inbox}: FAILING since " in text.out
    assert f"urgent: URGENT: {urgent_reference}" in text.out
    markers = ["FAILMARK", "HELDMARK", "ODDMARK", "URGENTMARK", "GARBAGEMARK", "AWAYMARK"]
    for output in (text.out, json.dumps(status), *(m.data.decode() for m in mail.values())):
        for marker in [*markers, "olu@example", "uma@example", "fay@example", "sam.student"]:
            assert marker not in output
