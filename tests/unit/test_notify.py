"""sd_notify over a real datagram socket: a path and an abstract name; the watchdog interval;
when the daemon counts as healthy enough for WATCHDOG=1 (`Liveness`)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.daemon import STALL_SECONDS, Liveness
from pipeline.notify import Notifier, watchdog_seconds


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the $NOTIFY_SOCKET value that names it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify")
        sock.bind(name)
    else:
        name = f"@report-intake-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name[1:].encode())
    sock.settimeout(5)
    yield sock, name
    sock.close()


def test_ready_watchdog_and_stopping_arrive_as_datagrams(
    listener: tuple[socket.socket, str],
) -> None:
    sock, name = listener
    notifier = Notifier({"NOTIFY_SOCKET": name})
    notifier.ready("daemon started")
    notifier.watchdog()
    notifier.stopping("stopping")
    received = [sock.recv(4096).decode() for _ in range(3)]
    assert received == [
        "READY=1\nSTATUS=daemon started",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=stopping",
    ]


def test_nothing_is_sent_without_notify_socket() -> None:
    notifier = Notifier({})
    assert notifier.address is None and notifier.watchdog_seconds is None
    notifier.ready("daemon started")  # no socket to send to: nothing happens, no error


def test_a_socket_that_is_gone_is_logged_once_and_never_stops_the_daemon(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    notifier.watchdog()
    notifier.watchdog()
    warnings = [r for r in caplog.records if "systemd cannot be notified" in r.getMessage()]
    assert len(warnings) == 1 and notifier.failed


def test_the_watchdog_runs_at_half_its_period_for_this_process_only() -> None:
    pid = os.getpid()
    assert watchdog_seconds({"WATCHDOG_USEC": "2000000"}, pid) == 1.0
    assert watchdog_seconds({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(pid)}, pid) == 1.0
    assert watchdog_seconds({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, pid) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "0"}, pid) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "soon"}, pid) is None
    assert watchdog_seconds({}, pid) is None


def test_a_watched_job_is_stalled_only_after_stall_seconds_without_a_sign_of_life(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    liveness = Liveness(clock=lambda: now[0])
    seen: list[tuple[bool, dict[str, float]]] = []

    def poll() -> None:  # a long backlog poll that beats, then hangs
        for _ in range(3):
            now[0] += STALL_SECONDS - 1
            seen.append((liveness.healthy(), liveness.stalled()))
            liveness.beat("poll")
        now[0] += STALL_SECONDS + 1
        seen.append((liveness.healthy(), liveness.stalled()))
        seen.append((liveness.healthy(), liveness.stalled()))

    def purge() -> None:  # not watched: silent as long as it likes
        now[0] += 10 * STALL_SECONDS
        seen.append((liveness.healthy(), liveness.stalled()))

    liveness.tracked("poll", poll, watched=True)()
    liveness.tracked("purge", purge, watched=False)()
    assert seen[:3] == [(True, {})] * 3
    assert seen[3] == seen[4] == (False, {"poll": STALL_SECONDS + 1})
    assert seen[5] == (True, {})
    assert liveness.healthy() and not liveness.running
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "watchdog: the poll job has shown no sign of life for 601 s: WATCHDOG=1 withheld, so "
        "systemd restarts the daemon"
    ]
