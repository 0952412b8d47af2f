"""The benchmark's mail: a seed and a count in, report emails (raw bytes) with what each should
produce out.

`make_backlog(count, seed)` builds the same messages for the same arguments: plain text of 2–6
KB, a quarter of them also as HTML (multipart/alternative), one in ten carrying a ~100 KB JPEG,
three in ten sent to the anonymous address, every sender distinct (no acknowledgement rate limit
applies). Four in ten mention `TWO_SERVICES_WORD`, which the bench's rules (`RULES`) refer to
both services; the rest go to the default service alone. `Message.services` says which.

`large_message(...)` is one named report carrying an attachment of a given size (random bytes,
so neither base64 nor gpg can shrink it), for the memory pass.

`write_form_export(path, rows, seed)` writes a Google Forms export (CSV) of `rows` responses,
three in ten anonymous, each referred to the default service alone; `FORM_TABLE` is the
`[[forms]]` config that maps it.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from functools import cache
from pathlib import Path

from PIL import Image

INTAKE_ADDRESS = "report@example.ac.uk"
ANONYMOUS_ADDRESS = "anonymous@example.ac.uk"
#: The services (tests/servers/gpg.py has their keys) and the keyword that sends to both.
SERVICES = ("advice-centre", "student-services")
DEFAULT_SERVICE = "advice-centre"
TWO_SERVICES_WORD = "groped"
RULES = f"""\
rules:
  - name: two-services
    when: {{any_keyword: ["{TWO_SERVICES_WORD}"]}}
    set: {{category: sexual-violence}}
    refer: [advice-centre, student-services]
default: {{refer: [{DEFAULT_SERVICE}], acknowledge: ack-default}}
"""

FORM_TABLE = """
[[forms]]
id = "report-form"
path = "exports/*.csv"
dialect = "google"
after = "archive-encrypted"
settle_seconds = 0
anonymous_when = {column = "Do you want to stay anonymous?", equals = ["Yes"]}
[forms.columns]
category = "What happened?"
description = "Please describe the incident"
email = "Email address"
name = "Name"
reporter_role = "Are you a student or staff?"
location = "Where did it happen?"
"""
_FORM_HEADER = (
    "Timestamp",
    "Email address",
    "Name",
    "What happened?",
    "Please describe the incident",
    "Do you want to stay anonymous?",
    "Are you a student or staff?",
    "Where did it happen?",
)
_FORM_CATEGORIES = ("Harassment", "Bullying", "Discrimination", "Something else")

SHARE_HTML = 0.25
SHARE_IMAGE = 0.10
SHARE_ANONYMOUS = 0.30
SHARE_TWO_SERVICES = 0.40
TEXT_BYTES = (2048, 6144)
IMAGE_BYTES = 100 * 1024
LINE_WIDTH = 72  # as mail clients wrap plain text (and 7bit needs no encoding)
SENT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)

_WORDS = (
    *("the", "a", "and", "then", "we", "it", "was", "after", "before", "during", "near"),
    *("library", "hall", "lecture", "corridor", "evening", "morning", "friday", "flat"),
    *("kitchen", "stairs", "bus", "stop", "seminar", "society", "social", "someone"),
    *("person", "people", "group", "they", "kept", "said", "made", "me", "felt", "upset"),
    *("uncomfortable", "worried", "again", "several", "times", "week", "month", "told"),
    *("friend", "tutor", "later", "nobody", "helped", "afterwards", "message", "phone"),
    *("photo", "comments", "shouted", "laughed", "followed", "waited", "outside", "door"),
)
_FIRST = ("Sam", "Alex", "Jo", "Priya", "Tom", "Aisha", "Chen", "Maria", "Ola", "Kai")
_LAST = ("Smith", "Jones", "Patel", "Khan", "Brown", "Wilson", "Evans", "Taylor", "Lee")


@dataclass(frozen=True)
class Message:
    """One report email and what the bench expects of it."""

    raw: bytes
    anonymous: bool
    html: bool
    image: bool
    services: tuple[str, ...]  # the services its referrals go to


def make_backlog(count: int, seed: int, first: int = 0) -> list[Message]:
    """`count` report emails numbered from `first`; the same for the same arguments."""
    rng = random.Random(seed)
    return [_report(rng, seed, index) for index in range(first, first + count)]


def single_referral(count: int, seed: int, first: int) -> list[Message]:
    """`count` reports from the same mix with one referral each, numbered from `first`."""
    rng = random.Random(f"{seed}-single")
    found: list[Message] = []
    index = first
    while len(found) < count:
        message = _report(rng, seed, index)
        index += 1
        if len(message.services) == 1:
            found.append(message)
    return found


def large_message(index: int, seed: int, attachment_bytes: int) -> Message:
    """A named report (one referral) with an incompressible attachment of that size."""
    rng = random.Random(f"{seed}-large-{index}")
    msg = _headers(rng, seed, index, anonymous=False)
    msg.set_content(_text(rng, with_keyword=False))
    msg.add_attachment(
        rng.randbytes(attachment_bytes),
        maintype="video",
        subtype="mp4",
        filename=f"recording-{index}.mp4",
    )
    return Message(_flatten(msg, seed, index), False, False, False, (DEFAULT_SERVICE,))


def write_form_export(path: Path, rows: int, seed: int) -> None:
    """A Google Forms CSV export of `rows` responses (see the module docstring)."""
    rng = random.Random(f"{seed}-form")
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(_FORM_HEADER)
        for index in range(rows):
            anonymous = rng.random() < SHARE_ANONYMOUS
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            when = SENT - timedelta(seconds=index)
            writer.writerow(
                (
                    f"{when:%Y/%m/%d %I:%M:%S} {when:%p}".lower() + " GMT",
                    f"{first.lower()}.{last.lower()}.f{index}@example.ac.uk",
                    f"{first} {last}",
                    rng.choice(_FORM_CATEGORIES),
                    _text(rng, with_keyword=False, size=(300, 1000)),
                    "Yes" if anonymous else "No",
                    rng.choice(("Student", "Staff")),
                    rng.choice(("Library", "Halls", "Students' Union", "Online")),
                )
            )


def referrals(messages: list[Message]) -> int:
    return sum(len(message.services) for message in messages)


def to_both_services(index: int, seed: int) -> Message:
    """One report of the usual mix that the rules refer to both services."""
    return _report(random.Random(f"{seed}-both-{index}"), seed, index, both=True)


def _report(rng: random.Random, seed: int, index: int, both: bool | None = None) -> Message:
    anonymous = rng.random() < SHARE_ANONYMOUS
    html = rng.random() < SHARE_HTML
    image = rng.random() < SHARE_IMAGE
    two = rng.random() < SHARE_TWO_SERVICES if both is None else both
    msg = _headers(rng, seed, index, anonymous=anonymous)
    text = _text(rng, with_keyword=two)
    msg.set_content(text)
    if html:
        paragraphs = "".join(f"<p>{part}</p>\n" for part in text.split("\n\n"))
        msg.add_alternative(f"<html><body>\n{paragraphs}</body></html>\n", subtype="html")
    if image:
        msg.add_attachment(_jpeg(), maintype="image", subtype="jpeg", filename="photo.jpg")
    services = SERVICES if two else (DEFAULT_SERVICE,)
    return Message(_flatten(msg, seed, index), anonymous, html, image, services)


def _headers(rng: random.Random, seed: int, index: int, *, anonymous: bool) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    msg["From"] = f"{first} {last} <{first.lower()}.{last.lower()}.{index}@example.ac.uk>"
    msg["To"] = ANONYMOUS_ADDRESS if anonymous else INTAKE_ADDRESS
    msg["Subject"] = f"Something happened {rng.choice(_WORDS)} {rng.choice(_WORDS)} ({index})"
    msg["Date"] = format_datetime(SENT - timedelta(minutes=index))
    msg["Message-ID"] = f"<bench-{seed}-{index}@example.ac.uk>"
    return msg


def _text(rng: random.Random, *, with_keyword: bool, size: tuple[int, int] = TEXT_BYTES) -> str:
    """Paragraphs of `size` bytes (2–6 KB); `TWO_SERVICES_WORD` in the first one when asked."""
    target = rng.randint(*size)
    paragraphs: list[str] = []
    written = 0
    while written < target:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(40, 90))]
        if with_keyword and not paragraphs:
            words.insert(len(words) // 2, TWO_SERVICES_WORD)
        paragraph = _wrap(words)
        paragraphs.append(paragraph)
        written += len(paragraph) + 2
    return "\n\n".join(paragraphs) + "\n"


def _flatten(msg: EmailMessage, seed: int, index: int) -> bytes:
    """The message's bytes, with boundaries of our own (the email package picks random ones)."""
    for number, part in enumerate(msg.walk()):
        if part.is_multipart():
            part.set_boundary(f"=_bench_{seed}_{index}_{number}")
    return bytes(msg)


def _wrap(words: list[str]) -> str:
    """The words as a sentence in lines of at most `LINE_WIDTH` characters."""
    lines: list[str] = []
    line = words[0].capitalize()
    for word in [*words[1:-1], words[-1] + "."]:
        if len(line) + 1 + len(word) > LINE_WIDTH:
            lines.append(line)
            line = word
        else:
            line += " " + word
    return "\n".join([*lines, line])


@cache
def _jpeg() -> bytes:
    """A noise picture whose JPEG is at least `IMAGE_BYTES` (a photo does not compress much)."""
    rng = random.Random("bench-jpeg")
    side = 300
    while True:
        picture = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        out = io.BytesIO()
        picture.save(out, "JPEG", quality=85)
        if out.tell() >= IMAGE_BYTES:
            return out.getvalue()
        side += 20
