"""`--verbose` opens our own DEBUG lines only: libraries that log protocol data stay quiet."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from pipeline.logs import setup_logging

CANARY = "canary-protocol-7Q2"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = []
    setup_logging(verbose=True)
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers, root.level = saved


@pytest.mark.parametrize(
    "name", ["imapclient.protocol", "imapclient", "gnupg", "mail.log", "sqlalchemy.engine", "PIL"]
)
def test_third_party_debug_and_info_are_dropped(captured: io.StringIO, name: str) -> None:
    logging.getLogger(name).setLevel(logging.DEBUG)
    logging.getLogger(name).debug("> FETCH BODY[] %s", CANARY)
    logging.getLogger(name).info("< %s", CANARY)
    assert CANARY not in captured.getvalue()
    logging.getLogger(name).warning("connection lost")
    assert "connection lost" in captured.getvalue()


def test_own_debug_lines_pass_when_verbose(captured: io.StringIO) -> None:
    logging.getLogger("pipeline.outbox").debug("R-2026-000001 claimed")
    assert "R-2026-000001 claimed" in captured.getvalue()
