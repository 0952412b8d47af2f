"""IMAP intake: a mailbox in, raw messages out (RFC 3501, with MOVE RFC 6851 and UIDPLUS RFC 4315).

Messages are found by UID (`SEARCH NOT DELETED`, never by \\Seen), fetched with `BODY.PEEK[]` in
batches, keyed `imap:<user>@<host>/<folder>:<UIDVALIDITY>:<UID>`, and leave the folder only after
their report is committed: MOVE to the processed folder, or COPY + \\Deleted + UID EXPUNGE where
MOVE is missing, or deletion when configured. Without UIDPLUS nothing is expunged: the messages
stay flagged \\Deleted (never a bare EXPUNGE that could remove someone else's mail).

Login is pluggable: `LOGINS` maps the config's `imap.auth` to a function.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from functools import partial

from imapclient import IMAPClient
from imapclient.util import to_unicode

from pipeline.config import ImapConfig
from pipeline.faults import crash_point
from pipeline.ingest import Ingest
from pipeline.intake import PollResult, take_safely

log = logging.getLogger(__name__)

DELETED = b"\\Deleted"


def _password_login(client: IMAPClient, config: ImapConfig) -> None:
    client.login(config.username, config.secret() or "")


LOGINS: dict[str, Callable[[IMAPClient, ImapConfig], None]] = {"password": _password_login}


def connect(config: ImapConfig) -> IMAPClient:
    """A logged-in client (plain, STARTTLS or TLS) with timeouts on the socket."""
    context = ssl.create_default_context()
    client = IMAPClient(
        config.host,
        port=config.port,
        ssl=config.security == "tls",
        ssl_context=context if config.security == "tls" else None,
        timeout=config.timeout_seconds,
    )
    if config.security == "starttls":
        client.starttls(context)
    LOGINS[config.auth](client, config)
    return client


class ImapSource:
    def __init__(self, config: ImapConfig) -> None:
        self.config = config
        self.name = f"imap:{config.username}@{config.host}/{config.folder}"

    def poll(self, ingest: Ingest) -> PollResult:
        result = PollResult()
        client = connect(self.config)
        try:
            self._poll_folder(client, ingest, result)
        finally:
            _logout(client)
        return result

    def _poll_folder(self, client: IMAPClient, ingest: Ingest, result: PollResult) -> None:
        cfg = self.config
        selected = client.select_folder(cfg.folder)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        if not cfg.delete_processed and not client.folder_exists(cfg.processed_folder):
            client.create_folder(cfg.processed_folder)
        uids = sorted(client.search(["NOT", "DELETED"]))
        for start in range(0, len(uids), cfg.batch_size):
            batch = uids[start : start + cfg.batch_size]
            fetched = client.fetch(batch, ["BODY.PEEK[]"])
            done = [
                uid
                for uid in batch
                if uid in fetched and self._take(ingest, uidvalidity, uid, fetched[uid], result)
            ]
            if done and not self._remove(client, done):
                result.notices.append(
                    f"{self.name}: the server lacks UIDPLUS, so processed messages are left "
                    "flagged \\Deleted in the folder; expunge them with your mail client"
                )
            if done:
                crash_point("after-move")

    def _take(
        self, ingest: Ingest, uidvalidity: int, uid: int, data: dict, result: PollResult
    ) -> bool:
        key = f"{self.name}:{uidvalidity}:{uid}"
        return take_safely(key, partial(ingest.take_email, key, data[b"BODY[]"]), result)

    def _remove(self, client: IMAPClient, uids: list[int]) -> bool:
        """Take committed messages out of the folder, expunging only our own UIDs; False when
        they could only be flagged \\Deleted (no UIDPLUS: a bare EXPUNGE is never sent)."""
        cfg = self.config
        if not cfg.delete_processed and client.has_capability("MOVE"):
            client.move(uids, cfg.processed_folder)
            return True
        if not cfg.delete_processed:
            client.copy(uids, cfg.processed_folder)
        client.add_flags(uids, [DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
            return True
        return False


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except (OSError, IMAPClient.Error) as exc:
        log.debug("IMAP logout: %s", to_unicode(str(exc)))
