"""DATA a slice of lines at a time (`send_data`) puts on the wire exactly what smtplib's own
`SMTP.data` sends for the message in SMTP line endings (`crlf`): the same CRLFs, the same dots
doubled, the same end; whatever the line endings, dots and slice size; and it never holds a
copy of the whole mail."""

from __future__ import annotations

import smtplib
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import deliver
from pipeline.deliver import crlf, crlf_size, line_slices, send_data


class Wire(smtplib.SMTP):
    """An unconnected client that answers DATA with 354 and the mail with 250, and keeps
    what was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.replies = [(354, b"go ahead"), (250, b"queued")]

    def putcmd(self, cmd: str, args: str = "") -> None:
        self.sent.append(f"{cmd}\r\n".encode())

    def getreply(self) -> tuple[int, bytes]:
        return self.replies.pop(0)

    def send(self, s: bytes | str) -> None:
        assert isinstance(s, bytes)
        self.sent.append(s)


class Socket(Wire):
    """A client whose sends are gone once made, as on a socket."""

    def send(self, s: bytes | str) -> None:
        assert isinstance(s, bytes)


def smtplib_sends(message: bytes) -> bytes:
    wire = Wire()
    assert wire.data(crlf(message)) == (250, b"queued")
    return b"".join(wire.sent)


def sliced_sends(message: bytes) -> bytes:
    wire = Wire()
    assert send_data(wire, message) == (250, b"queued")
    return b"".join(wire.sent)


MESSAGES = st.lists(
    st.sampled_from([b"a", b"bc", b".", b"..", b"\n", b"\r\n", b"\r", b"\n.", b"\r\n."]),
    max_size=40,
).map(b"".join)


@given(message=MESSAGES, size=st.integers(min_value=1, max_value=9))
def test_each_slice_size_sends_what_smtplib_sends(message: bytes, size: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deliver, "DATA_SLICE_BYTES", size)
        assert sliced_sends(message) == smtplib_sends(message)
    assert crlf_size(message) == len(crlf(message))


@given(message=MESSAGES, size=st.integers(min_value=1, max_value=9))
def test_slices_are_whole_lines_that_make_the_message(message: bytes, size: int) -> None:
    slices = list(line_slices(message, size))
    assert b"".join(slices) == message
    assert all(piece.endswith(b"\n") for piece in slices[:-1])


def test_an_ascii_armoured_mail_is_sent_without_a_copy_of_it() -> None:
    armour = b"".join(b"%063d\n" % n for n in range(192 * 1024))  # 12 MiB of 64-byte lines
    message = b"Subject: x\n\n.leading dot\n" + armour
    assert sliced_sends(message) == smtplib_sends(message)
    tracemalloc.start()
    try:
        send_data(Socket(), message)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(message) // 2  # smtplib's data() held three copies of it


def test_a_mail_of_one_slice_is_one_send_with_its_end() -> None:
    """The end of DATA sent on its own waited for the server's delayed ACK (Nagle): 40 ms a
    mail, ten times the drain's own work."""
    wire = Wire()
    send_data(wire, b"Subject: x\n\nshort\n")
    assert wire.sent == [b"data\r\n", b"Subject: x\r\n\r\nshort\r\n.\r\n"]
