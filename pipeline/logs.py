"""Logging: `[logging]` (and `--verbose`) in, log lines on standard error out; on a terminal,
the `--once` progress line too.

`text` (the default): `time LEVEL logger: message`. `json`: one JSON object a line with `time`
(ISO 8601, UTC), `level`, `logger`, `message`, and `reference` and `source` where known: passed
by the call (`log.info(..., extra={"reference": reference})`) or set for a stretch of work by
`log_context(source=...)` (a poll names its source). json.dumps escapes every control character,
so a message is one line whatever it holds.

Either way our own loggers (`pipeline.*`, `__main__`) log from `level` (DEBUG with `--verbose`)
and libraries from WARNING only, and never with a traceback: they log protocol data at DEBUG and
INFO (imapclient's commands and literals, gnupg's status lines, aiosmtpd's and SQLAlchemy's
traffic), which can carry message content, and an exception they log may quote what it choked
on. Our own lines name references, sources, keys and reasons; never content.

`Progress` counts the inputs a poll takes (`Ingest.progress`) and shows count, rate and what
remains as one line under the log lines, redrawn at most `Progress.INTERVAL` apart; only when
standard error is a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from pipeline.config import LoggingConfig

OWN_LOGGERS = ("pipeline", "__main__")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("reference", "source")

_context: ContextVar[dict[str, str]] = ContextVar("log_context")


def _own_or_warning(record: logging.LogRecord) -> bool:
    """Let through our own records at any level, and others' from WARNING up and without a
    traceback: libraries log protocol data at DEBUG and INFO (imapclient's commands and
    literals, gnupg's status lines, aiosmtpd's and SQLAlchemy's traffic), which can carry
    message content, and a library logging an exception often quotes what it choked on (msal
    logs a token answer it cannot parse, which may echo the client secret)."""
    own = record.name in OWN_LOGGERS or record.name.startswith("pipeline.")
    return own or (record.levelno >= logging.WARNING and not record.exc_info)


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Lines logged in this thread meanwhile carry these fields (`reference`, `source`) in the
    JSON format, unless the call passes its own."""
    token = _context.set({**_context.get({}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and reference/source if known."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        entry = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        known = _context.get({})
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None) or known.get(name)
            if value:
                entry[name] = str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class Console(logging.StreamHandler):  # type: ignore[type-arg]
    """Standard error. On a terminal it keeps a status line (`Progress`) under the log lines:
    a log line clears it, is written, and the status line is drawn again below it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.status = ""

    @property
    def is_terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def emit(self, record: logging.LogRecord) -> None:
        if self.status:
            self.stream.write("\r\x1b[K")
        super().emit(record)
        if self.status:
            self._draw()

    def show(self, status: str, *, final: bool = False) -> None:
        """Draw `status` in place of the last one; `final`: leave it as a line of its own."""
        self.acquire()
        try:
            self.status = status
            self._draw()
            if final:
                self.stream.write("\n")
                self.status = ""
            self.flush()
        finally:
            self.release()

    def _draw(self) -> None:
        self.stream.write(f"\r\x1b[K{self.status}")


_console: Console | None = None  # the handler setup_logging installed, if it did


def setup_logging(verbose: bool = False, settings: LoggingConfig | None = None) -> None:
    """Log to standard error as `settings` say (format, level); `verbose` opens our own DEBUG
    lines, never third-party ones. Called again (once the config is read), it replaces the
    handler it installed. A host that has handlers of its own (pytest) keeps them: they only
    get the third-party filter."""
    global _console
    settings = settings or LoggingConfig()
    level = logging.DEBUG if verbose else logging.getLevelNamesMapping()[settings.level]
    root = logging.getLogger()
    if _console is not None and _console in root.handlers:
        root.removeHandler(_console)
        _console = None
    if not root.handlers:
        _console = Console()
        formatter = JsonFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT)
        _console.setFormatter(formatter)
        _console.setLevel(level)
        root.addHandler(_console)
        root.setLevel(level)
    for handler in root.handlers:
        if _own_or_warning not in handler.filters:
            handler.addFilter(_own_or_warning)
    if verbose:
        logging.getLogger(__name__).debug("debug logging on: our own lines only")


def terminal() -> Console | None:
    """The handler setup_logging installed, when standard error is a terminal."""
    return _console if _console is not None and _console.is_terminal else None


class Progress:
    """The `--once` progress line: inputs taken, the rate, and what remains once the sources
    said how many they have (`expect`). Drawn at most every `INTERVAL` seconds."""

    INTERVAL = 0.25

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.clock = clock
        self.started = clock()
        self.shown_at: float | None = None
        self.count = 0
        self.expected = 0

    def expect(self, count: int) -> None:
        self.expected += count
        if count:
            self._show()

    def taken(self) -> None:
        self.count += 1
        self._show()

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-6)
        rate = self.count / elapsed
        if not self.expected:
            return f"{self.count} taken, {rate:.1f}/s"
        remaining = max(self.expected - self.count, 0)
        eta = f" (about {remaining / rate:.0f} s)" if rate and remaining else ""
        return f"{self.count} of {self.expected} taken, {rate:.1f}/s, {remaining} remaining{eta}"

    def done(self) -> None:
        """The last count as a line of its own, if anything was taken or expected."""
        if self.count or self.expected:
            self.console.show(f"{self.line()} in {self.clock() - self.started:.1f} s", final=True)

    def _show(self) -> None:
        now = self.clock()
        if self.shown_at is None or now - self.shown_at >= self.INTERVAL:
            self.shown_at = now
            self.console.show(self.line())
