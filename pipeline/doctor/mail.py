"""Doctor checks of the mail servers: a loaded `Config` in, `Check`s out.

IMAP: one session signed in as the daemon signs in (`intake.imap.connect`: TLS verified,
password or OAuth2), then each folder the daemon uses, the capabilities it relies on (MOVE,
UIDPLUS, IDLE; a missing one is a warning saying what changes) and this machine's clock against
the server's. Folders are opened read-only (EXAMINE): nothing in the mailbox changes. SMTP:
connect, TLS and sign-in as the outbox does (`SmtpTransport.session`), then EHLO; no mail is
sent.

The clock: IMAP has no command that tells the time. With the WITHIN search extension (RFC
5032) the server evaluates `YOUNGER n` against its own clock, so bisecting n for one message
gives that message's age by the server's clock, and with its INTERNALDATE the server's time, to
about a second. Only the INTERNALDATE of the newest message of a polled folder is read. Without
WITHIN a time in the server's greeting is used (some servers write one); without either the
check is skipped, saying why.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from email.utils import parsedate_to_datetime
from socket import socket

from imapclient import IMAPClient

from pipeline.config import Config, ConfigError, ImapConfig, SmtpConfig
from pipeline.deliver import SendError, SmtpTransport
from pipeline.doctor.result import FAIL, PASS, SKIP, WARN, Check
from pipeline.intake import describe
from pipeline.intake.imap import connect, connect_error, keep_folder, polled_folders, server

CAPABILITIES = {
    "MOVE": "kept originals are moved with COPY, \\Deleted and UID EXPUNGE instead (RFC 6851)",
    "UIDPLUS": "nothing can be expunged safely, so taken messages stay in the mailbox flagged "
    "\\Deleted until an admin expunges them (RFC 4315)",
    "IDLE": "new mail waits for the next poll (schedule.poll_seconds) (RFC 2177)",
}
SKEW_WARN = 30.0  # seconds between the clocks: a warning from here
SKEW_FAIL = 300.0  # and a failure from here (OAuth2 and TLS allow about five minutes)
MAX_AGE = 400 * 86400  # a message older than this (by either clock) is not used to time
CLOCK_FIX = (
    "synchronise the clocks (timedatectl set-ntp true, or chrony): key expiry, OAuth2 tokens, "
    "retention and the times in referrals go by this machine's clock"
)
_DATE = re.compile(rb"(?:[A-Z][a-z]{2}, )?\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
NO_SESSION = ("imap folders", "imap capabilities", "clock")
Clock = Callable[[], float]


def _tls(sock: socket | None, security: str) -> str:
    if isinstance(sock, ssl.SSLSocket):
        return f"{sock.version()} ({security}), certificate verified"
    return 'no TLS (security = "none", loopback)'


def check_imap(config: Config) -> list[Check]:
    imap = config.imap
    if imap is None:
        return [Check("imap", SKIP, "no [imap] in the config")]
    connected_at = time.time()
    try:
        client = connect(imap)
    except Exception as exc:  # what connect_error makes of it names the key to check
        detail, fix = split_fix(str(connect_error(imap, exc)))
        fix = fix or f"make {imap.credential_key} readable (see its line)"
        skipped = [Check(name, SKIP, "not checked: no IMAP session") for name in NO_SESSION]
        return [Check("imap", FAIL, detail, fix), *skipped]
    try:
        tls = _tls(client.socket(), imap.security)
        signed_in = f"signed in as {imap.username} ({imap.auth})"
        folders = [folder.name for folder in polled_folders(imap)]
        return [
            Check("imap", PASS, f"{server(imap)}: {tls}, {signed_in}"),
            *_guarded(imap, "imap folders", lambda: _folders(imap, client)),
            *_guarded(imap, "imap capabilities", lambda: [_capabilities(imap, client)]),
            *_guarded(imap, "clock", lambda: [clock_check(client, folders, connected_at)]),
        ]
    finally:
        with suppress(Exception):
            client.logout()


def _guarded(imap: ImapConfig, name: str, run: Callable[[], list[Check]]) -> list[Check]:
    """A step of the session; a connection lost or a protocol error fails this step only."""
    try:
        return run()
    except (OSError, IMAPClient.Error) as exc:
        fix = "check imap.timeout_seconds and the server's health, then run doctor again"
        return [Check(name, FAIL, f"{server(imap)}: {describe(exc)}", fix)]


def _folder(client: IMAPClient, imap: ImapConfig, name: str, key: str) -> Check:
    label = f"imap folder {name}"
    if not client.folder_exists(name):
        detail = f'no folder "{name}" in the mailbox of {imap.username} ({key})'
        return Check(label, FAIL, detail, f"create it, or correct {key}")
    count = client.select_folder(name, readonly=True).get(b"EXISTS", 0)
    return Check(label, PASS, f'"{name}" can be read, {count} message(s) ({key})')


def _folders(imap: ImapConfig, client: IMAPClient) -> list[Check]:
    """The polled folders are there and can be read; the processed folder is there."""
    checks = []
    for folder in polled_folders(imap):
        key = "imap.folder" if folder.name == imap.folder else "imap.anonymous_folders"
        checks.append(_folder(client, imap, folder.name, key))
    try:
        kept = keep_folder(imap)
    except ConfigError as exc:
        fix = "name a folder of its own in imap.processed_folder"
        return [*checks, Check("imap processed_folder", FAIL, str(exc), fix)]
    if kept is not None and client.folder_exists(kept):
        checks.append(Check(f"imap folder {kept}", PASS, f'"{kept}" is there (processed_folder)'))
    elif kept is not None:
        detail = f'no folder "{kept}" yet (imap.processed_folder)'
        fix = "create it, or let the daemon make it at its next poll"
        checks.append(Check(f"imap folder {kept}", WARN, detail, fix))
    return checks


def _offered(client: IMAPClient) -> set[str]:
    return {to_text(name).upper() for name in client.capabilities()}


def to_text(value: bytes | str) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _capabilities(imap: ImapConfig, client: IMAPClient) -> Check:
    offered = _offered(client)
    missing = [name for name in CAPABILITIES if name not in offered]
    if not missing:
        return Check("imap capabilities", PASS, f"{', '.join(CAPABILITIES)} offered")
    detail = "; ".join(f"no {name}: {CAPABILITIES[name]}" for name in missing)
    fix = "ask the mail admins whether the server can offer it; nothing to change here"
    if "IDLE" in missing and imap.idle:
        fix = "set imap.idle = false, and keep schedule.poll_seconds short"
    return Check("imap capabilities", WARN, detail, fix)


def clock_check(
    client: IMAPClient,
    folders: list[str],
    connected_at: float,
    now: Clock = time.time,
) -> Check:
    """The server's clock against this machine's (`now`), see the module docstring."""
    why = "the server offers no WITHIN search (RFC 5032)"
    if "WITHIN" in _offered(client):
        for folder in folders:
            skew = within_skew(client, folder, now)
            if skew is not None:
                return _skew(skew, f"timed by a message in {folder}")
        why = "no message in the polled folders to time"
    greeting = greeting_time(client.welcome)
    if greeting is not None:
        return _skew(greeting - connected_at, "by the time in the server's greeting")
    return Check("clock", SKIP, f"{why}, and its greeting names no time: nothing to compare")


def _skew(seconds: float, how: str) -> Check:
    side = "ahead of" if seconds > 0 else "behind"
    detail = f"the server's clock is {abs(seconds):.0f} s {side} this machine's ({how})"
    if abs(seconds) < 1:
        detail = f"the server's clock and this machine's agree to a second ({how})"
    if abs(seconds) < SKEW_WARN:
        return Check("clock", PASS, detail)
    return Check("clock", WARN if abs(seconds) < SKEW_FAIL else FAIL, detail, CLOCK_FIX)


def greeting_time(welcome: bytes | None) -> float | None:
    """A date-time (RFC 5322) in the server's greeting, as epoch seconds; None when none."""
    found = _DATE.search(welcome or b"")
    if found is None:
        return None
    try:
        return parsedate_to_datetime(found.group().decode("ascii")).timestamp()
    except (TypeError, ValueError):
        return None


def within_skew(client: IMAPClient, folder: str, now: Clock) -> float | None:
    """Seconds the server's clock is ahead of `now` (negative: behind), timed by the newest
    message in `folder`; None when the folder is empty or the message went meanwhile."""
    if not client.folder_exists(folder):
        return None
    client.select_folder(folder, readonly=True)
    uids = client.search(["ALL"])
    if not uids:
        return None
    uid = max(uids)
    internal = client.fetch([uid], ["INTERNALDATE"]).get(uid, {}).get(b"INTERNALDATE")
    if not isinstance(internal, datetime):
        return None
    stamp = internal.timestamp()  # a naive value is local time, as imapclient normalises it
    age = server_age(client, uid, now() - stamp)
    if age is None or not client.search(["UID", str(uid)]):
        return None
    return stamp + age - now()


def server_age(client: IMAPClient, uid: int, guess: float) -> float | None:
    """The message's age by the server's clock, to a second: the least n for which the server
    finds it YOUNGER than n seconds, bracketed around `guess` (its age by our clock)."""

    def younger(seconds: int) -> bool:
        return bool(client.search(["UID", str(uid), "YOUNGER", str(seconds)]))

    centre, step = max(1, round(guess)), 4
    low, high = max(1, centre - step), centre + step  # wanted: not younger(low), younger(high)
    while younger(low):
        if low == 1:
            return 0.5
        step *= 4
        low = max(1, centre - step)
    while not younger(high):
        if high > MAX_AGE:
            return None
        step *= 4
        high = centre + step
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if younger(middle) else (middle, high)
    return low + 0.5


def split_fix(message: str) -> tuple[str, str]:
    """A message ending `...: check KEYS` as (what was found, `check KEYS`); no fix: ""."""
    found, _, keys = message.partition(": check ")
    return found, f"check {keys}" if keys else ""


def smtp_failure(name: str, smtp: SmtpConfig, error: SendError) -> Check:
    """A failed SMTP session as a check line, with the keys to check."""
    found, fix = split_fix(str(error))
    if not fix and error.fault:
        fix = f"check {error.fault}"
    elif not fix:
        fix = "check smtp.host, smtp.port and smtp.security (is the server up?)"
    return Check(name, FAIL, f"{smtp.host}:{smtp.port}: {found}", fix)


def _smtp_session(smtp: SmtpConfig, client: smtplib.SMTP) -> str:
    client.ehlo_or_helo_if_needed()
    tls = _tls(client.sock, smtp.security)
    signed_in = f"signed in as {smtp.username} ({smtp.auth})" if smtp.signs_in else "no sign-in"
    return f"{smtp.host}:{smtp.port}: {tls}, {signed_in}, EHLO answered; no mail sent"


def check_smtp(config: Config) -> list[Check]:
    """Connect, TLS, sign in and EHLO as the outbox would; nothing is sent."""
    smtp = config.smtp
    try:
        with SmtpTransport(smtp).session() as client:
            detail = _smtp_session(smtp, client)
    except SendError as exc:
        return [smtp_failure("smtp", smtp, exc)]
    except (smtplib.SMTPException, OSError) as exc:
        fix = "check smtp.host, smtp.port and smtp.security"
        return [Check("smtp", FAIL, f"{smtp.host}:{smtp.port}: {describe(exc)}", fix)]
    return [Check("smtp", PASS, detail)]
