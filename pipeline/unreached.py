"""Alerts for a stored report that reaches no service (yet): quarantined, held or unrouted.

In: an `Unreached` (the report's reference, its state, the reason, whether it is urgent and,
for a held referral, the service). Out: one admin alert through `alerts.raise_alert`, saying
what happened and what to do. Ordinary alerts are coalesced: held referrals once a day per
service, unrouted and quarantined reports once an hour each (`intake status` lists every
one). An urgent report raises its own alert, "URGENT:" first in the subject, kind `urgent`,
never coalesced with others, up to five an hour (an urgent word in a subject is anyone's to
write); past that, one more alert says more are waiting. Names references, services, rules
and reasons; never content.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from pipeline.alerts import daily_key, hourly_key, raise_alert
from pipeline.config import Config
from pipeline.models import AlertRow, ReportState, utcnow

URGENT_KIND = "urgent"
URGENT_PER_HOUR = 5  # urgent alerts of their own an hour; past that, one more for the rest


def _urgent_this_hour(engine: Engine) -> int:
    since = utcnow() - timedelta(hours=1)
    with Session(engine) as session:
        query = select(func.count()).select_from(AlertRow)
        where = (col(AlertRow.kind) == URGENT_KIND) & (col(AlertRow.created_at) >= since)
        return int(session.exec(query.where(where)).one())


@dataclass(frozen=True)
class Unreached:
    reference: str
    state: str  # ReportState.QUARANTINED, HELD or UNROUTED
    reason: str  # why quarantined or held; for unrouted, the rules that matched
    urgent: bool = False
    service: str | None = None  # the service whose referral is held

    def subject(self) -> str:
        if self.state == ReportState.HELD:
            return (
                f"{self.reference}: the referral to {self.service} is held: its key cannot be used"
            )
        if self.state == ReportState.UNROUTED:
            return f"{self.reference} reached no service: the rules refer it to nobody"
        return f"{self.reference} is quarantined: it could not be read"

    def text(self) -> str:
        """What happened and what to do."""
        reference = self.reference
        if self.state == ReportState.HELD:
            return (
                f"{reference}: the referral to {self.service} is held ({self.reason}). It is "
                "sent once the key is fixed: update the key in the keys folder, then run "
                "intake retry."
            )
        if self.state == ReportState.UNROUTED:
            return (
                f"{reference}: no rule refers it to a service ({self.reason}) and the default "
                "refers nobody, so no service has it. The report is kept, encrypted. Fix the "
                "rules (a default that refers a service; check them with intake check-rules), "
                "then a records keyholder routes it again: `intake quarantine release "
                f"{reference} --gnupghome DIR` (`intake show` reads it). `intake status` lists "
                "every unrouted report until then."
            )
        return (
            f"{reference} could not be taken in and is quarantined ({self.reason}). The "
            "original is kept, encrypted. Fix the cause (a limit, a form mapping), then a "
            f"records keyholder runs `intake quarantine release {reference} --gnupghome DIR`."
        )


def alert_unreached(engine: Engine, config: Config, item: Unreached) -> None:
    """Raise the alert for a report left quarantined, held or unrouted (see the module)."""
    if item.urgent and _urgent_this_hour(engine) >= URGENT_PER_HOUR:
        # Anyone can write "unsafe" in a subject: past a few an hour, one more alert says so.
        subject = "URGENT: more urgent reports reach no service: see intake status"
        text = (
            f"More than {URGENT_PER_HOUR} urgent reports this hour are quarantined, held or "
            f"unrouted, among them {item.reference}. `intake status` lists every one."
        )
        key = hourly_key("urgent-more")
        raise_alert(engine, config, key, subject, text, kind=URGENT_KIND, urgent=True)
    elif item.urgent:
        key = ":".join(["urgent", item.reference, item.service or item.state])
        text = f"This report is marked urgent.\n\n{item.text()}"
        subject = f"URGENT: {item.subject()}"
        raise_alert(engine, config, key, subject, text, kind=URGENT_KIND, urgent=True)
    elif item.state == ReportState.HELD and item.service is not None:
        subject = f"referrals to {item.service} are held: its key cannot be used"
        key = daily_key("key", item.service)
        raise_alert(engine, config, key, subject, item.text(), kind="held")
    else:
        what = "left unrouted" if item.state == ReportState.UNROUTED else "quarantined"
        text = f"{item.text()}\n\nOther reports {what} within the hour raise no more mail."
        key = hourly_key(item.state)
        raise_alert(engine, config, key, item.subject(), text, kind=item.state)
