"""The referral's inner MIME written straight into one buffer (`referral_inner_bytes`) is, byte
for byte, what the email package makes of the whole message (`referral_inner(...).as_bytes()`),
for attachments of every size around a base64 line's, any type and any file name; and making it
holds no copy of the attachments beyond the result."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from pipeline.deliver import referral_inner, referral_inner_bytes
from pipeline.render import Rendered
from pipeline.report import Attachment

RENDERED = Rendered(subject="Referral: a report", body="Dear team,\n\nsee the attached files.\n")


def _both(attachments: list[Attachment]) -> tuple[bytes, bytes]:
    random.seed(11)  # the generator's multipart boundary
    whole = referral_inner(RENDERED, attachments).as_bytes()
    random.seed(11)
    return whole, referral_inner_bytes(RENDERED, attachments)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 56, 57, 58, 114, 115, 4096, 100_003])
def test_one_attachment_of_any_size_is_framed_as_the_email_package_frames_it(size: int) -> None:
    data = random.Random(size).randbytes(size)
    whole, written = _both([Attachment("clip.mp4", "video/mp4", data)])
    assert written == whole


def test_several_attachments_of_any_type_and_name_keep_their_order() -> None:
    rng = random.Random(3)
    attachments = [
        Attachment("notes.txt", "text/plain", "Grüße\r\nline two\n".encode()),
        Attachment("Zeugenaussage – März.pdf", "application/pdf", rng.randbytes(70_000)),
        Attachment("forwarded-3.eml", "message/rfc822", b"Subject: hi\r\n\r\nbody\r\n"),
        Attachment("attachment-4", "application", rng.randbytes(57 * 3)),
        Attachment("empty.bin", "application/octet-stream", b""),
    ]
    whole, written = _both(attachments)
    assert written == whole


def test_without_attachments_it_is_the_plain_text_part() -> None:
    whole, written = _both([])
    assert written == whole


def test_it_holds_no_copy_of_the_attachment_beyond_the_result() -> None:
    data = random.Random(5).randbytes(4 * 1024 * 1024)
    attachments = [Attachment("clip.mp4", "video/mp4", data)]
    tracemalloc.start()
    try:
        written = referral_inner_bytes(RENDERED, attachments)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(written) > len(data) * 4 // 3
    assert peak < len(written) * 1.3  # the email package made four times as much
