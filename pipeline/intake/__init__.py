"""Intake sources: each yields raw items with a stable source key to a `Take` callback, and
removes an item from its source only after the callback returned (the report is committed).

In: a source's config. Out: calls of `take(source_key, raw_bytes) -> Outcome`; a `PollResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.ingest import Outcome

Take = Callable[[str, bytes], Outcome]


@dataclass
class PollResult:
    """What one poll of one source did: outcomes by status, and failures (kept for next poll)."""

    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1


class Source(Protocol):
    name: str

    def poll(self, take: Take) -> PollResult: ...


def take_safely(take: Take, key: str, raw: bytes, result: PollResult) -> bool:
    """Run `take`; True when the item is committed and may leave its source."""
    try:
        outcome = take(key, raw)
    except Exception as exc:  # one bad item never stops the others; it stays for the next poll
        result.errors.append(f"{key}: {type(exc).__name__}: {exc}")
        return False
    result.add(outcome.status)
    return True
