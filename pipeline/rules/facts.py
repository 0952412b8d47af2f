"""What the rules know about a report while they run.

In: a `Report`. Out: `Facts`, a small mutable copy of the fields conditions look at. Each
matching rule's `set:` updates it, so a later rule sees what an earlier one decided.
`SETTABLE` names the facts `set:` may change and the type each must have. The category is
kept as its slug (`categories.py`), however the form or the rule spelled it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.report import Report
from pipeline.rules.categories import category_slug

# Fact name -> the Python type its `set:` value must have.
SETTABLE: dict[str, type] = {"category": str, "urgent": bool, "reporter_role": str}


@dataclass
class Facts:
    """The report's fields as the rules see them, updated as rules match."""

    source: str
    subject: str
    body: str
    anonymous: bool = False
    category: str | None = None
    urgent: bool = False
    reporter_role: str | None = None
    to_addresses: tuple[str, ...] = ()
    form_id: str | None = None

    @classmethod
    def from_report(cls, report: Report) -> Facts:
        """Copy what the conditions need; the report itself is never changed."""
        return cls(
            source=report.source,
            subject=report.subject,
            body=report.body,
            anonymous=report.anonymous,
            category=_slug_or_none(report.category),
            urgent=report.urgent,
            reporter_role=report.reporter_role,
            to_addresses=tuple(report.to_addresses),
            form_id=report.form_id,
        )

    def apply(self, updates: Mapping[str, object]) -> None:
        """Apply a rule's `set:`; the loader has checked names and types against SETTABLE."""
        for name, value in updates.items():
            if name not in SETTABLE:
                raise KeyError(f"'{name}' is not a fact a rule may set")
            if name == "category" and isinstance(value, str):
                value = _slug_or_none(value)
            setattr(self, name, value)


def _slug_or_none(category: str | None) -> str | None:
    return (category_slug(category) or None) if category is not None else None
