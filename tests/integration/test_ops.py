"""The operations pack as an operator meets it, each daemon a separate process: systemd hears
READY=1, WATCHDOG=1 and STOPPING=1 on a real NOTIFY_SOCKET, and no WATCHDOG=1 while a poll
hangs; JSON log lines parse and carry no report content; `--once` shows its progress on a
terminal only; a second daemon on one SQLite database refuses to start, and so do
`intake retry --send` and the demo beside it."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.daemon import instance_lock
from tests.integration.conftest import ANONYMOUS, REPO, Deployment, email

DAEMON = [sys.executable, str(REPO / "run_daemon.py")]
DEMO = [*DAEMON, "--demo", "--demo-dir"]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """What systemd listens on for a Type=notify service: a datagram socket, and its path."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    yield sock, str(path)
    sock.close()


def start_daemon(deployment: Deployment, env: dict[str, str]) -> subprocess.Popen[str]:
    """`run_daemon.py --config ...` until stopped, as systemd would run it."""
    return subprocess.Popen(
        [*DAEMON, "--config", str(deployment.config_path)],
        env=deployment.env(env),
        cwd=deployment.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def receive_until(sock: socket.socket, wanted: str) -> list[str]:
    """Datagrams until one holds the line `wanted`."""
    received: list[str] = []
    while not received or wanted not in received[-1].splitlines():
        received.append(sock.recv(4096).decode())
    return received


def stop(daemon: subprocess.Popen[str]) -> str:
    """SIGTERM, then its standard error once it exited."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    _, stderr = daemon.communicate(timeout=30)
    return stderr


def test_systemd_hears_ready_then_the_watchdog_then_stopping(
    deployment: Deployment, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}  # WATCHDOG=1 every 0.2 s
    daemon = start_daemon(deployment, env)
    try:
        ready = receive_until(sock, "READY=1")
        assert len(ready) == 1 and ready[0].startswith("READY=1\nSTATUS=daemon started")
        started = time.monotonic()
        pings = [receive_until(sock, "WATCHDOG=1") for _ in range(4)]
        assert all(ping == ["WATCHDOG=1"] for ping in pings)
        assert time.monotonic() - started < 5  # every 0.2 s, not every poll (60 s)
        daemon.send_signal(signal.SIGTERM)
        stopping = receive_until(sock, "STOPPING=1")
        assert stopping[-1].startswith("STOPPING=1\nSTATUS=")
    finally:
        stderr = stop(daemon)
    assert daemon.returncode == 0, stderr
    assert "daemon stopped" in stderr


def test_json_log_lines_parse_and_carry_no_report_content(deployment: Deployment) -> None:
    subject, text, address = "Cnry-subject-81x", "Cnry-body-81x", "cnry.reporter81x@example.ac.uk"
    deployment.write(extra='[logging]\nformat = "json"\nlevel = "DEBUG"\n')
    deployment.imap.append(email(text, subject=subject, sender=f"Cnry Reporter <{address}>"))
    deployment.imap.append(
        email(f"{text} anon", to=ANONYMOUS, subject=subject, message_id="<m2@example.ac.uk>")
    )
    run = deployment.run_once()
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines()]  # every line is JSON
    assert len(lines) >= 4
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)
        assert set(line) <= {"time", "level", "logger", "message", "reference", "source"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
        assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR"}
        assert line["logger"].startswith("pipeline")
    polled = [line for line in lines if line["message"].startswith("poll imap:")]
    assert polled and polled[0]["source"].startswith("imap:")
    stored = [line for line in lines if " stored, " in line["message"]]
    assert len(stored) == 2 and all(line["source"].startswith("imap:") for line in stored)
    for canary in (subject, text, address, "cnry"):
        assert canary.lower() not in run.stderr.lower()


def read_pty(master: int, process: subprocess.Popen[bytes]) -> str:
    """Everything written to the terminal until the process ended."""
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other end is closed
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    return output.decode(errors="replace")


def test_a_backlog_shows_its_progress_on_a_terminal(deployment: Deployment) -> None:
    for n in range(6):
        deployment.imap.append(email(f"Backlog {n}", message_id=f"<b{n}@example.ac.uk>"))
    master, terminal = pty.openpty()
    process = subprocess.Popen(
        [*DAEMON, "--config", str(deployment.config_path), "--once"],
        env=deployment.env(),
        cwd=deployment.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    try:
        output = read_pty(master, process)
    finally:
        os.close(master)
    assert process.wait(timeout=60) == 0, output
    assert "\x1b[K0 of 6 taken, 0.0/s, 6 remaining" in output  # the backlog, as IMAP gives it
    final = r"\r\x1b\[K6 of 6 taken, \d+\.\d/s, 0 remaining in \d+\.\d s\r?\n"
    assert re.search(final, output), output
    assert " stored, 2 mail queued" in output  # the log lines still come, above it


def test_no_progress_when_standard_error_is_no_terminal(deployment: Deployment) -> None:
    for n in range(3):
        deployment.imap.append(email(f"Backlog {n}", message_id=f"<b{n}@example.ac.uk>"))
    run = deployment.run_once()
    assert run.returncode == 0, run.stderr
    assert " stored, " in run.stderr
    assert " taken" not in run.stderr and "\x1b" not in run.stderr and "\r" not in run.stderr


def test_a_second_daemon_on_one_sqlite_database_refuses_to_start(
    deployment: Deployment, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    first = start_daemon(deployment, {"NOTIFY_SOCKET": path})
    try:
        receive_until(sock, "READY=1")  # it holds the lock from before it opened the database
        for argv in (
            [sys.executable, "-m", "pipeline", "run", "--once"],
            [*DAEMON, "--once"],
            [*DAEMON],
        ):
            second = subprocess.run(
                [*argv, "--config", str(deployment.config_path)],
                env=deployment.env(),
                cwd=deployment.root,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 1, second.stderr
            message = second.stderr.strip()
            assert "\n" not in message, message  # one line
            assert f"another daemon (pid {first.pid}) runs on the SQLite database" in message
            assert "SQLite is for one instance" in message and "PostgreSQL" in message
        assert first.poll() is None  # the first one runs on
    finally:
        stderr = stop(first)
    assert first.returncode == 0, stderr
    run = deployment.run_once()  # its lock went with it
    assert run.returncode == 0, run.stderr


def test_postgresql_takes_no_instance_lock(deployment: Deployment) -> None:
    deployment.database_url = "postgresql+psycopg://intake@127.0.0.1:1/none"
    deployment.write()
    config = deployment.config()
    with instance_lock(config), instance_lock(config):  # several instances: no refusal
        pass
    assert not list(deployment.root.rglob("*.lock"))


def test_retry_send_refuses_while_a_daemon_runs_and_the_daemon_sends_what_retry_requeues(
    deployment: Deployment, notify_socket: tuple[socket.socket, str]
) -> None:
    deployment.write(extra="[schedule]\noutbox_seconds = 1\n")
    deployment.smtp.refuse("550 5.1.1 mailbox unavailable")
    deployment.imap.append(email("Shouted at in the library.", message_id="<r1@x>"))
    assert deployment.run_once().returncode == 4  # both mails dead letters
    deployment.smtp.accept()
    deployment.smtp.clear()
    dead = json.loads(deployment.intake("status", "--json").stdout)["outbox"]["failed"]
    assert dead >= 2
    sock, path = notify_socket
    daemon = start_daemon(deployment, {"NOTIFY_SOCKET": path})
    try:
        receive_until(sock, "READY=1")
        refused = deployment.intake("retry", "--send")
        assert refused.returncode == 1, refused.stderr
        message = refused.stderr.strip()
        assert "\n" not in message, message  # one line
        assert f"another daemon (pid {daemon.pid}) runs on the SQLite database" in message
        assert "run intake retry without --send" in message and "PostgreSQL" not in message
        counts = json.loads(deployment.intake("status", "--json").stdout)["outbox"]
        assert counts["failed"] == dead  # nothing was changed
        retry = deployment.intake("retry")
        assert retry.returncode == 0, retry.stderr
        requeued = int(retry.stdout.split("requeued ")[1].split()[0])
        assert requeued >= 1  # the referral (the acknowledgement's address is erased)
        deployment.smtp.wait_for(requeued, timeout=30)  # the daemon sends them
        time.sleep(1)  # anything sent twice would arrive now
    finally:
        stderr = stop(daemon)
    assert daemon.returncode == 0, stderr
    ids = Counter(str(m.message["Message-ID"]) for m in deployment.smtp.messages)
    assert len(ids) == requeued and max(ids.values()) == 1, ids


HUNG = (  # the daemon, with a stall bound of a second instead of STALL_SECONDS
    "import sys\n"
    "from pipeline import daemon\n"
    "from pipeline.cli import main\n"
    "daemon.STALL_SECONDS = 1.0\n"
    "sys.exit(main(['run', '--config', sys.argv[1]]))\n"
)


def test_the_watchdog_goes_quiet_while_a_poll_hangs_and_stopped_means_stopped(
    deployment: Deployment, notify_socket: tuple[socket.socket, str]
) -> None:
    """A Maildir file that never finishes reading (a hung network share: here a FIFO nobody
    writes) hangs the poll: WATCHDOG=1 stops, so systemd restarts the daemon. SIGTERM says
    STOPPING=1 at once, and "daemon stopped" comes only once the poll has ended."""
    maildir = deployment.root / "maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    hung = maildir / "new" / "1.hung"
    os.mkfifo(hung)
    deployment.write(extra='[maildir]\npath = "maildir"\n')
    sock, path = notify_socket
    log_path = deployment.root / "daemon.log"
    env = deployment.env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    with log_path.open("w") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-c", HUNG, str(deployment.config_path)],
            env=env,
            cwd=deployment.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        receive_until(sock, "READY=1")
        sock.settimeout(2.5)  # the stall (1 s) and more than ten watchdog periods (0.2 s)
        deadline = time.monotonic() + 15
        with pytest.raises(TimeoutError):  # quiet at last
            while time.monotonic() < deadline:
                sock.recv(4096)
        log = log_path.read_text()
        assert "watchdog: the poll job has shown no sign of life for " in log, log
        daemon.send_signal(signal.SIGTERM)
        assert receive_until(sock, "STOPPING=1")[-1].startswith("STOPPING=1\nSTATUS=stopping")
        time.sleep(1)
        assert daemon.poll() is None  # the poll still hangs
        log = log_path.read_text()
        assert "signal SIGTERM: stopping" in log and "daemon stopped" not in log, log
        with hung.open("wb"):  # the share answers at last: an empty file
            pass
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    log = log_path.read_text()
    assert log.index("signal SIGTERM: stopping") < log.index("daemon stopped"), log


def test_a_demo_folder_a_daemon_runs_on_is_neither_rebuilt_nor_run(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """The demo holds the instance lock like `intake run`; one line says why it does not run."""
    folder = tmp_path / "demo-var"
    first = subprocess.run([*DEMO, str(folder)], capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    sock, path = notify_socket
    daemon = subprocess.Popen(
        [*DAEMON, "--config", str(folder / "intake.toml")],
        env={**os.environ, "NOTIFY_SOCKET": path},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        receive_until(sock, "READY=1")
        again = subprocess.run([*DEMO, str(folder)], capture_output=True, text=True, timeout=240)
        assert again.returncode == 1, again.stdout + again.stderr
        message = again.stderr.strip()
        assert "\n" not in message, message  # one line
        assert f"another daemon (pid {daemon.pid}) runs on the SQLite database" in message
        assert "choose another --demo-dir" in message
        assert (folder / "var" / "intake.db").exists()  # not rebuilt under the daemon
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
