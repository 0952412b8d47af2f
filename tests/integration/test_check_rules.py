"""`intake check-rules` and `route --dry-run` on a real deployment (real gpg keys): a rule set
without a default route and broken templates are refused (the daemon too), warnings exit 0
unless --strict, and the dry run shows what the rules looked at and when the default applied.
The commands run in the test process (`pipeline.cli.main`), as `intake` would run them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable

import pytest

from pipeline.app import App, StartupError
from tests.integration.conftest import REPO, Deployment, Run, email


def test_no_default_route_is_refused_by_check_rules_and_the_daemon(
    deployment: Deployment, intake: Callable[..., Run]
) -> None:
    routing = deployment.rules_dir / "routing.yaml"
    routing.write_text(routing.read_text().replace("default:", "# default:"))

    run = intake("check-rules")

    expected = f"{deployment.rules_dir}/: no default route: no routing file sets 'default'"
    assert run.returncode == 1
    assert run.stdout.startswith(expected), run.stdout
    assert "add 'default: {refer: [" in run.stdout
    with pytest.raises(StartupError, match="no default route"):
        App.open(deployment.config())
    assert not (deployment.data_dir / "intake.db").exists()


def test_warnings_exit_0_unless_strict(deployment: Deployment, intake: Callable[..., Run]) -> None:
    routing = deployment.rules_dir / "routing.yaml"
    routing.write_text(
        routing.read_text().replace("rules:\n", "rules:\n  - {name: all, stop: true}\n", 1)
    )

    run = intake("check-rules")
    strict = intake("check-rules", "--strict")

    lines = run.stdout.strip().splitlines()
    warnings = [line for line in lines if ": warning: " in line]
    assert run.returncode == 0, run.stdout
    assert f"{routing}:6: warning: rule 'hate-crime-keywords' can never fire" in lines[0]
    assert any("rule 'sexual-violence' can never fire" in line for line in warnings)
    assert lines[-1].endswith(f"consistent; {len(warnings)} warning(s) above")
    assert strict.returncode == 1
    assert strict.stdout.strip().splitlines() == warnings


def test_broken_templates_are_refused_with_every_line(
    deployment: Deployment, intake: Callable[..., Run]
) -> None:
    templates = deployment.root / "templates"
    shutil.copytree(REPO / "templates", templates)
    config = deployment.config_path
    config.write_text(config.read_text().replace(f'"{REPO / "templates"}"', '"templates"'))
    ack = templates / "ack-default.txt"
    ack.write_text("Subject: {{ referense }}\n\n{{ reference | nosuch }}\n{{ anonimous }}\n")

    run = intake("check-rules")

    assert run.returncode == 1
    errors = [line for line in run.stdout.splitlines() if ": warning: " not in line]
    assert errors == [
        f"{ack}:1: 'referense' is undefined: an acknowledgement template gets anonymous, "
        "reference, services, urgent",
        f"{ack}:3: No filter named 'nosuch'.",
        f"{ack}:4: 'anonimous' is undefined: an acknowledgement template gets anonymous, "
        "reference, services, urgent",
    ]


def test_route_dry_run_shows_what_the_rules_used_and_the_default(
    deployment: Deployment, intake: Callable[..., Run]
) -> None:
    message = deployment.root / "report.eml"
    message.write_bytes(email("Someone made racist remarks in the library"))

    run = intake("route", "--dry-run", "--json", str(message))

    assert run.returncode == 0, run.stderr
    decision = json.loads(run.stdout)
    assert decision["category"] == "hate-crime"
    assert decision["rules"] == ["hate-crime-keywords", "hate-crime"]
    assert decision["source"] == "email" and decision["anonymous"] is False
    assert decision["urgent"] is False and decision["reporter_role"] is None
    assert decision["decided_by"] == {"refer": ["hate-crime"], "acknowledge": "default"}
    assert decision["to_addresses"] == []  # no rule names an address

    quiet = deployment.root / "quiet.eml"
    quiet.write_bytes(email("My bike was taken from the rack", message_id="<m2@x>"))
    by_default = json.loads(intake("route", "--dry-run", "--json", str(quiet)).stdout)
    assert by_default["refer"] == ["advice-centre"] and by_default["rules"] == []
    assert by_default["decided_by"] == {"refer": ["default"], "acknowledge": "default"}
