"""The admins' commands on a real deployment: check-rules, route --dry-run, refusal to start."""

from __future__ import annotations

import json

from tests.integration.conftest import ANONYMOUS, Deployment, email

BROKEN_RULES = """rules:
  - name: fine
    when: {anonymous: true}
    refer: [advice-centre]
  - name: typo
    when: {catgory: hate-crime}
    refer: [nobody-service]
  - name: bad-ack
    when: {source: email}
    acknowledge: ack-missing
"""


def test_check_rules_accepts_the_shipped_rules(deployment: Deployment) -> None:
    run = deployment.intake("check-rules")
    assert run.returncode == 0, run.stdout + run.stderr


def test_broken_rules_are_refused_with_file_and_line(deployment: Deployment) -> None:
    (deployment.rules_dir / "routing.yaml").write_text(BROKEN_RULES)
    path = deployment.rules_dir / "routing.yaml"

    run = deployment.intake("check-rules")

    assert run.returncode == 1
    lines = run.stdout.strip().splitlines()
    assert any(line.startswith(f"{path}:6: ") and "catgory" in line for line in lines), lines
    assert any(line.startswith(f"{path}:7: ") and "nobody-service" in line for line in lines), lines
    daemon = deployment.run_once()
    assert daemon.returncode != 0
    assert f"{path}:6: " in daemon.stderr
    assert not (deployment.data_dir / "intake.db").exists()


def test_missing_template_and_missing_key_are_named(deployment: Deployment) -> None:
    (deployment.rules_dir / "routing.yaml").write_text(
        "rules:\n  - name: x\n    when: {anonymous: true}\n    acknowledge: ack-missing\n"
        "default: {refer: [advice-centre]}\n"
    )
    services = deployment.rules_dir / "services.yaml"
    services.write_text(
        services.read_text().replace(deployment.keys.services["advice-centre"], "A" * 40)
    )

    run = deployment.intake("check-rules")

    assert run.returncode == 1
    assert "ack-missing" in run.stdout
    assert "advice-centre" in run.stdout and "A" * 40 in run.stdout
    assert all(line.count(":") >= 2 for line in run.stdout.strip().splitlines())


def test_route_dry_run_prints_the_decision_and_writes_nothing(deployment: Deployment) -> None:
    message = deployment.root / "report.eml"
    message.write_bytes(email("I feel in danger and someone made racist threats", to=ANONYMOUS))

    run = deployment.intake("route", "--dry-run", "--json", str(message))

    assert run.returncode == 0, run.stderr
    decision = json.loads(run.stdout)
    assert set(decision) >= {"category", "anonymous", "urgent", "refer", "acknowledge", "rules"}
    assert decision["category"] == "hate-crime"
    assert decision["anonymous"] is True and decision["urgent"] is True
    assert decision["refer"] == ["student-services"]
    assert decision["acknowledge"] == "ack-default"
    assert "urgent" in decision["rules"] and "hate-crime-keywords" in decision["rules"]
    assert not deployment.data_dir.exists()
    assert deployment.smtp.messages == []


def test_bad_config_names_the_key(deployment: Deployment) -> None:
    deployment.write(extra='[schedule]\npoll_seconds = "often"\n')

    run = deployment.intake("status")

    assert run.returncode == 1
    assert "schedule.poll_seconds" in run.stderr
    assert str(deployment.config_path) in run.stderr
