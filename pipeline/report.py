"""The report: what every intake source turns its input into.

In: nothing (plain values). Out: `Report` and `Attachment`, the in-memory shape that parse
produces and that the rules, the renderer and the crypto stage read. A `Report` lives only in
memory; at rest it exists only encrypted (see `store.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from pipeline.models import as_utc

# An email's Date is taken for when it was sent only from a year before it was received to a
# day after: a sender's clock can be wrong (a phone reset to 1970), a form platform's is not.
DATE_BEFORE = timedelta(days=365)
DATE_AHEAD = timedelta(days=1)


@dataclass(frozen=True)
class Attachment:
    """One attachment of a report, kept whole so it can travel inside the encrypted referral."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Report:
    """A parsed report. For an anonymous report `sender_name` and `sender_address` are None."""

    source: str  # "email" | "form"
    subject: str
    body: str
    received_at: datetime
    anonymous: bool = False
    sender_name: str | None = None
    sender_address: str | None = None
    to_addresses: list[str] = field(default_factory=list)
    message_id: str | None = None
    sent_at: datetime | None = None  # the message's Date, or a form's submission time
    attachments: list[Attachment] = field(default_factory=list)
    category: str | None = None
    reporter_role: str | None = None
    urgent: bool = False
    form_id: str | None = None
    # Further mapped form fields (e.g. occurred_at, location): label -> value, for the referral.
    fields: dict[str, str] = field(default_factory=dict)
    # What the referral says about attachments cleaned or withheld.
    attachment_notes: list[str] = field(default_factory=list)
    # Messages the reporter forwarded (attached `message/rfc822`), as text for the referral.
    forwarded: list[str] = field(default_factory=list)
    # What the referral says was removed from the report's text (e.g. a signature block).
    notes: list[str] = field(default_factory=list)
    # References of anonymous reports this message replies to or quotes: it adds to them, and
    # is anonymous too.
    follows: list[str] = field(default_factory=list)
    # Where an acknowledgement may go, or None. Kept only in memory and in the encrypted outbox.
    ack_address: str | None = None
    # An anonymised report's former sender names and addresses, in memory only, until its text
    # attachments have been scrubbed of them (`anonymity.clean_attachments`).
    sender_hints: list[str] = field(default_factory=list, repr=False)

    def sent_time(self) -> datetime | None:
        """When the reporter sent the report, in UTC: a form's submission time, or an email's
        Date within the bounds above; None when not known."""
        if self.sent_at is None:
            return None
        sent = as_utc(self.sent_at)
        if self.source == "email" and not (
            self.received_at - DATE_BEFORE <= sent <= self.received_at + DATE_AHEAD
        ):
            return None
        return sent.astimezone(UTC)

    def to_record(self) -> dict[str, object]:
        """The parsed report as a JSON-ready dict for the encrypted record (attachment metadata)."""
        data = asdict(self)
        data["attachments"] = [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size}
            for a in self.attachments
        ]
        data["received_at"] = self.received_at.isoformat()
        data["sent_at"] = self.sent_at.isoformat() if self.sent_at else None
        data.pop("ack_address")
        data.pop("sender_hints")
        data.pop("attachment_notes")
        data.pop("notes")
        return data
