"""Source health: one poll's `PollResult` in, the `SourceStatus` row and admin alerts out.

Every poll of a source is recorded: a clean poll sets `last_success_at` and clears the error; a
poll with errors sets `last_error` and `error_cause` and keeps `error_since` from the first
failure of the spell. Alerts (kind "source") are coalesced per source and cause: one when the
source starts failing with a cause (at most one an hour, should it flap), a reminder once a
day while the spell lasts, and one "recovered" when it reads again. An alert names the source,
its server or path and the config key; never content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlmodel import Session

from pipeline.alerts import hourly_key, raise_alert
from pipeline.config import Config
from pipeline.models import SourceStatus, utcnow

if TYPE_CHECKING:  # pipeline.intake imports ingest, which records template failures here
    from pipeline.intake import PollResult

SHOWN_ERRORS = 10  # errors listed in an alert; `last_error` keeps the first
ROUTING = "rules and templates"  # the SourceStatus row of the rules and templates in force
OUTBOX = "outbox"  # the SourceStatus row of the SMTP server's health, as the outbox found it
PARTS = (ROUTING, OUTBOX)  # rows that are not sources: `intake status` lists them by kind


@dataclass(frozen=True)
class Change:
    """What one poll changed for a source: its error spell before, and the status after."""

    since_before: datetime | None
    cause_before: str | None
    status: SourceStatus


def cause_of(result: PollResult) -> str:
    """The poll's causes as one stable word list ("export", "folder,item"); "error" when an
    error came without one."""
    return ",".join(sorted(result.causes)) or "error"


def summary(errors: list[str]) -> str:
    """The first error, and how many more there were."""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return errors[0] + more


def record_poll(engine: Engine, config: Config, name: str, result: PollResult) -> None:
    """Record the poll of source `name` and raise the alerts its change calls for."""
    failing = bool(result.errors)
    cause, error = (cause_of(result), summary(result.errors)) if failing else (None, None)
    change = _set(engine, name, cause, error)
    status = change.status
    if not result.errors:
        if change.since_before is not None:
            _alert_recovered(engine, config, name, change)
        return
    assert status.error_since is not None and status.error_cause is not None
    if status.error_cause != change.cause_before:
        subject = f"source {name} cannot be read ({status.error_cause})"
        key = hourly_key("source", name, status.error_cause)
    else:
        days = (utcnow() - status.error_since).days
        if days < 1:
            return
        subject = f"source {name} still cannot be read ({status.error_cause}, {days} day(s))"
        key = f"source:{name}:{status.error_cause}:{status.error_since.isoformat()}:{days}"
    raise_alert(engine, config, key, subject, _failing_text(name, status, result), kind="source")


def _set(engine: Engine, name: str, cause: str | None, error: str | None) -> Change:
    """Record that `name` works (`cause` None) or fails with `cause` and `error`, keeping the
    start of a failing spell; what it was before, and the row after."""
    now = utcnow()
    with Session(engine, expire_on_commit=False) as session:
        status = session.get(SourceStatus, name) or SourceStatus(name=name)
        change = Change(status.error_since, status.error_cause, status)
        if cause is None:
            status.last_success_at = now
            status.last_error = status.error_cause = status.error_since = None
        else:
            status.last_error = error
            status.error_cause = cause
            status.error_since = status.error_since or now
        session.add(status)
        session.commit()
    return change


def _failing_text(name: str, status: SourceStatus, result: PollResult) -> str:
    shown = result.errors[:SHOWN_ERRORS]
    more = len(result.errors) - len(shown)
    lines = [f"The source {name} cannot be read (since {status.error_since:%Y-%m-%d %H:%M} UTC):"]
    lines += [f"  {error}" for error in shown]
    if more:
        lines.append(f"  ... and {more} more")
    lines.append(
        "Nothing is lost: what could not be read stays in its source and is read once the "
        "cause is fixed. `intake status` lists the source until then; another alert says when "
        "it reads again."
    )
    return "\n".join(lines)


def _alert_recovered(engine: Engine, config: Config, name: str, change: Change) -> None:
    subject = f"source {name} recovered: it reads again"
    text = (
        f"The source {name}, failing ({change.cause_before}) since "
        f"{change.since_before:%Y-%m-%d %H:%M} UTC, was read again at "
        f"{change.status.last_success_at:%Y-%m-%d %H:%M} UTC."
    )
    key = hourly_key("source-recovered", name)
    raise_alert(engine, config, key, subject, text, kind="source", level=logging.INFO)


def record_health(
    engine: Engine, name: str, kind: str | None, error: str | None = None
) -> datetime | None:
    """Record whether a part that is not a source works (`kind` None) or not (`kind` e.g.
    "rules", "template", "smtp", "outbox"; `error` what is wrong, its first line kept):
    `intake status` lists a failing part until it works again. Returns since when it fails
    (None: it works). Alerts are raised by whoever found the failure."""
    first_line = (error or "").splitlines()[0] if error else kind
    return _set(engine, name, kind, first_line).status.error_since


def health_cause(engine: Engine, name: str) -> str | None:
    """The kind of failure a part that is not a source has now (None: it works)."""
    with Session(engine) as session:
        status = session.get(SourceStatus, name)
        return status.error_cause if status else None


def record_routing(engine: Engine, kind: str | None, error: str | None = None) -> None:
    """Whether the rules and templates on disk load (`kind` None) or not (`kind` "rules" or
    "template"): a broken edit is listed until it is fixed (App.reload_rules alerts)."""
    record_health(engine, ROUTING, kind, error)
