"""IMAP intake: a mailbox in, raw messages out (RFC 3501, with MOVE RFC 6851 and UIDPLUS RFC 4315).

One connection per poll selects the intake folder (`imap.folder`), then each anonymous folder
(`imap.anonymous_folders`) in turn. Every message in an anonymous folder is taken as anonymous,
whatever its headers say. Messages are found by UID (`SEARCH NOT DELETED`, never by \\Seen),
taken in UID order in batches of `imap.batch_size` and keyed
`imap:<user>@<host>/<folder>:<UIDVALIDITY>:<UID>`. A batch's sizes (`RFC822.SIZE`) come first;
its messages are then fetched with `BODY.PEEK[]` in groups of at most `GROUP_BYTES` (a larger
message alone), with a sign of life (`Ingest.alive`) before each group: a backlog of large
messages never keeps the poll silent for longer than one group takes to arrive (the daemon's
watchdog), and only one group is held in memory at a time.

A message leaves its folder only after its report is committed, and by default nothing is kept:
it is flagged \\Deleted and removed with UID EXPUNGE (only our own UIDs). Keeping originals is
opt-in (`processed_folder` set, `delete_processed` false), and even then only a named report
that was stored is moved there (MOVE, or COPY + \\Deleted + UID EXPUNGE); anonymous reports,
quarantined mail, duplicates, bounces and the like are always expunged. Without UIDPLUS
nothing is expunged: the messages stay flagged \\Deleted (never a bare EXPUNGE that could
remove someone else's mail) and a notice asks an admin to expunge them.

A mailbox that cannot be reached or refuses us is a `SourceError` naming the server and the key
to check (`imap (host:993): login refused: check imap.username / imap.password_file`); a server
certificate that does not verify says "certificate" and names `imap.ca_file`. A missing folder,
or a protocol error in one folder, is an error for that folder; the other folders are still
polled. Login is pluggable: `LOGINS` maps `imap.auth` to a function: `password` (LOGIN) or
`oauth2` (AUTHENTICATE XOAUTH2, when the server offers AUTH=XOAUTH2, with a token from
`pipeline.oauth`; a refused token is replaced by a new one once before the login counts as
refused, and a connection lost while signing in is no refusal: the shared token is kept). A token
endpoint that cannot be reached or is failing makes the source "unreachable", naming the
endpoint; anything else that fails while connecting names the key to check.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, IMAPClientAbortError, LoginError
from imapclient.util import to_unicode

from pipeline.config import ConfigError, ImapConfig
from pipeline.faults import crash_point
from pipeline.ingest import Ingest, Outcome
from pipeline.intake import PollResult, SourceError, describe, take_safely
from pipeline.oauth import TokenError, mailbox_access, token_source

log = logging.getLogger(__name__)

DELETED = b"\\Deleted"
# At most this much mail (by RFC822.SIZE) in one FETCH; a larger message is fetched alone.
GROUP_BYTES = 10 * 1024 * 1024


def _password_login(client: IMAPClient, config: ImapConfig) -> None:
    client.login(config.username, config.secret() or "")


class NotOffered(Exception):
    """The server does not offer the sign-in the configuration asks for."""


def _oauth2_login(client: IMAPClient, config: ImapConfig) -> None:
    """AUTHENTICATE XOAUTH2; a refused token (revoked, say) is replaced by a new one once. A
    connection lost meanwhile is no refusal: the shared token stays."""
    if not client.has_capability("AUTH=XOAUTH2"):
        raise NotOffered(
            "the server does not offer AUTH=XOAUTH2: check imap.auth, and imap.security "
            '("tls" or "starttls": many servers offer sign-in only in TLS)'
        )

    def attempt(token: str) -> None:
        try:
            client.oauth2_login(config.username, token)
        except LoginError as exc:  # imapclient makes every error of AUTHENTICATE one
            if isinstance(exc.__context__, IMAPClientAbortError):
                raise exc.__context__ from None
            raise

    token_source(config).sign_in(attempt, LoginError)


LOGINS: dict[str, Callable[[IMAPClient, ImapConfig], None]] = {
    "password": _password_login,
    "oauth2": _oauth2_login,
}


def server(config: ImapConfig) -> str:
    """How errors name the mailbox: `imap (imap.example.ac.uk:993)`."""
    return f"imap ({config.host}:{config.port})"


def connect_error(config: ImapConfig, exc: Exception) -> SourceError:
    """What went wrong in `connect`, and which key to check. Only our own text, the OS's and
    the server's status replies: never the password."""
    where = server(config)
    if isinstance(exc, ConfigError):
        return SourceError(config.auth, f"{where}: {exc}")
    if isinstance(exc, TokenError):  # an endpoint that is down or failing: unreachable
        return SourceError("unreachable" if exc.transient else "oauth2", f"{where}: {exc}")
    if isinstance(exc, NotOffered):
        return SourceError("auth", f"{where}: {exc}")
    if isinstance(exc, LoginError):
        reply = to_unicode(str(exc))[:200]
        quoted = re.fullmatch(r"b(['\"])(.*)\1", reply)  # imapclient gives the reply's repr
        reply = quoted.group(2) if quoted else reply
        access = f" ({mailbox_access(config.oauth2, 'imap')})" if config.oauth2 else ""
        return SourceError(
            "login",
            f"{where}: login refused ({reply}): check imap.username / {config.credential_key}"
            + access,
        )
    if isinstance(exc, CapabilityError):
        return SourceError("tls", f"{where}: the server offers no STARTTLS: check imap.security")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SourceError(
            "certificate",
            f"{where}: the server's certificate does not verify ({exc.verify_message}): check "
            "imap.ca_file (the CA that signed it; default: the system's) and imap.host (a name "
            "the certificate holds)",
        )
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "verify_message", None) or exc.reason or type(exc).__name__
        return SourceError(
            "tls", f"{where}: TLS failed ({reason}): check imap.security and imap.port"
        )
    if isinstance(exc, TimeoutError):
        return SourceError(
            "timeout",
            f"{where}: no answer within {config.timeout_seconds:g} s: check imap.host, "
            "imap.port and imap.timeout_seconds",
        )
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return SourceError(
            "unreachable", f"{where}: cannot connect ({reason}): check imap.host and imap.port"
        )
    if isinstance(exc, IMAPClientAbortError):
        return SourceError(
            "connection",
            f"{where}: the connection was lost ({describe(exc)}): check the server, and "
            "imap.timeout_seconds",
        )
    if not isinstance(exc, IMAPClient.Error):  # nothing of the server's: our sign-in failed
        return SourceError(
            config.auth,
            f"{where}: sign-in failed ({type(exc).__name__}): check {config.credential_key}",
        )
    return SourceError("imap", f"{where}: the server refused the session ({describe(exc)})")


def connect(config: ImapConfig) -> IMAPClient:
    """A logged-in client (plain, STARTTLS or TLS) with timeouts on the socket. imaplib's own
    protocol trace is off: imapclient turns it on and formats every line and literal for a
    DEBUG logger whose lines are never shown (`pipeline.logs`), the repr of a 34 MB message
    costing twice its size again."""
    context = config.tls_context()
    client = IMAPClient(
        config.host,
        port=config.port,
        ssl=config.security == "tls",
        ssl_context=context if config.security == "tls" else None,
        timeout=config.timeout_seconds,
    )
    client._imap.debug = 0
    try:
        if config.security == "starttls":
            client.starttls(context)
        LOGINS[config.auth](client, config)
    except BaseException:
        with suppress(OSError):
            client.shutdown()
        raise
    return client


@dataclass(frozen=True)
class Folder:
    """A folder this source polls; every message of an `anonymous` one is anonymous."""

    name: str
    anonymous: bool


def polled_folders(config: ImapConfig) -> list[Folder]:
    """Each anonymous folder once, then the intake folder: a message in both (a Gmail label
    without "Skip the Inbox") is taken as anonymous first, and its other copy is a duplicate.
    The intake folder is anonymous itself when it is listed in `anonymous_folders` (a mailbox
    that is anonymous as a whole)."""
    anonymous = list(dict.fromkeys(config.anonymous_folders))
    folders = [Folder(name, True) for name in anonymous if name != config.folder]
    return [*folders, Folder(config.folder, config.folder in anonymous)]


def keep_folder(config: ImapConfig) -> str | None:
    """Where stored named originals are kept, or None (the default: nothing is kept)."""
    if config.processed_folder is None or config.delete_processed:
        return None
    if config.processed_folder in {config.folder, *config.anonymous_folders}:
        raise ConfigError(
            f'imap.processed_folder: "{config.processed_folder}" is also polled (imap.folder '
            "or imap.anonymous_folders); name a folder of its own, or remove processed_folder "
            "so that originals are expunged"
        )
    return config.processed_folder


def _missing_folder(config: ImapConfig, folder: Folder) -> str:
    if folder.name == config.folder:
        return f'imap.folder: no folder "{folder.name}" in the mailbox of {config.username}'
    return (
        f'imap.anonymous_folders: no folder "{folder.name}" in the mailbox; create it (or the '
        "rule that fills it) or remove it from the list"
    )


def may_keep(outcome: Outcome) -> bool:
    """Only a named report that was stored (routed or not) may be kept in the processed folder."""
    return outcome.status in ("stored", "unrouted") and not outcome.anonymous


class ImapSource:
    def __init__(self, config: ImapConfig) -> None:
        self.config = config
        self.account = f"imap:{config.username}@{config.host}"
        self.name = f"{self.account}/{config.folder}"
        self.folders = polled_folders(config)
        self.keep_folder = keep_folder(config)

    def poll(self, ingest: Ingest) -> PollResult:
        result = PollResult()
        try:
            client = connect(self.config)
        except Exception as exc:  # every way in which connecting fails names its key
            raise connect_error(self.config, exc) from None
        try:
            if self.keep_folder and not client.folder_exists(self.keep_folder):
                client.create_folder(self.keep_folder)
            for folder in self.folders:
                self._poll_folder(client, ingest, folder, result)
        except OSError as exc:  # what was taken stays taken; the rest waits for the next poll
            reason = exc.strerror or type(exc).__name__
            result.fail("connection", f"{server(self.config)}: connection lost ({reason})")
        finally:
            _logout(client)
        return result

    def _poll_folder(
        self, client: IMAPClient, ingest: Ingest, folder: Folder, result: PollResult
    ) -> None:
        """One folder; a missing anonymous folder or a protocol error is an error for this
        folder only (a lost connection still ends the poll)."""
        where = server(self.config)
        if not client.folder_exists(folder.name):
            result.fail("folder", f"{where}: {_missing_folder(self.config, folder)}")
            return
        try:
            self._take_folder(client, ingest, folder, result)
        except IMAPClient.Error as exc:
            result.fail("imap", f'{where}: folder "{folder.name}": IMAP error ({describe(exc)})')

    def _take_folder(
        self, client: IMAPClient, ingest: Ingest, folder: Folder, result: PollResult
    ) -> None:
        selected = client.select_folder(folder.name)
        prefix = f"{self.account}/{folder.name}:{int(selected[b'UIDVALIDITY'])}"
        _expunge_leftovers(client, ingest, prefix)
        uids = sorted(client.search(["NOT", "DELETED"]))
        ingest.expect(len(uids))
        batch_size = self.config.batch_size
        for start in range(0, len(uids), batch_size):
            batch = uids[start : start + batch_size]
            outcomes: dict[int, Outcome] = {}
            for group in fetch_groups(_sizes(client, batch), GROUP_BYTES):
                ingest.alive()
                outcomes |= _take_group(client, ingest, prefix, group, folder.anonymous, result)
            if not outcomes:
                continue
            keep = [uid for uid, o in outcomes.items() if self._keeps(folder, o)]
            gone = [uid for uid in outcomes if uid not in keep]
            if not self._remove(client, keep, gone):
                result.notices.append(
                    f"{self.account}/{folder.name}: the server lacks UIDPLUS, so processed "
                    "messages are left flagged \\Deleted in the folder, readable on the server; "
                    "expunge them with your mail client"
                )
            crash_point("after-move")

    def _keeps(self, folder: Folder, outcome: Outcome) -> bool:
        return self.keep_folder is not None and not folder.anonymous and may_keep(outcome)

    def _remove(self, client: IMAPClient, keep: list[int], gone: list[int]) -> bool:
        """Move `keep` to the processed folder and expunge `gone`; False when some could only
        be flagged \\Deleted (no UIDPLUS: a bare EXPUNGE is never sent)."""
        complete = True
        if keep:
            assert self.keep_folder is not None
            if client.has_capability("MOVE"):
                client.move(keep, self.keep_folder)
            else:
                client.copy(keep, self.keep_folder)
                gone = keep + gone
        if gone:
            complete = _expunge(client, gone)
        return complete


def _sizes(client: IMAPClient, batch: list[int]) -> dict[int, int]:
    """RFC822.SIZE of each message of `batch` still in the folder, in UID order. A size the
    server does not give (or gives as NIL or garbage) counts as GROUP_BYTES: that message is
    fetched alone, never left behind."""
    fetched = client.fetch(batch, ["RFC822.SIZE"])
    return {uid: _size(fetched[uid].get(b"RFC822.SIZE")) for uid in batch if uid in fetched}


def _size(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return GROUP_BYTES


def fetch_groups(sizes: dict[int, int], bound: int) -> list[list[int]]:
    """The UIDs of `sizes` in its order, cut into runs whose sizes add up to at most `bound`;
    a message larger than `bound` is a run of its own."""
    groups: list[list[int]] = []
    total = 0
    for uid, size in sizes.items():
        if not groups or total + size > bound:
            groups.append([])
            total = 0
        groups[-1].append(uid)
        total += size
    return groups


def _take_group(
    client: IMAPClient,
    ingest: Ingest,
    prefix: str,
    group: list[int],
    anonymous: bool,
    result: PollResult,
) -> dict[int, Outcome]:
    """Fetch one group whole and take its messages in UID order: the outcome of each taken.
    Each message's bytes are let go once it is taken, before the next is."""
    fetched = client.fetch(group, ["BODY.PEEK[]"])
    outcomes: dict[int, Outcome] = {}
    for uid in group:
        if uid in fetched:
            raw = fetched.pop(uid)[b"BODY[]"]  # the group holds it no longer
            outcome = _take(ingest, f"{prefix}:{uid}", raw, anonymous, result)
            if outcome is not None:
                outcomes[uid] = outcome
    return outcomes


def _take(
    ingest: Ingest, key: str, raw: bytes, anonymous: bool, result: PollResult
) -> Outcome | None:
    """The outcome of taking one message, or None when it failed (it stays for the next poll)."""
    taken: list[Outcome] = []

    def take() -> Outcome:
        outcome = ingest.take_email(key, raw, anonymous=anonymous)
        taken.append(outcome)
        return outcome

    return taken[0] if take_safely(key, take, result) else None


def _expunge_leftovers(client: IMAPClient, ingest: Ingest, prefix: str) -> None:
    """Expunge messages we stored and flagged \\Deleted whose UID EXPUNGE never came (the
    connection dropped in between): otherwise they would stay readable on the server."""
    if not client.has_capability("UIDPLUS"):
        return
    flagged = client.search(["DELETED"])
    ours = [uid for uid in flagged if ingest.seen(f"{prefix}:{uid}")]
    if ours:
        client.uid_expunge(ours)


def _expunge(client: IMAPClient, uids: list[int]) -> bool:
    """Flag our UIDs \\Deleted and UID EXPUNGE exactly those; False without UIDPLUS."""
    client.add_flags(uids, [DELETED], silent=True)
    crash_point("after-flag")
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)
        return True
    return False


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except (OSError, IMAPClient.Error) as exc:
        log.debug("IMAP logout: %s", to_unicode(str(exc)))
