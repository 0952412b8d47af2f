"""systemd notifications (sd_notify(3)): the daemon's life in, datagrams to $NOTIFY_SOCKET out.

`READY=1` once the daemon is up, `WATCHDOG=1` every half of $WATCHDOG_USEC (`WatchdogSec=`)
while the daemon is healthy (its scheduler runs jobs and no job hangs: `daemon.Liveness`),
`STOPPING=1` when it begins to stop, each with a `STATUS=` line for `systemctl status`.
Without $NOTIFY_SOCKET (not started by systemd as `Type=notify`) nothing is sent. An abstract
socket is written `@name`. Only the standard library's socket.
A notification that cannot be sent is logged once and never stops the daemon: without READY=1
systemd times the start out, without WATCHDOG=1 it restarts the daemon, which is what it should.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def socket_address(value: str | None) -> str | bytes | None:
    """$NOTIFY_SOCKET as a socket address: a path, or an abstract name (`@name`: a NUL first)."""
    if not value:
        return None
    return b"\0" + value[1:].encode() if value.startswith("@") else value


def watchdog_seconds(environ: Mapping[str, str], pid: int) -> float | None:
    """How often to send WATCHDOG=1: half of $WATCHDOG_USEC, when it is set for this process
    ($WATCHDOG_PID unset or ours); None otherwise."""
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class Notifier:
    """Tells systemd how the daemon is doing, when systemd asked to be told."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.address = socket_address(environ.get("NOTIFY_SOCKET"))
        self.watchdog_seconds = watchdog_seconds(environ, os.getpid())
        self.failed = False

    def notify(self, *fields: str) -> None:
        """Send `KEY=value` fields as one datagram (nothing without $NOTIFY_SOCKET)."""
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self.failed:
                log.warning("systemd cannot be notified at $NOTIFY_SOCKET: %s", exc.strerror)
            self.failed = True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")
