"""IMAP IDLE (RFC 2177): an `ImapConfig` in, calls of `on_new_mail()` out.

One daemon thread ("imap-idle") keeps an IDLE session on the intake folder, selected read-only,
and calls `on_new_mail()` when the server announces mail (an untagged EXISTS or RECENT), and once
after every (re)connect, so that mail which arrived while it was away is polled too. It never
fetches, flags or moves a message: it only wakes the poller, and the scheduled poll stays the
fallback. A server without IDLE is logged once and left to polling.

Only the intake folder (`imap.folder`) is watched: IDLE needs a connection per folder. A wake-up
polls every source, and the IMAP source polls the anonymous folders (`imap.anonymous_folders`)
in the same connection, so mail in an anonymous folder is taken at the next wake-up or at the
latest at the scheduled poll (`schedule.poll_seconds`).

IDLE is re-issued (DONE, NOOP, IDLE) every `reissue_seconds`, well inside the 30 minutes after
which servers may drop it. A dead session (socket error or timeout, abort, BYE, the server
closing the socket, a failing NOOP) is logged with the server and the error class only, closed,
and reconnected after a growing backoff (1 s, 2 s, 4 s ... 60 s).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from imapclient import IMAPClient

from pipeline.config import ImapConfig
from pipeline.intake.imap import connect

log = logging.getLogger(__name__)

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STOP_SLICE = 0.5  # the longest single wait for responses: stop() is noticed this soon
CLOSE_TIMEOUT = 1.0  # socket timeout for the polite DONE + LOGOUT when stopping
NEW_MAIL = {b"EXISTS", b"RECENT"}
# Readable EOF is what idle_check() swallows; these poll flags tell it apart from "no news".
_PEER_CLOSED = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


class ConnectionLost(Exception):
    """The server ended the IDLE session."""


class ServerBye(ConnectionLost):
    """The server sent an untagged BYE."""


class ServerClosed(ConnectionLost):
    """The server closed its side of the connection."""


ERRORS = (OSError, IMAPClient.Error, ConnectionLost)  # IMAPClient.Error covers AbortError


def is_new_mail(response: Any) -> bool:
    return isinstance(response, tuple) and len(response) >= 2 and response[1] in NEW_MAIL


def is_bye(response: Any) -> bool:
    return isinstance(response, tuple) and len(response) >= 1 and response[0] == b"BYE"


def peer_closed(sock: socket.socket) -> bool:
    """Whether the server has closed its end (checked without reading)."""
    poller = select.poll()
    poller.register(sock.fileno(), _PEER_CLOSED)
    return bool(poller.poll(0))


class IdleWatcher:
    """Wakes the poller when the intake folder gets mail; see the module docstring."""

    def __init__(
        self,
        config: ImapConfig,
        on_new_mail: Callable[[], None],
        *,
        reissue_seconds: float = 540.0,
        check_seconds: float = 30.0,
    ) -> None:
        self.config = config
        self.on_new_mail = on_new_mail
        self.reissue_seconds = reissue_seconds
        self.check_seconds = check_seconds
        self.server = f"{config.host}:{config.port}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: IMAPClient | None = None
        self._backoff = BACKOFF_FIRST

    def start(self) -> None:
        """Run the watcher in a daemon thread named "imap-idle"."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("The IMAP IDLE watcher is already running.")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="imap-idle", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; past half the timeout its socket is shut to break a blocked call."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        thread.join(timeout / 2)
        if thread.is_alive():
            self._shut_socket()
            thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("IMAP IDLE watcher for %s did not stop within %g s", self.server, timeout)

    # -- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._session():
                    return
            except ERRORS as exc:
                if self._stop.is_set():
                    return
                log.warning(
                    "IMAP IDLE on %s lost (%s); reconnecting in %g s",
                    self.server,
                    type(exc).__name__,
                    self._backoff,
                )
            except Exception as exc:  # keep watching; the poller does not depend on us
                log.error(
                    "IMAP IDLE on %s failed (%s); reconnecting in %g s",
                    self.server,
                    type(exc).__name__,
                    self._backoff,
                )
                log.debug("IMAP IDLE failure", exc_info=True)
            self._stop.wait(self._backoff)
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _session(self) -> bool:
        """One connection until stopped (True) or refused for lack of IDLE (False); raises
        when the connection is lost."""
        client = connect(self.config)
        self._client = client
        try:
            return self._idle_on(client)
        finally:
            self._client = None

    def _idle_on(self, client: IMAPClient) -> bool:
        if not client.has_capability("IDLE"):
            log.info("%s does not offer IMAP IDLE; new mail waits for the poll", self.server)
            _logout(client)
            return False
        try:
            client.select_folder(self.config.folder, readonly=True)
            client.idle()
            self._backoff = BACKOFF_FIRST
            log.info("IMAP IDLE on %s: watching %s", self.server, self.config.folder)
            self._notify()  # whatever came while we were not idling
            self._watch(client)
        except BaseException:
            _shut(client)
            raise
        _leave_idle(client)
        return True

    def _watch(self, client: IMAPClient) -> None:
        """Wait for responses in short slices until stopped, re-issuing IDLE on time."""
        reissue_at = time.monotonic() + self.reissue_seconds
        while not self._stop.is_set():
            left = max(0.0, reissue_at - time.monotonic())
            self._handle(client.idle_check(timeout=min(self.check_seconds, STOP_SLICE, left)))
            if peer_closed(client.socket()):
                raise ServerClosed()
            if time.monotonic() >= reissue_at:
                self._reissue(client)
                reissue_at = time.monotonic() + self.reissue_seconds

    def _reissue(self, client: IMAPClient) -> None:
        """DONE, NOOP (which proves the connection alive), IDLE again."""
        self._handle(client.idle_done()[1])
        self._handle(client.noop()[1])
        client.idle()

    def _handle(self, responses: list[Any]) -> None:
        if any(is_new_mail(response) for response in responses):
            self._notify()
        if any(is_bye(response) for response in responses):
            raise ServerBye()

    def _notify(self) -> None:
        try:
            self.on_new_mail()
        except Exception as exc:
            log.error("IMAP IDLE: waking the poller failed (%s)", type(exc).__name__)
            log.debug("on_new_mail failure", exc_info=True)

    def _shut_socket(self) -> None:
        """Break a call blocked on the socket (from stop(), in the caller's thread)."""
        client = self._client
        if client is not None:
            with suppress(OSError, ValueError):
                client.socket().shutdown(socket.SHUT_RDWR)


def _leave_idle(client: IMAPClient) -> None:
    """DONE and LOGOUT, politely but briefly; a server that does not answer is cut off."""
    try:
        client.socket().settimeout(CLOSE_TIMEOUT)
        client.idle_done()
        client.logout()
    except ERRORS:
        _shut(client)


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except ERRORS:
        _shut(client)


def _shut(client: IMAPClient) -> None:
    with suppress(OSError, IMAPClient.Error):
        client.shutdown()
