"""What a doctor check finds: `Check` values in, lines, JSON and an exit status out.

A check is PASS, WARN (works, but an admin should know: exit 0), SKIP (not checked, and why)
or FAIL (will not work: exit 1), with what was found and, unless it passed, what to do, naming
the config key. `bounded` runs one check in a thread with a time limit: a check that hangs or
raises is a FAIL of its own and never stops the others.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from pipeline.intake import describe

Status = Literal["PASS", "WARN", "SKIP", "FAIL"]
PASS: Status = "PASS"
WARN: Status = "WARN"
SKIP: Status = "SKIP"
FAIL: Status = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str  # what was found; never a secret or report content
    fix: str = ""  # what to do, naming the config key; empty when it passed

    def line(self) -> str:
        fix = f" -> {self.fix}" if self.fix else ""
        return f"{self.status}  {self.name}: {self.detail}{fix}"


def exit_status(checks: list[Check]) -> int:
    """1 when any check failed; warnings and skips do not fail (exit 0)."""
    return 1 if any(check.status == FAIL for check in checks) else 0


def summary(checks: list[Check]) -> str:
    counts = {status: sum(c.status == status for c in checks) for status in (PASS, WARN, SKIP)}
    failed = sum(c.status == FAIL for c in checks)
    parts = [f"{counts[PASS]} passed", f"{counts[WARN]} warning(s)", f"{counts[SKIP]} skipped"]
    verdict = f"{failed} FAILED" if failed else "ready"
    return f"doctor: {verdict} ({', '.join(parts)})"


def lines(checks: list[Check]) -> list[str]:
    return [check.line() for check in checks] + [summary(checks)]


def to_json(checks: list[Check]) -> str:
    """{"ok": bool, "summary": {status: count}, "checks": [{name, status, detail, fix}]}."""
    counts = {status: sum(c.status == status for c in checks) for status in (PASS, WARN, SKIP)}
    counts[FAIL] = sum(c.status == FAIL for c in checks)
    document = {
        "ok": exit_status(checks) == 0,
        "summary": counts,
        "checks": [asdict(check) for check in checks],
    }
    return json.dumps(document, indent=2)


def bounded(name: str, run: Callable[[], list[Check]], seconds: float, fix: str) -> list[Check]:
    """`run()`'s checks, or one FAIL named `name` when it raised or did not finish within
    `seconds` (the thread is left behind; it ends with the process)."""
    found: list[list[Check]] = []

    def target() -> None:
        try:
            found.append(run())
        except Exception as exc:  # a check's own failure is a result, not the end of doctor
            found.append([Check(name, FAIL, f"the check itself failed ({describe(exc)})", fix)])

    thread = threading.Thread(target=target, name=f"doctor: {name}", daemon=True)
    thread.start()
    thread.join(seconds)
    if not found:
        return [Check(name, FAIL, f"no result within {seconds:g} s", fix)]
    return found[0]
