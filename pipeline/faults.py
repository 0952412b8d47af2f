"""Crash points: where tests make the daemon SIGKILL itself, to prove a restart finishes the work.

In: the environment variable `INTAKE_CRASH_AT`, e.g. `after-commit` (the first time that point
is reached), `after-commit:3` (the third time), or `any:17` (the 17th crash point of any name).
Out: nothing at all when the variable is unset (production); otherwise SIGKILL, exactly there.

Points: `after-fetch` (a message fetched, nothing stored), `in-gpg` (inside the report's
transaction, before gpg returns), `after-commit` (report stored, message not yet moved),
`after-flag` (message flagged \\Deleted, not yet expunged), `after-move` (message moved or
expunged), `after-smtp` (the SMTP server said 250, the outbox row is not
yet marked sent).
"""

from __future__ import annotations

import os
import signal

POINTS = ("after-fetch", "in-gpg", "after-commit", "after-flag", "after-move", "after-smtp")
_counts: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get("INTAKE_CRASH_AT")
    if not spec:
        return None
    name, _, nth = spec.partition(":")
    return name, int(nth or 1)


def crash_point(name: str) -> None:
    """SIGKILL this process if `INTAKE_CRASH_AT` names this point (or `any`) and its count."""
    target = _target()
    if target is None:
        return
    wanted, nth = target
    if wanted not in (name, "any"):
        return
    _counts[wanted] = _counts.get(wanted, 0) + 1
    if _counts[wanted] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
