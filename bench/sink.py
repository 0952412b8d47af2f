"""The bench's SMTP sink: mail in over SMTP on loopback, one `Arrival` per accepted mail out.

An aiosmtpd server (a thread with its own loop) that keeps when each mail was accepted, its
recipients, its size and whether it is PGP/MIME, never the mail itself, so the memory of the
bench stays flat whatever it receives, and takes messages up to `MAX_BYTES` (aiosmtpd's default
of 32 MiB would refuse a referral carrying a 25 MiB attachment). `wait_for` blocks until the
arrivals satisfy a condition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller

from tests.servers.net import LOOPBACK, free_port

MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic() when the DATA was accepted
    recipients: tuple[str, ...]
    size: int
    encrypted: bool  # multipart/encrypted at the top


class Sink:
    """A started SMTP server on 127.0.0.1; see the module docstring."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self._changed = threading.Condition()
        self.port = free_port()
        self._controller = Controller(
            self,
            hostname=LOOPBACK,
            port=self.port,
            server_hostname="sink.bench",
            ready_timeout=5.0,
            data_size_limit=MAX_BYTES,
        )
        self.host = LOOPBACK

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content or b""
        head = bytes(data).split(b"\r\n\r\n", 1)[0].lower()
        arrival = Arrival(
            time.monotonic(),
            tuple(str(r).lower() for r in envelope.rcpt_tos),
            len(data),
            b"multipart/encrypted" in head,
        )
        with self._changed:
            self.arrivals.append(arrival)
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[Arrival]:
        with self._changed:
            return list(self.arrivals)

    def clear(self) -> None:
        with self._changed:
            self.arrivals.clear()

    def wait_for(self, done: Callable[[list[Arrival]], bool], timeout: float) -> bool:
        """Whether `done(arrivals)` held within `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: done(self.arrivals), timeout)


def to_any(addresses: set[str]) -> Callable[[Arrival], bool]:
    """Whether an arrival is addressed to one of `addresses` (lower case)."""
    return lambda arrival: any(r in addresses for r in arrival.recipients)
