"""Template contexts: a report, its routing decision and a service in; out, the plain values a
template may use (`render.Renderer` renders them). An acknowledgement gets nothing the reporter
wrote; a referral gets the report, times shown in `[display] timezone`, and the reporter only
when the report is named.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from pipeline.report import Report
from pipeline.rules import Decision, Service


def ack_context(
    reference: str, anonymous: bool, urgent: bool, services: list[str]
) -> dict[str, object]:
    """What an acknowledgement template may use; never anything the reporter wrote."""
    return {"reference": reference, "anonymous": anonymous, "urgent": urgent, "services": services}


def referral_context(
    reference: str, report: Report, decision: Decision, service: Service, *, zone: tzinfo = UTC
) -> dict[str, object]:
    """What a referral template may use: plain values only; times as `display_time` in `zone`
    (`[display] timezone`), `sent_at` None when not known (`Report.sent_time`)."""
    sent = report.sent_time()
    reporter = None
    if not report.anonymous:
        reporter = {
            "name": report.sender_name,
            "email": report.sender_address,
            "role": report.reporter_role,
        }
    return {
        "reference": reference,
        "service": {"id": service.id, "name": service.name},
        "report": {
            "source": report.source,
            "form": report.form_id,
            "category": decision.category,
            "urgent": decision.urgent,
            "anonymous": report.anonymous,
            "subject": None if report.anonymous else report.subject,  # may identify: withheld
            "body": report.body,
            "received_at": display_time(report.received_at, zone),
            "sent_at": display_time(sent, zone) if sent else None,
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": a.size}
                for a in report.attachments
            ],
            "fields": dict(report.fields),
            "attachment_notes": list(report.attachment_notes),
            "forwarded": list(report.forwarded),
            "follows": list(report.follows),
            "notes": list(report.notes),
        },
        "reporter": reporter,
        "rules": decision.rules,
    }


def display_time(moment: datetime, zone: tzinfo) -> str:
    """A moment as a referral shows it, in the deployment's time zone: `2026-06-24 10:15 BST`."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
