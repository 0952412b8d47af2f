"""A message carrying a 25 MiB attachment (34 MB once base64-encoded, over the old 25 MiB
default of `limits.message_bytes`) is taken under the default limits by the real daemon in its
own process, stored and referred with the attachment whole, and leaves the mailbox.

The SMTP sink takes messages up to 64 MiB, as a relay taking what Gmail and Exchange Online
receive would: aiosmtpd refuses more than 32 MiB by default, and the encrypted referral of a
25 MiB attachment is about 46 MB.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from pipeline.config import LimitsConfig
from tests.integration.conftest import INTAKE, Deployment
from tests.servers.smtp import SmtpSink

MIB = 1024 * 1024
ATTACHMENT_BYTES = 25 * MIB


@pytest.fixture
def smtp_sink(smtp_sink_factory: Callable[..., SmtpSink]) -> SmtpSink:
    """The test's SMTP sink, taking messages up to 64 MiB."""
    return smtp_sink_factory(data_size_limit=64 * MIB)


def with_attachment(data: bytes) -> bytes:
    """A named report with `data` attached (base64 in lines of 76, as mail clients send it)."""
    return (
        (
            f"From: Sam Student <sam.student@example.ac.uk>\r\nTo: {INTAKE}\r\n"
            "Subject: The video of what happened\r\nMessage-ID: <big-1@example.ac.uk>\r\n"
            "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n'
            "Content-Type: text/plain; charset=utf-8\r\n\r\nThe video shows it, see attached.\r\n"
            '--B\r\nContent-Type: video/mp4\r\nContent-Disposition: attachment; filename="clip.mp4"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode()
        + base64.encodebytes(data).replace(b"\n", b"\r\n")
        + b"--B--\r\n"
    )


def test_a_message_with_a_25_mib_attachment_is_stored_and_referred_whole(
    deployment: Deployment,
) -> None:
    data = random.Random(25).randbytes(ATTACHMENT_BYTES)
    raw = with_attachment(data)
    assert 25 * MIB < len(raw) <= LimitsConfig().message_bytes  # the default takes it now
    deployment.imap.append(raw)

    run = deployment.run_once()

    assert run.returncode == 0, run.stderr
    assert "quarantined" not in run.stderr
    (referral,) = deployment.referrals()
    inner = message_from_bytes(referral, policy=policy.default)
    assert isinstance(inner, EmailMessage)
    (attachment,) = inner.iter_attachments()
    assert attachment.get_filename() == "clip.mp4"
    content = attachment.get_content()
    assert hashlib.sha256(content).digest() == hashlib.sha256(data).digest()
    assert deployment.imap.uids() == []  # expunged once stored
