"""IMAP IDLE on real parts: the watcher against Dovecot, and the daemon it wakes.

The daemon tests poll only every 300 s (the outbox is drained every second), so a report that
reaches the SMTP sink within seconds can only have been noticed through IDLE.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from pipeline.config import ImapConfig
from pipeline.intake.idle import IdleWatcher
from tests.integration.conftest import REPO, Deployment, email
from tests.servers.dovecot import Dovecot
from tests.servers.smtp import SmtpSink

SLOW_POLL = "[schedule]\npoll_seconds = 300\noutbox_seconds = 1\n"
FAST_POLL = "[schedule]\npoll_seconds = 1\noutbox_seconds = 1\n"


# -- helpers ----------------------------------------------------------------------------


class Calls:
    """An `on_new_mail` that counts its calls."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_for(self, n: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= n, timeout)


class DaemonLog:
    """The daemon's stderr, read line by line in a thread."""

    def __init__(self, stream: Iterator[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: Iterator[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 10.0) -> int:
        """The index of the first line from `after` on that matches `pattern`."""

        def found() -> int | None:
            return next(
                (i for i in range(after, len(self.lines)) if re.search(pattern, self.lines[i])),
                None,
            )

        with self._changed:
            if not self._changed.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(
                    f"No daemon log line matched {pattern!r} within {timeout} s:\n"
                    + "".join(self.lines)
                )
            index = found()
            assert index is not None
            return index

    def text(self) -> str:
        self._reader.join(5)
        return "".join(self.lines)


def write_config(deployment: Deployment, schedule: str) -> None:
    """The deployment's config with `[imap] idle = true` and the given schedule."""
    deployment.write(extra=schedule)
    text = deployment.config_path.read_text()
    deployment.config_path.write_text(text.replace("[imap]\n", "[imap]\nidle = true\n", 1))


@contextmanager
def running_daemon(deployment: Deployment) -> Iterator[DaemonLog]:
    """`run_daemon.py --config ...` until the block ends; then SIGTERM, exit 0 within 10 s."""
    env = {**os.environ, "TEST_IMAP_PASSWORD": deployment.imap.password}
    daemon = subprocess.Popen(
        [sys.executable, str(REPO / "run_daemon.py"), "--config", str(deployment.config_path)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert daemon.stderr is not None
    log = DaemonLog(daemon.stderr)
    try:
        yield log
    except BaseException:
        print(f"daemon log so far:\n{''.join(log.lines)}")
        raise
    finally:
        daemon.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            daemon.wait(timeout=10)
        finally:
            daemon.kill()
    assert daemon.returncode == 0, log.text()
    assert time.monotonic() - started < 10
    assert "daemon stopped" in log.text()


def wait_for_referral(deployment: Deployment, already: int, timeout: float) -> float:
    """Wait for a message to a service after the first `already`; the time it was seen."""
    services = set(deployment.keys.emails.values())
    sink: SmtpSink = deployment.smtp
    deadline = time.monotonic() + timeout
    wanted = already + 1
    while True:
        messages = sink.wait_for(wanted, timeout=max(0.0, deadline - time.monotonic()))
        if any(m.rcpt_tos[0] in services for m in messages[already:]):
            return time.monotonic()
        wanted = len(messages) + 1


def imap_config(server: Dovecot) -> ImapConfig:
    return ImapConfig(
        host=server.host,
        port=server.port,
        security="none",
        username=server.username,
        password=server.password,
        timeout_seconds=10,
    )


def idle_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "imap-idle"]


@contextmanager
def watching(server: Dovecot, on_new_mail: Callable[[], None], **options: float) -> Iterator[None]:
    watcher = IdleWatcher(imap_config(server), on_new_mail, **options)
    watcher.start()
    try:
        yield
    finally:
        watcher.stop()


# -- the watcher on its own -------------------------------------------------------------


def test_watcher_wakes_on_append_and_stops_promptly(dovecot: Dovecot) -> None:
    calls = Calls()
    watcher = IdleWatcher(imap_config(dovecot), calls)
    watcher.start()
    try:
        assert calls.wait_for(1, timeout=5), "no wake-up after connecting"
        appended = time.monotonic()
        dovecot.append(email("A report that IDLE announces. UNIT-1"))
        assert calls.wait_for(2, timeout=5), "no wake-up within 5 s of the APPEND"
        print(f"IDLE wake-up: {time.monotonic() - appended:.3f} s")
        [thread] = idle_threads()
    finally:
        started = time.monotonic()
        watcher.stop()
        stopped_in = time.monotonic() - started
    assert stopped_in < 2, f"stop() took {stopped_in:.2f} s"
    assert not thread.is_alive()
    assert idle_threads() == []
    assert len(dovecot.uids("INBOX")) == 1  # the watcher only watches


def test_watcher_keeps_working_across_idle_reissues(dovecot: Dovecot) -> None:
    calls = Calls()
    with watching(dovecot, calls, reissue_seconds=0.3, check_seconds=30):
        assert calls.wait_for(1, timeout=5)
        time.sleep(1.2)  # several rounds of DONE, NOOP, IDLE
        dovecot.append(email("After a few re-issued IDLEs. REISSUE-1"))
        assert calls.wait_for(2, timeout=5)
        assert calls.count == 2  # NOOPs answer nothing new: no spurious wake-ups
        [thread] = idle_threads()
    assert not thread.is_alive()


def test_watcher_notices_a_crashed_server_and_reconnects(
    dovecot_factory: Callable[..., Dovecot], caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL: no BYE, only a closed socket (which idle_check() alone would not report)."""
    server = dovecot_factory()
    calls = Calls()
    with caplog.at_level(logging.INFO, logger="pipeline.intake.idle"), watching(server, calls):
        assert calls.wait_for(1, timeout=5)
        server.kill()
        server.start()
        assert calls.wait_for(2, timeout=10), "no wake-up after reconnecting"
        server.append(email("Sent once the server is back. CRASH-1"))
        assert calls.wait_for(3, timeout=5), "no wake-up from the new IDLE session"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"IMAP IDLE on {server.host}:{server.port} lost (ServerClosed); reconnecting in 1 s"
    ]


def test_watcher_ends_by_itself_when_the_server_lacks_idle(
    dovecot_factory: Callable[..., Dovecot],
) -> None:
    server = dovecot_factory(capabilities_without={"IDLE"})
    calls = Calls()
    with watching(server, calls):
        for thread in idle_threads():
            thread.join(5)
        assert idle_threads() == [], "the watcher kept running without IDLE"
    assert calls.count == 0


# -- the daemon -------------------------------------------------------------------------


def test_daemon_starts_a_new_report_within_seconds_through_idle(deployment: Deployment) -> None:
    write_config(deployment, SLOW_POLL)
    deployment.imap.append(email("Report sent before the daemon starts. IDLE-0"))
    with running_daemon(deployment) as log:
        log.wait_for(r"IMAP IDLE on \S+: watching INBOX")
        wait_for_referral(deployment, 0, timeout=30)  # the startup poll is done
        deployment.smtp.wait_for(2, timeout=10)  # and its acknowledgement too
        already = len(deployment.smtp.messages)

        appended = time.monotonic()
        deployment.imap.append(
            email("Report that IDLE must announce. IDLE-1", message_id="<idle-1@x>")
        )
        latency = wait_for_referral(deployment, already, timeout=15) - appended

    print(f"IDLE latency: {latency:.3f} s")
    assert latency < 10
    assert deployment.imap.uids("INBOX") == []


def test_daemon_reconnects_idle_after_a_dovecot_restart(
    deployment: Deployment, dovecot_factory: Callable[..., Dovecot]
) -> None:
    server = dovecot_factory()
    deployment.imap = server
    write_config(deployment, SLOW_POLL)
    marker = "RESTART-1-content"
    with running_daemon(deployment) as log:
        seen = log.wait_for(r"IMAP IDLE on \S+: watching INBOX")
        log.wait_for(r"poll imap:\S+: nothing new", after=seen)

        server.restart()
        lost = log.wait_for(rf"IMAP IDLE on {server.host}:{server.port} lost \(\w+\)", after=seen)
        back = log.wait_for(r"IMAP IDLE on \S+: watching INBOX", after=lost, timeout=15)
        log.wait_for(r"poll imap:\S+: nothing new", after=back)  # the poll after reconnecting

        appended = time.monotonic()
        server.append(email(f"Report after the restart. {marker}", message_id="<r1@x>"))
        latency = wait_for_referral(deployment, 0, timeout=20) - appended

    print(f"IDLE latency after a Dovecot restart: {latency:.3f} s")
    assert latency < 20
    assert server.uids("INBOX") == []
    text = log.text()
    assert marker not in text
    warnings = [line for line in text.splitlines() if "WARNING pipeline.intake.idle" in line]
    print("".join(f"  {w}\n" for w in warnings), end="")
    assert warnings and all(re.search(r"lost \(\w+\); reconnecting in", w) for w in warnings)


def test_daemon_still_polls_a_server_without_idle(
    deployment: Deployment, dovecot_factory: Callable[..., Dovecot]
) -> None:
    server = dovecot_factory(capabilities_without={"IDLE"})
    deployment.imap = server
    write_config(deployment, FAST_POLL)
    with running_daemon(deployment) as log:
        log.wait_for(r"does not offer IMAP IDLE; new mail waits for the poll")
        server.append(email("Report to a server without IDLE. NOIDLE-1"))
        wait_for_referral(deployment, 0, timeout=15)
    assert server.uids("INBOX") == []
    assert "IMAP IDLE on" not in log.text()
