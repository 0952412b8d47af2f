"""Intake sources: each hands its items, with a stable source key, to the `Ingest` stage and
removes an item from its source only after that returned (the report is committed).

In: a source's config. Out: calls into `Ingest` (one per item) and a `PollResult`. A source
that cannot be read at all raises `SourceError`; a folder, file or item that fails is recorded
with `PollResult.fail`. Either way the error names the source, the server or path and the config
key to check, with a short stable `cause` ("login", "unreachable", "export", ...) that alerts
are coalesced by; never content.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.faults import crash_point
from pipeline.ingest import Ingest, Outcome


@dataclass
class PollResult:
    """What one poll of one source did: outcomes by status, and failures (kept for next poll)."""

    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # for an admin; shown by intake status
    causes: set[str] = field(default_factory=set)  # of `errors`: see SourceError.cause

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    def fail(self, cause: str, message: str) -> None:
        """Record an error (a full sentence naming source and key) and its short cause."""
        self.errors.append(message)
        self.causes.add(cause)


class SourceError(Exception):
    """A source cannot be read at all: the message names the source, the server (host:port) or
    path, and the config key to check; `cause` is a short stable word for coalescing alerts
    ("password", "unreachable", "timeout", "tls", "login", "folder", ...)."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


class Source(Protocol):
    name: str

    def poll(self, ingest: Ingest) -> PollResult: ...


def describe(exc: BaseException) -> str:
    """An error for a log line: the message only where we know it carries no report content
    (our own exceptions, OS and network errors); otherwise just the exception's class."""
    module = type(exc).__module__
    if module.startswith(("pipeline.", "imapclient", "socket", "ssl")) or type(exc) is OSError:
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__} (errno {exc.errno})"
    return type(exc).__name__


def take_safely(key: str, take: Callable[[], Outcome], result: PollResult) -> bool:
    """Run `take` for the item `key`; True when it is committed and may leave its source."""
    crash_point("after-fetch")
    try:
        outcome = take()
    except Exception as exc:  # one bad item never stops the others; it stays for the next poll
        result.fail("item", f"{key}: {describe(exc)}")
        return False
    result.add(outcome.status)
    crash_point("after-commit")
    return True
