"""Ingest: one raw input (bytes plus a stable source key) in, one committed report out.

Wires the stages for a single item: dedupe → parse → anonymity → route → render → encrypt →
store. Everything is encrypted in memory and committed in one transaction; the caller removes
the input from its source (IMAP MOVE, Maildir unlink) only after `take` returned. An input
that cannot be parsed is stored encrypted in quarantine with the reason; it is never dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Concatenate, ParamSpec, Protocol

from sqlalchemy import Engine
from sqlmodel import Session

from pipeline import audit
from pipeline.acks import AckPolicy, auto_reply_reason, raw_subject, raw_thread_of, thread_of
from pipeline.alerts import hourly_key, raise_alert
from pipeline.anonymity import apply_anonymity, clean_attachments, is_anonymous_message
from pipeline.bounces import Bounce, recognise_bounce
from pipeline.clean import screen_attachments
from pipeline.config import Config
from pipeline.contexts import ack_context, referral_context
from pipeline.crypto import Crypto, KeyUnusableError
from pipeline.deliver import (
    build_acknowledgement,
    build_referral,
    new_message_id,
    referral_inner_bytes,
    referral_subject,
)
from pipeline.faults import crash_point
from pipeline.models import (
    AckSent,
    OutboxRow,
    OutboxState,
    ReportRow,
    ReportState,
    as_utc,
    to_the_hour,
)
from pipeline.parse import (
    ParseError,
    content_fingerprint,
    read_message,
    report_from_headers,
    report_from_message,
)
from pipeline.redact import quarantined_original
from pipeline.render import Renderer, RenderError
from pipeline.report import Report
from pipeline.rules import Decision, RuleSet, evaluate
from pipeline.sources import record_routing
from pipeline.store import (
    BUNDLE,
    AckLimiter,
    Build,
    anonymous_thread,
    bundle_record,
    decision_json,
    has_acknowledgement,
    keep_quarantined,
    mark_source,
    quarantined_input,
    record_bounce,
    release_report,
    report_by_fingerprint,
    save_report,
    source_seen,
)
from pipeline.unreached import Unreached, alert_unreached

log = logging.getLogger(__name__)

TOO_LARGE_TEMPLATE = "ack-too-large"


@dataclass(frozen=True)
class Release:
    """A quarantined report taken in again (`Ingest.release_report`): its row id, and who
    released it (a keyholder's OS user, or "daemon" for a re-exported form response)."""

    report_id: int
    actor: str


@dataclass(frozen=True)
class Outcome:
    """What became of one input: `stored`, `unrouted` (stored, but the rules refer it to no
    service), `quarantined`, `duplicate`, `seen` (already taken), `bounce` or `auto_reply`.
    `anonymous` is True when the input was (or may have been) an anonymous report: its source
    must not keep a readable copy."""

    status: str
    reference: str | None = None
    reason: str | None = None
    anonymous: bool = False


class Progress(Protocol):
    """Told how many inputs the sources have and of each one taken (`pipeline.logs.Progress`:
    the progress line of `run --once` on a terminal; `pipeline.daemon.PollProgress`: the poll
    job's signs of life). `expect(0)` only says that a source is still at work."""

    def expect(self, count: int) -> None: ...

    def taken(self) -> None: ...


P = ParamSpec("P")


def one_input(
    take: Callable[Concatenate[Ingest, P], Outcome],
) -> Callable[Concatenate[Ingest, P], Outcome]:
    """An `Ingest` method a source hands one input to: the outermost such call (take_email
    calls take_report or quarantine itself) counts the input for `Ingest.progress`, whatever
    came of it."""

    @wraps(take)
    def counted(self: Ingest, *args: P.args, **kwargs: P.kwargs) -> Outcome:
        self.depth += 1
        try:
            return take(self, *args, **kwargs)
        finally:
            self.depth -= 1
            if self.depth == 0 and self.progress is not None:
                self.progress.taken()

    return counted


class Ingest:
    """The stages between a source and the outbox, for one configured deployment."""

    def __init__(
        self, config: Config, engine: Engine, crypto: Crypto, rules: RuleSet, renderer: Renderer
    ) -> None:
        self.config = config
        self.engine = engine
        self.crypto = crypto
        self.rules = rules
        self.renderer = renderer
        self.limiter = AckLimiter(engine, config.data_dir, config.alerts.ack_limit_per_hour)
        self.fingerprint_key = b""  # set from the outbox passphrase when the daemon starts
        self.progress: Progress | None = None  # set by `run --once` on a terminal
        self.depth = 0  # `one_input` calls in progress

    def expect(self, count: int) -> None:
        """A source about to hand over `count` inputs says so (the progress line shows how
        many remain)."""
        if self.progress is not None:
            self.progress.expect(count)

    def alive(self) -> None:
        """A source still at work between two inputs (fetching a group of large messages, say)
        shows a sign of life: the daemon's watchdog counts it as progress."""
        self.expect(0)

    def fingerprint(self, digest: str) -> str:
        """An input's fingerprint as the database keeps it: keyed, so that someone holding the
        database and a copy of the mail (the sender's Sent folder) cannot match the two."""
        if not self.fingerprint_key:
            return digest
        return hmac.new(self.fingerprint_key, digest.encode(), hashlib.sha256).hexdigest()

    def seen(self, source_key: str) -> bool:
        """True when this input was taken in before (by any run or instance)."""
        return source_seen(self.engine, source_key)

    @one_input
    def take_email(self, source_key: str, raw: bytes, *, anonymous: bool = False) -> Outcome:
        """Take in one raw email. Safe to call again for the same input: it is stored once.
        `anonymous` marks every message of an anonymous source (folder, Maildir)."""
        if self.seen(source_key):
            return Outcome("seen")
        fingerprint = self.fingerprint(content_fingerprint(raw))
        existing = report_by_fingerprint(self.engine, fingerprint)
        if existing is not None:
            return self.take_duplicate(source_key, existing)
        received_at = datetime.now(UTC)
        try:
            limits = self.config.limits
            msg = read_message(raw, limits=limits)
            bounce = recognise_bounce(msg)
            if bounce is not None:
                return self.take_bounce(source_key, bounce)
            acks = AckPolicy.from_config(self.config)
            report = report_from_message(msg, received_at, limits=limits, acks=acks)
        except ParseError as exc:
            return self._quarantine_email(source_key, fingerprint, raw, exc, received_at, anonymous)
        if auto_reply_reason(msg, report.subject) or acks.answers_us_automatically(msg):
            return self.take_auto_reply(source_key)
        report.follows = anonymous_thread(self.engine, *thread_of(msg, report.subject))
        forced = anonymous or bool(report.follows)
        original = self._apply_anonymity(report, raw, forced=forced)
        return self.take_report(report, source_key, fingerprint, original)

    def take_duplicate(self, source_key: str, existing: ReportRow | None) -> Outcome:
        """An input whose content was stored already (another copy; another instance stored it
        first): it counts as a `duplicate` of that report and is not stored again."""
        mark_source(self.engine, source_key, existing.id if existing else None, "duplicate")
        reference = existing.reference if existing else None
        log.info("duplicate of %s (%s)", reference, source_key)
        return Outcome("duplicate", reference)

    def take_auto_reply(self, source_key: str) -> Outcome:
        """An out-of-office or vacation reply: not a report; counted (one audit line, no
        content) and not kept."""
        with Session(self.engine) as session:
            audit.record(session, "input", None, "auto_reply")
            session.commit()
        mark_source(self.engine, source_key, None, "auto_reply")
        log.info("an automatic reply was set aside (%s)", source_key)
        return Outcome("auto_reply")

    def take_bounce(self, source_key: str, bounce: Bounce) -> Outcome:
        """Record a bounce against the mail it refers to (an unmatched one is counted in the
        audit log); it is not a report and is not kept."""
        matched = record_bounce(self.engine, bounce)
        mark_source(self.engine, source_key, None, "bounce")
        for target, reference in matched:
            log.warning("%s mail to %s: %s (%s)", reference, target, bounce.action, bounce.status)
            if bounce.permanent:
                subject = f"{reference}: mail to {target} bounced"
                text = (
                    f"The mail for {reference} to {target} bounced (status {bounce.status}). "
                    "Check the address (services.yaml for a service); see intake status."
                )
                raise_alert(self.engine, self.config, f"bounce:{reference}:{target}", subject, text)
        if not matched:
            log.info("a bounce for mail we do not know (%s) was recorded", bounce.status)
        return Outcome("bounce")

    def _apply_anonymity(self, report: Report, raw: bytes, *, forced: bool) -> bytes:
        if report.ack_address and AckPolicy.from_config(self.config).is_own(report.ack_address):
            report.ack_address = None  # never acknowledge the intake itself (mail loops)
        intake = self.config.intake
        addresses, marker = intake.anonymous_addresses, intake.anonymous_subject_marker
        limits = self.config.limits
        return apply_anonymity(report, raw, addresses, marker, forced=forced, limits=limits)

    def _quarantine_email(
        self,
        source_key: str,
        fingerprint: str,
        raw: bytes,
        error: ParseError,
        received_at: datetime,
        anonymous: bool,
    ) -> Outcome:
        """Quarantine a message that cannot be read. One sent to an anonymous address is kept
        without its identifying headers and is never written to."""
        intake = self.config.intake
        acks = AckPolicy.from_config(self.config)  # own addresses in any form, echoes, DMARC
        headers = report_from_headers(raw, received_at, limits=self.config.limits, acks=acks)
        # Fail closed: the subject as the raw reader and as the header parser decode it (a
        # charset only one of them knows must not hide the anonymous marker).
        subjects = {raw_subject(raw), headers.subject if headers else ""}
        marker, addresses = intake.anonymous_subject_marker, intake.anonymous_addresses
        anonymous = (
            anonymous
            or any(is_anonymous_message(raw, s, addresses, marker) for s in subjects)
            or bool(anonymous_thread(self.engine, *raw_thread_of(raw)))
        )
        notify = self._too_large_notice(headers) if error.limit and not anonymous else None
        original = quarantined_original(raw, self.config.limits) if anonymous else raw
        return self.quarantine(
            source_key,
            fingerprint,
            original,
            error.reason,
            "email",
            received_at,
            notify,
            anonymous=anonymous,
            # the rules find it urgent from its headers alone (its subject): an urgent alert
            urgent=headers is not None and evaluate(self.rules, headers).urgent,
        )

    @one_input
    def quarantine(
        self,
        source_key: str,
        fingerprint: str,
        raw: bytes,
        reason: str,
        source: str,
        received_at: datetime,
        notify: Report | None = None,
        *,
        anonymous: bool = False,
        urgent: bool = False,
    ) -> Outcome:
        """Keep an input that cannot be processed, encrypted, with the reason; `notify` is a
        named sender to tell that the message arrived but was too large to open. An
        `anonymous` input's row keeps its time to the hour only; an `urgent` one alerts."""
        moment = to_the_hour(received_at) if anonymous else received_at
        row = _report_row(source, fingerprint, moment, ReportState.QUARANTINED)
        row.reason = reason
        row.anonymous = anonymous
        row.urgent = urgent
        records = {"original": self._encrypt_record(raw)}

        def build(reference: str) -> tuple[dict[str, bytes], list[OutboxRow]]:
            if notify is None:
                return records, []
            notice = Decision(None, False, False, [], TOO_LARGE_TEMPLATE, [])
            return records, [self._acknowledgement(reference, notify, notice)]

        reference = save_report(self.engine, row, source_key, build)
        if reference is None:
            return self.take_duplicate(source_key, report_by_fingerprint(self.engine, fingerprint))
        log.warning("%s quarantined: %s", reference, reason, extra={"reference": reference})
        stuck = Unreached(reference, ReportState.QUARANTINED, reason, urgent)
        alert_unreached(self.engine, self.config, stuck)
        return Outcome("quarantined", reference, reason, anonymous=anonymous)

    def _too_large_notice(self, headers: Report | None) -> Report | None:
        """The named sender of a message refused by a limit (`headers`: its report read from
        the headers alone, of a message found not anonymous), when the rules would acknowledge
        it and the `ack-too-large` template exists."""
        if TOO_LARGE_TEMPLATE not in self.renderer.names:
            return None
        if headers is None or headers.ack_address is None:
            return None
        return headers if evaluate(self.rules, headers).acknowledge else None

    @one_input
    def take_report(
        self,
        report: Report,
        source_key: str,
        fingerprint: str,
        original: bytes,
        *,
        release: Release | None = None,
    ) -> Outcome:
        """Route, render, encrypt and store a parsed report (email or form); with `release`,
        into the quarantined report it was (see `release_report`)."""
        decision = evaluate(self.rules, report)
        if report.anonymous:
            forget_circumstances(report, AckPolicy.from_config(self.config).is_own)
        report.category = decision.category
        report.urgent = decision.urgent
        report.reporter_role = decision.reporter_role or report.reporter_role
        row = _report_row(report.source, fingerprint, report.received_at, ReportState.ROUTED)
        row.form_id = report.form_id
        row.category = decision.category
        row.anonymous = report.anonymous
        row.urgent = decision.urgent
        row.decision = decision_json(decision.refer, decision.acknowledge, decision.rules)
        record = self._encrypt_record(bundle_record(report.to_record(), original))
        clean_attachments(report, self.config.limits.archive_bytes)  # for the referral only
        screen_attachments(report, self.config.attachments.withhold)  # named: no programs
        acknowledge = bool(
            decision.acknowledge and report.ack_address and self.limiter.allow(report.ack_address)
        )
        counted = [self.limiter.entry(report.ack_address or "")] if acknowledge else []
        queued: list[tuple[str, str, str | None]] = []  # kind, target, why held (read pre-commit)

        def build(reference: str) -> tuple[dict[str, bytes], list[OutboxRow]]:
            outbox = self._outbox(reference, report, decision, acknowledge)
            queued.extend((r.kind, r.target, _held_reason(r)) for r in outbox)
            row.state = _report_state(decision.refer, outbox)
            return {BUNDLE: record}, outbox

        try:
            reference = self._commit(row, source_key, build, release, counted)
        except RenderError as exc:
            self._template_failed(exc)
            raise
        if reference is None:
            if release is not None:
                return Outcome("seen")  # not quarantined any more: another release came first
            return self.take_duplicate(source_key, report_by_fingerprint(self.engine, fingerprint))
        self._alert_unreached(reference, decision, queued)
        status = "stored" if decision.refer else "unrouted"
        log.info(
            "%s %s, %d mail queued", reference, status, len(queued), extra={"reference": reference}
        )
        return Outcome(status, reference, anonymous=report.anonymous)

    def _template_failed(self, error: RenderError) -> None:
        """A template that fails while rendering a report: nothing of it was committed, so it
        waits in its source and is taken in once the template is fixed. Listed by `intake
        status` (kind `template`) and alerted, naming the template's file and line."""
        log.error("a template failed: %s", error)
        record_routing(self.engine, "template", str(error))
        subject = "a template fails while rendering: reports wait in their source"
        text = (
            f"{error}\n\nNothing is lost: the report stays in its source (the mailbox, the "
            "export folder) and is taken in again at every poll, once the template is fixed. "
            "Run intake check-rules, then fix the line named above."
        )
        key = hourly_key("template-render", hashlib.sha256(str(error).encode()).hexdigest()[:16])
        raise_alert(self.engine, self.config, key, subject, text, kind="template")

    def _alert_unreached(
        self, reference: str, decision: Decision, queued: list[tuple[str, str, str | None]]
    ) -> None:
        """Alert about each held referral, or a report the rules refer to nobody."""
        urgent = decision.urgent
        stuck = [
            Unreached(reference, ReportState.HELD, held, urgent, service)
            for _, service, held in queued
            if held
        ]
        if not decision.refer:
            rules = ", ".join(decision.rules)
            matched = f"rules matched: {rules}" if rules else "no rule matched"
            stuck.append(Unreached(reference, ReportState.UNROUTED, matched, urgent))
        for item in stuck:
            alert_unreached(self.engine, self.config, item)

    def _encrypt_record(self, data: bytes) -> bytes:
        return self.crypto.encrypt(data, list(self.config.gpg.records_keys))

    def _outbox(
        self, reference: str, report: Report, decision: Decision, acknowledge: bool
    ) -> list[OutboxRow]:
        crash_point("in-gpg")
        rows = [self._referral(reference, report, decision, sid) for sid in decision.refer]
        if acknowledge:
            rows.append(self._acknowledgement(reference, report, decision))
        return rows

    def _referral(
        self, reference: str, report: Report, decision: Decision, service_id: str
    ) -> OutboxRow:
        service = self.rules.services[service_id]
        sender = self.config.smtp.from_
        message_id = new_message_id(sender)
        context = referral_context(
            reference, report, decision, service, zone=self.config.display.zone
        )
        rendered = self.renderer.render(service.template_name, context)
        row = OutboxRow(
            report_id=0,
            kind="referral",
            target=service.id,
            message_id=message_id,
            recipient=service.email,
            urgent=decision.urgent,
        )
        try:
            row.payload = build_referral(
                self.crypto,
                fingerprint=service.fingerprint,
                sender=sender,
                recipient=service.email,
                outer_subject=referral_subject(
                    reference, decision.urgent, self.config.referrals.urgent_marker
                ),
                message_id=message_id,
                rendered=rendered,
                attachments=report.attachments,
                urgent=decision.urgent,
            )
        except KeyUnusableError as exc:
            log.error("%s referral to %s held: %s", reference, service.id, exc)
            row.state = OutboxState.HELD
            row.last_error = str(exc)
            inner = referral_inner_bytes(rendered, report.attachments)
            row.sealed = self.crypto.encrypt_for_outbox(inner)
        return row

    def _acknowledgement(self, reference: str, report: Report, decision: Decision) -> OutboxRow:
        assert decision.acknowledge and report.ack_address
        sender = self.config.smtp.from_
        message_id = new_message_id(sender)
        services = [self.rules.services[s].name for s in decision.refer]
        context = ack_context(reference, report.anonymous, decision.urgent, services)
        rendered = self.renderer.render(decision.acknowledge, context)
        anonymous_addresses = self.config.intake.anonymous_addresses
        reply_to = anonymous_addresses[0] if report.anonymous and anonymous_addresses else None
        payload = build_acknowledgement(sender, message_id, rendered, reply_to=reply_to)
        return OutboxRow(
            report_id=0,
            kind="ack",
            target="reporter",
            message_id=message_id,
            sealed=self.crypto.encrypt_for_outbox(report.ack_address.encode()),
            payload=self.crypto.encrypt_for_outbox(payload),
            urgent=decision.urgent,
        )

    # -- Release from quarantine: a quarantined input taken in again, as the report it was ----

    def _commit(
        self,
        row: ReportRow,
        source_key: str,
        build: Build,
        release: Release | None,
        counted: list[AckSent],
    ) -> str | None:
        """Insert a new report, or (`release`) update the quarantined report in place; with it,
        in the same transaction, the acknowledgement it `counted` against the rate limit."""
        if release is None:
            return save_report(self.engine, row, source_key, build, counted)
        return release_report(self.engine, release.report_id, release.actor, row, build, counted)

    def quarantined_input(self, source_keys: list[str]) -> ReportRow | None:
        """The quarantined report an input (by any of its source keys) was taken in as."""
        return quarantined_input(self.engine, source_keys)

    def release_email(self, quarantined: ReportRow, raw: bytes, actor: str) -> Outcome:
        """Take a quarantined message in again under the current config, rules and limits.
        `raw` is the original as stored (an anonymous one without its identifying header
        fields: it stays anonymous). It keeps its reference and received time; a message
        that still cannot be read stays quarantined with the new reason. A keyholder chose to
        release it, so it is taken as a report (no bounce or automatic-reply check)."""
        limits = self.config.limits
        try:
            msg = read_message(raw, limits=limits)
            acks = AckPolicy.from_config(self.config)
            received_at = as_utc(quarantined.received_at)
            report = report_from_message(msg, received_at, limits=limits, acks=acks)
        except ParseError as exc:
            return self.still_quarantined(quarantined, exc.reason, actor)
        report.follows = anonymous_thread(self.engine, *thread_of(msg, report.subject))
        forced = quarantined.anonymous or bool(report.follows)
        original = self._apply_anonymity(report, raw, forced=forced)
        return self.release_report(quarantined, report, original, actor)

    @one_input
    def release_report(
        self, quarantined: ReportRow, report: Report, original: bytes, actor: str
    ) -> Outcome:
        """Route, render, encrypt and store a report read from a quarantined input, into the
        quarantined report (`store.release_report`). A reporter already written to about it
        (the too-large notice) is not acknowledged again: one mail per report and target."""
        assert quarantined.id is not None
        if report.ack_address and has_acknowledgement(self.engine, quarantined.id):
            report.ack_address = None
        release = Release(quarantined.id, actor)
        return self.take_report(report, "", quarantined.fingerprint, original, release=release)

    def still_quarantined(self, quarantined: ReportRow, reason: str, actor: str) -> Outcome:
        """A released input that still cannot be read: it stays quarantined, with `reason`."""
        assert quarantined.id is not None
        keep_quarantined(self.engine, quarantined.id, reason, actor)
        log.warning("%s is still quarantined: %s", quarantined.reference, reason)
        anonymous = quarantined.anonymous
        return Outcome("quarantined", quarantined.reference, reason, anonymous=anonymous)


def forget_circumstances(report: Report, is_own: Callable[[str], bool]) -> None:
    """What could still single out an anonymous sender: who else was written to (a friend in
    Cc) and exact times, which a mail server's delivery log would match. Times are kept to the
    hour (like the stored original's Date), in UTC."""
    report.to_addresses = [address for address in report.to_addresses if is_own(address)]
    report.received_at = to_the_hour(report.received_at)
    report.sent_at = to_the_hour(report.sent_at) if report.sent_at else None


def _report_row(source: str, fingerprint: str, received_at: datetime, state: str) -> ReportRow:
    utc = received_at.astimezone(UTC)
    return ReportRow(
        source=source,
        fingerprint=fingerprint,
        received_at=utc,
        month=utc.strftime("%Y-%m"),
        state=state,
    )


def _held_reason(row: OutboxRow) -> str | None:
    return row.last_error if row.state == OutboxState.HELD else None


def _report_state(refer: list[str], outbox: list[OutboxRow]) -> str:
    """`unrouted` when the rules refer it to no service (whatever else is sent, such as an
    acknowledgement); `held` while a referral waits for a usable key; else `queued`."""
    if not refer:
        return ReportState.UNROUTED
    if any(row.state == OutboxState.HELD for row in outbox):
        return ReportState.HELD
    return ReportState.QUEUED
