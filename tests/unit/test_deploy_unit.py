"""deploy/report-intake.service: the directives the deploy guide relies on, and (where
systemd-analyze is installed) `systemd-analyze verify` finds nothing wrong with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "report-intake.service"
EXEC = "/opt/report-intake/venv/bin/intake"


def directives(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value given (a key may repeat, e.g. LoadCredential=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_unit_is_a_sandboxed_notify_service_with_credentials() -> None:
    unit = directives(UNIT.read_text())
    service = unit["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["Type"] == "notify"
    assert one["WatchdogSec"] and one["Restart"] == "on-failure"
    assert one["User"] == one["Group"] == "report-intake"
    assert one["ExecStart"] == f"{EXEC} run --config /etc/report-intake/intake.toml"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "UMask": "0077",
        "StateDirectory": "report-intake",
        "CapabilityBoundingSet": "",
    }.items():
        assert one[key] == value, key
    assert "/var/lib/report-intake" in service["ReadWritePaths"]
    credentials = [value.split(":")[0] for value in service["LoadCredential"]]
    assert "outbox-passphrase" in credentials
    commented = UNIT.read_text()
    for name in ("client-secret", "imap-password", "google-service-account"):
        assert f"LoadCredential={name}:/etc/report-intake/{name}" in commented
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this checkout's `intake`
    program = Path(sys.executable).with_name("intake")
    if not program.exists():
        program = Path(shutil.which("true") or "/bin/true")
    copy = tmp_path / "report-intake.service"
    copy.write_text(UNIT.read_text().replace(EXEC, str(program)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
