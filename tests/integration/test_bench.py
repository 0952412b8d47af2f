"""The benchmark (`python -m bench`, bench/) in its quick mode, so that it cannot rot.

It runs as its own process from the repository root, as the README says, with the machine's
PostgreSQL (tests/servers/postgres.py) named, so that both database passes run; it starts its
own Dovecot, SMTP sink and keys. Timings vary from machine to machine and are not judged: each
figure must be there and be a positive number, the floor must have done exactly its minimum of
gpg work, and the project must have delivered every referral it owed, encrypted, on both
databases, the large-attachment mail included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO
from tests.servers.postgres import HOST, PORT, USER

pytestmark = pytest.mark.postgres

TIMEOUT = 600  # seconds; the quick mode takes about one minute on 2 idle cores


def positive(figures: dict[str, Any], *names: str) -> None:
    for name in names:
        value = figures.get(name)
        assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
        assert value > 0, (name, value)


def test_quick_bench_measures_floor_and_project(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "bench", "--quick", "--json", str(out)]
    argv += ["--postgres", f"postgresql://{USER}@{HOST}:{PORT}/postgres"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ratio project/floor" in done.stdout
    figures = json.loads(out.read_text())
    backlog = figures["backlog"]
    assert backlog["reports"] > 0 and backlog["referrals"] >= backlog["reports"]

    positive(figures["floor"], "seconds", "ms_per_report")
    assert figures["floor"]["referrals_sent"] == backlog["referrals"]
    for backend in ("sqlite", "postgres"):
        drain = figures[backend]
        positive(drain, "seconds", "ms_per_report", "ratio", "first_start_seconds", "peak_rss_mb")
        assert drain["referrals_delivered"] == backlog["referrals"], backend
        assert drain["referrals_encrypted"] == backlog["referrals"], backend
        assert drain["inbox_left"] == 0, backend

    gpg = figures["gpg_processes"]
    positive(gpg, "floor_per_report", "project_per_report", "ratio")
    minimum = (backlog["reports"] + backlog["referrals"]) / backlog["reports"]
    assert gpg["floor_per_report"] == round(minimum, 2)  # one record + one per referral
    assert gpg["floor_by_command"] == {"--encrypt": round(minimum, 2)}

    memory = figures["memory"]
    positive(memory, "idle_rss_mb", "peak_rss_mb", "after_rss_mb", "seconds", "large_messages")
    assert memory["peak_rss_mb"] >= memory["idle_rss_mb"]
    assert memory["large_delivered"] == memory["large_messages"]
    assert memory["referrals_delivered"] == memory["referrals_expected"]

    idle = figures["idle"]
    assert idle["rounds"] > 0
    for side in ("floor", "project"):
        positive(idle[side], "p50", "p95")
        assert idle[side]["p95"] >= idle[side]["p50"]

    forms = figures["forms"]
    positive(forms, "rows", "seconds", "rows_per_second", "mail_latency")
    assert figures["complete"] is True
