"""`[logging]`: JSON lines (one object a line, fields, escaping), the level, `--verbose`, the
third-party filter in both formats; the `--once` progress line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from pipeline.config import LoggingConfig
from pipeline.logs import Console, Progress, log_context, setup_logging

Setup = Callable[..., io.StringIO]


@pytest.fixture
def logs() -> Iterator[Setup]:
    """logs(format=, level=, verbose=): set logging up as the daemon does, into a buffer."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def setup(format: str = "json", level: str = "INFO", verbose: bool = False) -> io.StringIO:
        root.handlers = []
        setup_logging(verbose, LoggingConfig(format=format, level=level))  # type: ignore[arg-type]
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        return stream

    yield setup
    root.handlers, root.level = saved


def lines(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_time_level_logger_message_and_what_the_call_names(logs: Setup) -> None:
    stream = logs()
    log = logging.getLogger("pipeline.ingest")
    log.info("%s stored", "R-2026-000001", extra={"reference": "R-2026-000001"})
    with log_context(source="imap:report@example.ac.uk@mail/INBOX"):
        log.warning("poll: nothing new")
        log.info("own source", extra={"source": "form:survey"})
    log.error("after the poll")
    first, second, third, fourth = lines(stream)
    assert set(first) == {"time", "level", "logger", "message", "reference"}
    assert first["level"] == "INFO" and first["logger"] == "pipeline.ingest"
    assert first["message"] == "R-2026-000001 stored" and first["reference"] == "R-2026-000001"
    assert first["time"].endswith("Z") and first["time"][10] == "T"  # ISO 8601, UTC
    assert second["source"] == "imap:report@example.ac.uk@mail/INBOX"
    assert second["level"] == "WARNING"
    assert third["source"] == "form:survey"  # the call's own wins
    assert "source" not in fourth  # the context ended with the poll


def test_a_message_with_line_breaks_and_quotes_stays_one_json_line(logs: Setup) -> None:
    stream = logs()
    logging.getLogger("pipeline.app").error('rules not reloaded:\nrules.yaml:3: "x"\r\u2028end')
    assert len(stream.getvalue().splitlines()) == 1
    assert lines(stream)[0]["message"] == 'rules not reloaded:\nrules.yaml:3: "x"\r\u2028end'


@pytest.mark.parametrize("format", ["json", "text"])
def test_libraries_log_from_warning_only_in_either_format(logs: Setup, format: str) -> None:
    stream = logs(format=format, verbose=True)
    library = logging.getLogger("imapclient.protocol")
    library.setLevel(logging.DEBUG)
    library.debug("> FETCH BODY[] canary-7Q2")
    library.info("< canary-7Q2")
    logging.getLogger("pipeline.outbox").debug("R-2026-000002 claimed")
    library.warning("connection lost")
    output = stream.getvalue()
    assert "canary-7Q2" not in output
    assert "R-2026-000002 claimed" in output and "connection lost" in output


def test_the_level_is_configurable_and_verbose_forces_our_debug(logs: Setup) -> None:
    stream = logs(level="WARNING")
    logging.getLogger("pipeline.daemon").info("daemon started")
    logging.getLogger("pipeline.daemon").warning("a warning")
    assert [line["message"] for line in lines(stream)] == ["a warning"]

    stream = logs(level="WARNING", verbose=True)
    logging.getLogger("pipeline.daemon").debug("debug line")
    assert "debug line" in [line["message"] for line in lines(stream)]


def test_text_stays_the_default_format(logs: Setup) -> None:
    root = logging.getLogger()
    root.handlers = []
    setup_logging()
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    logging.getLogger("pipeline.daemon").info("daemon started")
    assert stream.getvalue().rstrip().endswith(" INFO pipeline.daemon: daemon started")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_shows_count_rate_and_remaining_a_few_times_a_second() -> None:
    console = Console()
    stream = io.StringIO()
    console.setStream(stream)
    clock = Clock()
    progress = Progress(console, clock)
    progress.expect(40)
    for _ in range(10):
        clock.now += 0.0625  # 16 inputs a second
        progress.taken()
    drawn = [part for part in stream.getvalue().split("\r\x1b[K") if part]
    assert len(drawn) == 3  # at 0 s, then 0.25 s apart: not once per input
    assert drawn[0] == "0 of 40 taken, 0.0/s, 40 remaining"
    assert drawn[-1] == "8 of 40 taken, 16.0/s, 32 remaining (about 2 s)"
    progress.done()
    assert stream.getvalue().endswith(
        "\r\x1b[K10 of 40 taken, 16.0/s, 30 remaining (about 2 s) in 0.6 s\n"
    )


def test_a_log_line_is_written_above_the_progress_line() -> None:
    console = Console()
    stream = io.StringIO()
    console.setStream(stream)
    console.setFormatter(logging.Formatter("%(message)s"))
    clock = Clock()
    progress = Progress(console, clock)
    clock.now += 1
    progress.taken()
    console.handle(logging.makeLogRecord({"msg": "R-2026-000003 stored", "levelno": 20}))
    # the progress line is cleared, the log line written, the progress line drawn again
    assert stream.getvalue().endswith(
        "\r\x1b[K1 taken, 1.0/s\r\x1b[KR-2026-000003 stored\n\r\x1b[K1 taken, 1.0/s"
    )
