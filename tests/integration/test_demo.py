"""The README's first quick-start command: `python run_daemon.py --demo` runs on its own (its
own keys, Maildir and SMTP sink), delivers the samples, quarantines the one that is no email,
and exits 0 as a newcomer expects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import REPO


def test_the_demo_runs_and_exits_0(tmp_path: Path) -> None:
    folder = tmp_path / "demo-var"
    done = subprocess.run(
        [sys.executable, str(REPO / "run_daemon.py"), "--demo", "--demo-dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" delivered ") == 3
    assert " quarantined " in done.stdout and "8 says a report was quarantined" in done.stdout
    assert "decrypted by the service's key: Referral R-2026-000001" in done.stdout
