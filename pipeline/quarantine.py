"""Quarantine and stored reports, for an admin and a records keyholder.

In: a `Config`, references and, to release or show, a keyholder's own GnuPG home
(`--gnupghome`, holding a records secret key, which the daemon never has). Out: lines on
standard output, quarantined inputs taken in again (through `Ingest`), or an error that names
what to fix. Decrypted records live in memory only: never in a file, a log or the database.

- `quarantined_items` (`intake quarantine list`): reference, source, when and why; no content.
- `release` (`intake quarantine release`): the stored original decrypted and taken in again
  under the current config, rules and limits, as the report it was. It keeps its reference: the
  reporter may have been told it (the too-large notice), a follow-up may name it, the audit
  trail follows it, and its fingerprint and source items still point at its row, so a copy of
  the input arriving again is still a duplicate of it. It goes from `quarantined` to what the
  new take gives (queued, routed, unrouted, held) in one transaction with an audit line naming
  the OS user; still unreadable, it stays quarantined with the new reason. An anonymous
  original was stored without its identifying header fields: what is there is released, and
  it stays anonymous. A form response is read again from the encrypted archive of its export.
  An `unrouted` report is released the same way once the rules refer it: routed again, with
  no second acknowledgement.
- `show_report` (`intake show`): one stored report for a keyholder: its metadata, the decrypted
  report, its attachments and its mail. Nothing is written.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pipeline.app import App
from pipeline.audit import current_user
from pipeline.config import Config
from pipeline.crypto import CryptoError, KeyholderHome, normalise_fingerprint
from pipeline.ingest import Outcome
from pipeline.intake.exports import ExportError
from pipeline.intake.forms import FormSource, RowError, released_response, response_keys
from pipeline.models import (
    EncryptedRecord,
    OutboxRow,
    ReportRow,
    ReportState,
    SourceItem,
    as_utc,
)
from pipeline.render import RenderError
from pipeline.status import iso, origins
from pipeline.store import BUNDLE, RELEASABLE, open_current, unbundle_record


class QuarantineError(Exception):
    """A reference cannot be released or shown; the message says which and what to do."""


class KeyholderError(QuarantineError):
    """The `--gnupghome` given cannot open the stored records."""


class Keyholder:
    """A records keyholder's GnuPG home, checked to be readable by this user and to hold a
    secret key of `gpg.records_keys`."""

    def __init__(self, config: Config, home: Path) -> None:
        self.path = home
        _check_readable(home)
        try:
            self.home = KeyholderHome(home, config.gpg.binary)
            held = self.home.secret_keys()
        except CryptoError as exc:
            raise KeyholderError(f"--gnupghome {home}: {exc}") from None
        wanted = [normalise_fingerprint(fpr) for fpr in config.gpg.records_keys]
        if not held & set(wanted):
            raise KeyholderError(
                f"--gnupghome {home}: holds no secret key of gpg.records_keys "
                f"({', '.join(wanted)}); give the GnuPG home of a records keyholder"
            )

    def decrypt(self, data: bytes, what: str) -> bytes:
        try:
            return self.home.decrypt(data)
        except CryptoError as exc:
            raise KeyholderError(f"--gnupghome {self.path}: cannot decrypt {what}: {exc}") from None


def _check_readable(home: Path) -> None:
    """KeyholderError unless this user can read `home` and its secret keys: a keyholder's own
    home is not readable by the daemon's user, whom SQLite deployments run these commands as."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = f"uid {os.geteuid()}"
    secret = home / "private-keys-v1.d"
    try:
        next(home.iterdir(), None)
        if secret.exists():
            next(secret.iterdir(), None)
    except PermissionError as exc:
        raise KeyholderError(
            f"--gnupghome {home}: {user} cannot open it ({exc.strerror}): give a GnuPG home "
            f"that {user} made, holding a records secret key, e.g. a temporary one in /dev/shm "
            '(README, "Quarantine: releasing an input, reading a report")'
        ) from None
    except OSError as exc:  # not there, not a folder
        raise KeyholderError(
            f"--gnupghome {home}: {exc.strerror}; give a GnuPG home holding a records secret key"
        ) from None


# -- List -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuarantinedItem:
    """One quarantined input, without content."""

    reference: str
    source: str  # the configured source it came from, as `intake status` names it
    channel: str  # "email" | "form"
    form: str | None
    when: datetime  # when it was received (to the hour for an anonymous input)
    reason: str
    anonymous: bool

    def to_json(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "source": self.source,
            "channel": self.channel,
            "form": self.form,
            "when": iso(self.when),
            "reason": self.reason,
            "anonymous": self.anonymous,
        }

    def line(self) -> str:
        anonymous = " (anonymous)" if self.anonymous else ""
        when = f"{self.when:%Y-%m-%d %H:%M} UTC"
        return f"{self.reference}  {when}  {self.source}{anonymous}  {self.reason}"


def quarantined_items(engine: Engine) -> list[QuarantinedItem]:
    """Every quarantined report, oldest first."""
    with Session(engine) as session:
        query = select(ReportRow).where(ReportRow.state == ReportState.QUARANTINED)
        rows = list(session.exec(query.order_by(col(ReportRow.id))))
        sources = origins(session, [row.id for row in rows if row.id is not None])
    return [
        QuarantinedItem(
            row.reference or "",
            sources.get(row.id or 0, row.source),
            row.source,
            row.form_id or _form_id(engine, row),
            as_utc(row.received_at),
            row.reason or "",
            row.anonymous,
        )
        for row in rows
    ]


def _source_keys(engine: Engine, report_id: int | None) -> list[str]:
    with Session(engine) as session:
        query = select(SourceItem.source_key).where(SourceItem.report_id == report_id)
        return list(session.exec(query))


def _form_id(engine: Engine, row: ReportRow) -> str | None:
    """A form response's form id, from the key it was taken in under (`form:<id>:<hash>`)."""
    if row.source != "form":
        return None
    keys = [key for key in _source_keys(engine, row.id) if key.startswith("form:")]
    return keys[0].split(":")[1] if keys else None


def list_command(config: Config, as_json: bool) -> int:
    engine = open_current(config.database_url)
    try:
        items = quarantined_items(engine)
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps([item.to_json() for item in items]))
    else:
        print("\n".join(item.line() for item in items) or "nothing is quarantined")
    return 0


# -- Release --------------------------------------------------------------------------------


def stored_report(engine: Engine, reference: str) -> ReportRow:
    with Session(engine) as session:
        row = session.exec(select(ReportRow).where(ReportRow.reference == reference)).first()
    if row is None:
        raise QuarantineError(f"{reference}: no report with this reference")
    return row


def _record(engine: Engine, row: ReportRow, kind: str) -> bytes | None:
    with Session(engine) as session:
        record = session.get(EncryptedRecord, (row.id, kind))
        return record.data if record else None


def _stored(
    engine: Engine, keyholder: Keyholder, row: ReportRow, kind: str, what: str
) -> tuple[dict[str, object] | None, bytes] | None:
    """A report's parsed record (None when only its original is stored) and its original,
    decrypted: from its one record (`store.BUNDLE`) or, stored before, its `kind` record
    ("original" or "report"); None when there is none (purged, or a quarantined input's
    parsed report)."""
    bundle = _record(engine, row, BUNDLE)
    if bundle is not None:
        try:
            return unbundle_record(keyholder.decrypt(bundle, what))
        except ValueError as exc:
            raise QuarantineError(f"{what}: the decrypted record cannot be read: {exc}") from None
    sealed = _record(engine, row, kind)
    if sealed is None:
        return None
    plain = keyholder.decrypt(sealed, what)
    return (json.loads(plain), b"") if kind == "report" else (None, plain)


def release(app: App, keyholder: Keyholder, reference: str, actor: str) -> ReportRow:
    """Take one quarantined input in again (see the module docstring); its row afterwards."""
    row = stored_report(app.engine, reference)
    if row.state not in RELEASABLE:
        raise QuarantineError(
            f"{reference}: it is {row.state}, not quarantined or unrouted: nothing to release"
        )
    stored = _stored(app.engine, keyholder, row, "original", f"the original of {reference}")
    if stored is None:
        raise QuarantineError(
            f"{reference}: its original was purged (retention): nothing to release"
        )
    original = stored[1]
    if row.source == "form":
        outcome = _release_response(app, keyholder, row, original, actor)
    else:
        outcome = app.ingest.release_email(row, original, actor)
    if outcome.status == "seen":
        raise QuarantineError(f"{reference}: another release took it in meanwhile")
    return stored_report(app.engine, reference)


def _release_response(
    app: App, keyholder: Keyholder, row: ReportRow, original: bytes, actor: str
) -> Outcome:
    """A quarantined form response, found in the encrypted archives of its export file."""
    stored = json.loads(original)
    form = next((f for f in app.config.forms if f.id == stored["form"]), None)
    if form is None:
        raise QuarantineError(
            f"{row.reference}: its form {stored['form']!r} is not in {app.config.source} "
            "([[forms]] id); add the form back to release this response"
        )
    keys = set(_source_keys(app.engine, row.id))
    source, name = FormSource(form, app.config.data_dir), str(stored["file"])
    for path in source.archived(name):
        data = keyholder.decrypt(path.read_bytes(), f"the archived export {path}")
        try:
            export = source.read(Path(name), data)
        except ExportError as exc:
            raise QuarantineError(f"{path}: the archived export cannot be read: {exc}") from None
        found = next((r for r in export.rows if keys & set(response_keys(form, r))), None)
        if found is None:
            continue
        try:
            report, record = released_response(app.ingest, form, export, found, row)
        except RowError as exc:
            return app.ingest.still_quarantined(row, f"{name}:{found.row}: {exc}", actor)
        return app.ingest.release_report(row, report, record, actor)
    raise QuarantineError(
        f"{row.reference}: no archived export of {name} in {source.archive_dir} holds this "
        f"response (forms.after is {form.after!r}); drop an export that holds it into "
        f"{form.path}: the daemon takes in again a quarantined response that reads now"
    )


def release_command(config: Config, references: list[str], home: Path) -> int:
    """Release each reference; 0 when every one was taken in, else 1."""
    try:
        keyholder = Keyholder(config, home)
    except KeyholderError as exc:
        print(exc, file=sys.stderr)
        return 1
    status = 0
    app = App.open(config)
    try:
        for reference in references:
            try:
                row = release(app, keyholder, reference, current_user())
            except (QuarantineError, RenderError) as exc:  # the next reference is tried still
                print(
                    f"{reference}: {exc}" if isinstance(exc, RenderError) else exc, file=sys.stderr
                )
                status = 1
                continue
            if row.state == ReportState.QUARANTINED:
                print(f"{reference}: still quarantined: {row.reason}")
                status = 1
            elif row.state == ReportState.UNROUTED:
                print(f"{reference}: still unrouted: the rules refer it to no service")
                status = 1
            else:
                print(f"{reference}: released: {row.state}")
    finally:
        app.close()
    return status


# -- Show -----------------------------------------------------------------------------------


def metadata_lines(engine: Engine, row: ReportRow) -> list[str]:
    """What the database knows of a report (no content), one `name: value` a line."""
    decision = json.loads(row.decision) if row.decision else {}
    lines = [
        f"reference: {row.reference}",
        f"state: {row.state}",
        f"source: {row.source}" + (f" (form {row.form_id})" if row.form_id else ""),
        f"received: {as_utc(row.received_at):%Y-%m-%d %H:%M} UTC",
        f"category: {row.category or '-'}",
        f"anonymous: {'yes' if row.anonymous else 'no'}",
        f"urgent: {'yes' if row.urgent else 'no'}",
        f"refer: {', '.join(decision.get('refer', [])) or '-'}",
        f"acknowledge: {decision.get('acknowledge') or '-'}",
        f"rules: {', '.join(decision.get('rules', [])) or '-'}",
    ]
    if row.reason:
        lines.append(f"reason: {row.reason}")
    if row.purged_at:
        lines.append(f"purged: {as_utc(row.purged_at):%Y-%m-%d} (retention)")
    with Session(engine) as session:
        query = select(OutboxRow).where(OutboxRow.report_id == row.id)
        for mail in session.exec(query.order_by(col(OutboxRow.id))):
            error = f" ({mail.last_error})" if mail.last_error else ""
            lines.append(f"mail: {mail.kind} to {mail.target}: {mail.state}{error}")
    return lines


def report_lines(record: dict[str, object]) -> list[str]:
    """The decrypted report (the `report` record) for a person to read."""
    sender = " ".join(str(record.get(k) or "") for k in ("sender_name", "sender_address"))
    lines = [
        f"subject: {record.get('subject') or ''}",
        f"from: {'anonymous' if record.get('anonymous') else sender.strip() or '-'}",
        f"sent: {record.get('sent_at') or '-'}",
        f"reporter role: {record.get('reporter_role') or '-'}",
    ]
    fields = record.get("fields")
    if isinstance(fields, dict):
        lines += [f"{name}: {value}" for name, value in fields.items()]
    follows = record.get("follows")
    if isinstance(follows, list) and follows:
        lines.append(f"adds to: {', '.join(map(str, follows))}")
    lines += ["", str(record.get("body") or ""), ""]
    forwarded = record.get("forwarded")
    if isinstance(forwarded, list):
        lines += [f"forwarded message:\n{text}" for text in forwarded]
    attachments = record.get("attachments")
    if isinstance(attachments, list) and attachments:
        lines.append("attachments:")
        lines += [
            f"  {a['filename']} ({a['content_type']}, {a['size']} bytes)" for a in attachments
        ]
    else:
        lines.append("attachments: none")
    return lines


def show_report(engine: Engine, keyholder: Keyholder, reference: str) -> list[str]:
    """One stored report for a keyholder: metadata, then the decrypted report."""
    row = stored_report(engine, reference)
    lines = metadata_lines(engine, row)
    stored = _stored(engine, keyholder, row, "report", f"the report {reference}")
    if stored is None or stored[0] is None:
        why = (
            "it is quarantined: release it to read it"
            if row.state == ReportState.QUARANTINED
            else "its records were purged"
        )
        return [*lines, "", f"report: none stored ({why})"]
    return [*lines, "", "-- report (decrypted) --", *report_lines(stored[0])]


def show_command(config: Config, reference: str, home: Path) -> int:
    engine = open_current(config.database_url)
    try:
        print("\n".join(show_report(engine, Keyholder(config, home), reference)))
    except QuarantineError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0
