"""Acknowledgements: a parsed message and its sender in; whether it is an automatic reply (not a
report at all) and why no acknowledgement may go to its sender (or None) out.

An acknowledgement goes only to a person who wrote. Never to:
- the intake itself: an intake, anonymous or `[smtp] from` address in any case or plus-variant
  (`report+x@`), nor mailer daemons and no-reply addresses;
- an echo of our own mail: it carries our `X-Report-Intake` header, its Message-ID or
  In-Reply-To/References name a Message-ID we made (our domain, `make_msgid`'s shape), or its
  subject carries a reference (`R-2026-000123`: an echo, or a follow-up);
- automatic mail: RFC 3834 `Auto-Submitted` (any value but "no"), `X-Autoreply`,
  `X-Autorespond`, `X-Autoresponder`, `Precedence: auto_reply/bulk/list/junk`, mailing lists,
  and what Exchange mailbox rules send (`X-MS-Exchange-Inbox-Rules-Loop`,
  `X-MS-Exchange-Generated-Message-Source`). `X-Auto-Response-Suppress` says nothing: Outlook
  sets it on ordinary mail;
- a sender the receiving host could not verify, when `[intake] authserv_id` names that host:
  the topmost `Authentication-Results` with that authserv-id (RFC 8601; later ones may be the
  sender's forgeries) must exist, must not say `dmarc=fail`, and must say dmarc, dkim or spf
  `pass`.

`auto_reply_reason` is narrower: an out-of-office or vacation reply (Gmail: `X-Autoreply: yes` and
`Auto-Submitted: auto-replied`; Exchange: "Automatic reply:" with its rule headers) is not
taken as a report. `Auto-Submitted: auto-generated` alone (web-form mailers set it) stays a
report: when in doubt a message is a report. Pure functions; never raise for any input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from email.utils import parseaddr

from pipeline.config import Config
from pipeline.mime import raw_values
from pipeline.recipients import Unreadable, decoded_text, header_fields

MAX_HEADER_CHARS = 8192  # an Authentication-Results field longer than this is not read
MAX_RESULTS = 64  # resinfo entries read from one field
MAX_FIELDS = 32  # Authentication-Results fields looked at, topmost first

NO_ACK_LOCALPARTS = frozenset(
    {"mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply", "do-not-reply"}
)
AUTOREPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
RULE_HEADERS = ("X-MS-Exchange-Inbox-Rules-Loop", "X-MS-Exchange-Generated-Message-Source")
ECHO_HEADER = "X-Report-Intake"
REFERENCE = re.compile(r"(?<![\w-])R-\d{4}-\d{6,}(?!\w)")
AUTO_REPLY_SUBJECT = re.compile(
    r"\s*(?:automatic reply|auto(?:matic)?[ -]?(?:response|reply)|out of (?:the )?office"
    r"(?: reply)?|abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique"
    r"|respuesta autom[áa]tica|risposta automatica|automatisch antwoord|automatisk svar"
    r"|autosvar)\s*:",
    re.I,
)
_KEYWORD = re.compile(r"\s*([A-Za-z0-9_.-]*)")
_METHOD = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*(?:/\s*\d+\s*)?=\s*([A-Za-z0-9_-]+)")


# --- header fields ----------------------------------------------------------------------------


def _keyword(msg: Message, name: str) -> str | None:
    """The first word of the first `name` field, lower-cased ("" when empty), or None."""
    values = raw_values(msg, name)
    if not values:
        return None
    found = _KEYWORD.match(values[0][:200])
    return found.group(1).lower() if found else ""


def _present(msg: Message, names: Iterable[str]) -> str | None:
    """The first of `names` the message carries."""
    return next((name for name in names if raw_values(msg, name)), None)


def _precedence(msg: Message) -> str | None:
    return _keyword(msg, "Precedence") or _keyword(msg, "X-Precedence")


# --- automatic replies ------------------------------------------------------------------------


def auto_reply_reason(msg: Message, subject: str) -> str | None:
    """Why this message is an automatic reply (out of office, vacation), or None. An automatic
    reply is recorded and counted, not taken as a report."""
    auto_submitted = _keyword(msg, "Auto-Submitted")
    if auto_submitted == "auto-replied":
        return "Auto-Submitted: auto-replied"
    for name in AUTOREPLY_HEADERS:
        value = _keyword(msg, name)
        if value is not None and value not in {"no", "false", "0"}:
            return name
    if _precedence(msg) == "auto_reply":
        return "Precedence: auto_reply"
    automatic = _present(msg, RULE_HEADERS) or auto_submitted not in (None, "no")
    if automatic and AUTO_REPLY_SUBJECT.match(subject[:200]):
        return "an out-of-office subject from a mail rule"
    return None


# --- why not acknowledge ----------------------------------------------------------------------


def base_address(address: str) -> str:
    """`Report+x@Uni.example` → `report@uni.example`: the local part before "+", lower-cased."""
    local, _, domain = address.strip().lower().rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def message_reason(msg: Message, sender: str | None, subject: str) -> str | None:
    """Why no acknowledgement may go to this message's sender, judged from the message alone."""
    if sender is None:
        return "no usable sender address"
    if sender.partition("@")[0] in NO_ACK_LOCALPARTS:
        return "the sender does not take replies"
    if raw_values(msg, ECHO_HEADER):
        return "it carries our own acknowledgement's header (an echo)"
    if REFERENCE.search(subject[:1000]):
        return "its subject carries a reference (an echo or a follow-up)"
    if _keyword(msg, "Auto-Submitted") not in (None, "no"):
        return "auto-submitted"
    if auto_reply_reason(msg, subject):
        return "an automatic reply"
    if _precedence(msg) in {"bulk", "list", "junk", "auto_reply"}:
        return "bulk or list mail"
    if raw_values(msg, "List-Id") or raw_values(msg, "List-Unsubscribe"):
        return "mailing-list mail"
    if _present(msg, RULE_HEADERS):
        return "sent by a mailbox rule"
    return None


@dataclass(frozen=True)
class AckPolicy:
    """What a deployment adds to `message_reason`: its own addresses (base form), the domain of
    the Message-IDs it makes, and the receiving host whose Authentication-Results it trusts."""

    own: frozenset[str] = frozenset()
    domain: str | None = None
    authserv_id: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> AckPolicy:
        sender = parseaddr(config.smtp.from_)[1]
        own = {base_address(a) for a in {*config.own_addresses, sender} if "@" in a}
        domain = sender.rpartition("@")[2].lower() or None
        return cls(frozenset(own), domain, (config.intake.authserv_id or "").lower() or None)

    def answers_us_automatically(self, msg: Message) -> bool:
        """Automatic mail (Auto-Submitted other than "no") about mail we sent, such as a
        service helpdesk's ticket receipt for a referral: taken as a report, it would be
        referred back to that service, which would answer again (a loop)."""
        automatic = _keyword(msg, "Auto-Submitted") not in (None, "no")
        return automatic and self.domain is not None and names_our_message(msg, self.domain)

    def is_own(self, address: str) -> bool:
        return base_address(address) in self.own

    def blocked_reason(self, msg: Message, sender: str | None, subject: str) -> str | None:
        """Why no acknowledgement may go to `sender`, or None when one may."""
        reason = message_reason(msg, sender, subject)
        if reason is not None or sender is None:
            return reason
        if self.is_own(sender):
            return "the sender is the intake itself"
        if self.domain and names_our_message(msg, self.domain):
            return "it refers to mail we sent (an echo or a follow-up)"
        if self.authserv_id and not sender_verified(msg, self.authserv_id):
            return "the receiving host did not verify the sender"
        return None


_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")
THREAD_FIELDS = ("In-Reply-To", "References")
MAX_THREAD_IDS = 100  # Message-IDs read from In-Reply-To and References


def thread_of(msg: Message, subject: str) -> tuple[list[str], list[str]]:
    """The references (`R-2026-000123`) in the subject and the Message-IDs the message replies
    to (In-Reply-To, References): what ties it to earlier mail of ours."""
    values = [value for name in THREAD_FIELDS for value in raw_values(msg, name)]
    return _thread(subject, values)


def raw_thread_of(raw: bytes) -> tuple[list[str], list[str]]:
    """`thread_of` for a message that cannot be parsed: read from its top header fields."""
    fields = list(header_fields(raw) or ())
    values = [v.decode("utf-8", "replace") for n, v in fields if n in {"in-reply-to", "references"}]
    return _thread(raw_subject(raw), values)


def raw_subject(raw: bytes) -> str:
    """The top Subject of a message that cannot be parsed, encoded words decoded where they
    can be ("" when there is none)."""
    for name, value in header_fields(raw) or ():
        if name == "subject":
            text = value.decode("utf-8", "replace")
            try:
                return decoded_text(text)
            except Unreadable:
                return text
    return ""


def _thread(subject: str, values: list[str]) -> tuple[list[str], list[str]]:
    references = REFERENCE.findall(subject[:1000])[:20]
    ids = [found for value in values for found in _MESSAGE_ID.findall(value[:MAX_HEADER_CHARS])]
    return references, ids[:MAX_THREAD_IDS]


def names_our_message(msg: Message, domain: str) -> bool:
    """Whether Message-ID, In-Reply-To or References names a Message-ID we made: `make_msgid`'s
    shape (`<digits.digits.digits@domain>`) at our sender domain."""
    ours = re.compile(rf"<\d+\.\d+\.\d+@{re.escape(domain)}>", re.I)
    for name in ("Message-ID", "In-Reply-To", "References"):
        if any(ours.search(value[:MAX_HEADER_CHARS]) for value in raw_values(msg, name)):
            return True
    return False


# --- Authentication-Results (RFC 8601) --------------------------------------------------------


@dataclass(frozen=True)
class AuthResults:
    """One Authentication-Results field: who wrote it and its (method, result) pairs."""

    authserv_id: str
    results: tuple[tuple[str, str], ...]

    def says(self, method: str, result: str) -> bool:
        return (method, result) in self.results


def _segments(value: str) -> list[str]:
    """The field split at ";" outside quoted strings, with comments (nested too) removed."""
    segments: list[str] = []
    current: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                current.append(char)
        elif char == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = char != '"'
            if quoted:
                current.append(char)
        elif char == "(":
            depth += 1
        elif depth:
            depth -= char == ")"
            if not depth:
                current.append(" ")
        elif char == '"':
            quoted = True
        elif char == ";":
            segments.append("".join(current))
            current = []
        else:
            current.append(char)
    segments.append("".join(current))
    return segments


def parse_authentication_results(value: str) -> AuthResults | None:
    """An Authentication-Results field value, or None when it cannot be read: too long, or no
    authserv-id (a field that starts with a result, as Exchange Online writes it)."""
    if len(value) > MAX_HEADER_CHARS:
        return None
    segments = _segments(value)
    head = segments[0].split()
    if not head or "=" in head[0]:
        return None
    results: list[tuple[str, str]] = []
    for segment in segments[1 : MAX_RESULTS + 1]:
        found = _METHOD.match(segment)
        if found:
            results.append((found.group(1).lower(), found.group(2).lower()))
    return AuthResults(head[0].lower(), tuple(results))


def trusted_results(msg: Message, authserv_id: str) -> AuthResults | None:
    """The topmost Authentication-Results field written by `authserv_id` (any case), or None.
    Fields below it may have come with the message, so only the topmost one counts."""
    wanted = authserv_id.strip().lower()
    for value in raw_values(msg, "Authentication-Results")[:MAX_FIELDS]:
        parsed = parse_authentication_results(value)
        if parsed is not None and parsed.authserv_id == wanted:
            return parsed
    return None


def sender_verified(msg: Message, authserv_id: str) -> bool:
    """Whether our receiving host verified the sender: no dmarc=fail, and dmarc, dkim or spf
    passed. No field from that host counts as not verified."""
    found = trusted_results(msg, authserv_id)
    if found is None or found.says("dmarc", "fail"):
        return False
    return any(found.says(method, "pass") for method in ("dmarc", "dkim", "spf"))
