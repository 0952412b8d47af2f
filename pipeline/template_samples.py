"""What `check-rules` renders each template with, and which kind each template is.

In: a loaded `RuleSet` and the names of the templates in templates/. Out: `samples()`, kind
-> `Sample`, and `template_kinds`, name -> the kinds it is used as. A referral template gets the
contexts the real `referral_context` builds for two made-up reports: a named, urgent form
report with every optional part, and an anonymous email with none. An acknowledgement gets
what `Ingest` gives one (reference, anonymous, urgent, services), once with a service and once
without. A template no rule or service names is checked as a referral when its name starts with
"referral", else as an acknowledgement.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.contexts import ack_context, referral_context
from pipeline.ingest import TOO_LARGE_TEMPLATE
from pipeline.render_check import Sample
from pipeline.report import Attachment, Report
from pipeline.rules import Decision, RuleSet, Service

ACKNOWLEDGEMENT = "acknowledgement"
REFERRAL = "referral"
_REFERENCE = "R-2026-000001"
_WHEN = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
_SERVICE = Service("advice-centre", "The Advice Centre", "advice@example.org", "0" * 40)


def _named_report() -> Report:
    return Report(
        source="form",
        subject="Response to form report-form",
        body="What happened, as the reporter wrote it.",
        received_at=_WHEN,
        sent_at=_WHEN,
        sender_name="Sam Student",
        sender_address="sam@example.org",
        to_addresses=["report@example.org"],
        attachments=[Attachment("photo.jpg", "image/jpeg", b"\xff\xd8")],
        category="hate-crime",
        reporter_role="student",
        urgent=True,
        form_id="report-form",
        fields={"location": "Library"},
        attachment_notes=["photo.jpg: its location data was removed"],
        forwarded=["A forwarded message."],
        notes=["a signature block"],
        follows=["R-2026-000000"],
    )


def _anonymous_report() -> Report:
    return Report(source="email", subject="", body="", received_at=_WHEN, anonymous=True)


def _referral(report: Report, rules: list[str]) -> dict[str, Any]:
    decision = Decision(
        report.category, report.anonymous, report.urgent, [_SERVICE.id], None, rules
    )
    return referral_context(_REFERENCE, report, decision, _SERVICE)


def samples() -> dict[str, Sample]:
    """Kind -> the contexts a template of that kind is checked with."""
    referral = [_referral(_named_report(), ["urgent"]), _referral(_anonymous_report(), [])]
    acknowledgement = [
        ack_context(_REFERENCE, False, True, [_SERVICE.name]),
        ack_context(_REFERENCE, True, False, []),
    ]
    return {
        REFERRAL: Sample(REFERRAL, referral),
        ACKNOWLEDGEMENT: Sample(ACKNOWLEDGEMENT, acknowledgement),
    }


def template_kinds(ruleset: RuleSet, names: set[str]) -> dict[str, set[str]]:
    """Each template of the folder and the kinds it is used as (see the module docstring)."""
    kinds: dict[str, set[str]] = {name: set() for name in names}
    for ref in ruleset.template_refs():
        kinds.setdefault(ref.name, set()).add(ref.kind)
    if TOO_LARGE_TEMPLATE in kinds:
        kinds[TOO_LARGE_TEMPLATE].add(ACKNOWLEDGEMENT)
    for name, used_as in kinds.items():
        if not used_as:
            used_as.add(REFERRAL if name.startswith(REFERRAL) else ACKNOWLEDGEMENT)
    return {name: used_as for name, used_as in kinds.items() if name in names}
