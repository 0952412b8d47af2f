"""The floor: the least work the promises need, done with raw tools on the bench's servers.

`drain(world, messages)`: one imapclient connection fetches every message in INBOX
(`BODY.PEEK[]`, read-only, in batches), then, serially, one `gpg --encrypt` per report to the
records key (the at-rest copy) and one per referral to its service's key, each a plain
subprocess, and every referral sent by smtplib over one SMTP connection. Its seconds, and what
it sent. No parsing, no database, no expunge: the floor of the project's work, not a rival.

`IdleFloor`: a thread with a raw IMAP IDLE session on INBOX that, on EXISTS, fetches the new
messages, encrypts each once to a service key, sends it with smtplib (one connection, opened at
start), then flags and expunges them: the floor of the project's IDLE latency.
"""

from __future__ import annotations

import re
import smtplib
import threading
import time
from dataclasses import dataclass

from imapclient import IMAPClient

from bench.backlog import INTAKE_ADDRESS, Message
from bench.world import World, gpg

FETCH_BATCH = 100
BOUNDARY = "bench-floor-boundary"
IDLE_SLICE = 0.2  # seconds per idle_check: stop() is noticed this soon
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class FloorResult:
    seconds: float
    reports: int
    referrals_sent: int


def drain(world: World, messages: list[Message], binary: str = "gpg") -> FloorResult:
    """Fetch, encrypt and send the backlog in INBOX as the module docstring says."""
    services = {_message_id(m.raw): m.services for m in messages}
    started = time.monotonic()
    raws = fetch_all(world)
    sent = 0
    with smtplib.SMTP(world.sink.host, world.sink.port, timeout=60) as smtp:
        for raw in raws:
            encrypt(world, raw, world.keyset.records_fpr, binary)
            for service in services[_message_id(raw)]:
                send_referral(world, smtp, raw, service, binary)
                sent += 1
    return FloorResult(time.monotonic() - started, len(raws), sent)


def fetch_all(world: World) -> list[bytes]:
    with world.dovecot.client(timeout=120) as imap:
        imap.select_folder("INBOX", readonly=True)
        uids = sorted(imap.search("ALL"))
        raws: list[bytes] = []
        for start in range(0, len(uids), FETCH_BATCH):
            batch = uids[start : start + FETCH_BATCH]
            fetched = imap.fetch(batch, ["BODY.PEEK[]"])
            raws.extend(fetched[uid][b"BODY[]"] for uid in batch)
    return raws


def encrypt(world: World, data: bytes, fingerprint: str, binary: str = "gpg") -> bytes:
    args = ("--trust-model", "always", "--armor", "--encrypt", "--recipient", fingerprint)
    return gpg(world.floor_home, *args, data=data, binary=binary)


def send_referral(
    world: World, smtp: smtplib.SMTP, raw: bytes, service: str, binary: str = "gpg"
) -> None:
    """Encrypt `raw` to the service's key and send it to the service as PGP/MIME."""
    keys = world.keyset
    armored = encrypt(world, raw, keys.services[service], binary)
    address = keys.emails[service]
    smtp.sendmail(INTAKE_ADDRESS, [address], pgp_mime(address, armored))


def pgp_mime(to: str, armored: bytes) -> bytes:
    """The smallest PGP/MIME mail (RFC 3156) carrying `armored`."""
    head = (
        f"From: {INTAKE_ADDRESS}\r\nTo: {to}\r\nSubject: Referral\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
        f'boundary="{BOUNDARY}"\r\n\r\n--{BOUNDARY}\r\n'
        f"Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--{BOUNDARY}\r\n"
        f"Content-Type: application/octet-stream\r\n\r\n"
    )
    tail = f"\r\n--{BOUNDARY}--\r\n"
    return head.encode() + armored.replace(b"\n", b"\r\n") + tail.encode()


def _message_id(raw: bytes) -> bytes:
    found = _MESSAGE_ID.search(raw.split(b"\r\n\r\n", 1)[0])
    if found is None:
        raise ValueError("a bench message has no Message-ID")
    return found.group(1)


class IdleFloor:
    """See the module docstring; `start()`, then `stop()` (joins the thread)."""

    def __init__(self, world: World, service: str = "advice-centre") -> None:
        self.world = world
        self.service = service
        self.errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-floor", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the floor's IDLE session did not start")

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)

    def _run(self) -> None:
        dovecot, sink = self.world.dovecot, self.world.sink
        try:
            with (
                smtplib.SMTP(sink.host, sink.port, timeout=60) as smtp,
                dovecot.client(timeout=60) as imap,
            ):
                imap.select_folder("INBOX")
                imap.idle()
                self._ready.set()
                while not self._stopping.is_set():
                    responses = imap.idle_check(timeout=IDLE_SLICE)
                    if any(len(r) >= 2 and r[1] == b"EXISTS" for r in responses):
                        imap.idle_done()
                        self._take(imap, smtp)
                        imap.idle()
                imap.idle_done()
        except Exception as exc:  # reported by the bench: the floor's figures are void
            self.errors.append(exc)
            self._ready.set()

    def _take(self, imap: IMAPClient, smtp: smtplib.SMTP) -> None:
        uids = imap.search(["NOT", "DELETED"])
        if not uids:
            return
        fetched = imap.fetch(uids, ["BODY.PEEK[]"])
        for uid in uids:
            send_referral(self.world, smtp, fetched[uid][b"BODY[]"], self.service)
        imap.add_flags(uids, [b"\\Deleted"])
        imap.uid_expunge(uids)
