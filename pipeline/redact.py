"""Redact: the raw original of an anonymous report in; the copy that may be stored out, with
only allowlisted header fields, at the top and in every MIME part and attached message.

Kept (`ALLOWED`): Subject; Date, rounded down to the hour and rewritten in UTC (dropped when it
cannot be read); MIME-Version; Content-Type, Content-Transfer-Encoding, Content-Disposition
(without its creation/modification/read dates) and Content-Language. Every other field goes,
whatever its name: From, Received, X-Forefront-Antispam-Report, Autocrypt, X-MS-Exchange-*,
Resent-*... Content-ID (Outlook writes the send time to the 100 ns in it, Thunderbird the sender's
domain), Content-Description and Content-Location (free text and file paths) go too: the
structure does not need them.

The rewrite works on the raw bytes: the header blocks are found as `email.feedparser` finds them
(the pre-scan walker of `pipeline.limits`), and only their lines change, so bodies and
attachments stay byte-identical. The result is then parsed and checked: no part may carry a
field outside the allowlist, and every leaf part must decode to the same bytes as before. When
the rewrite cannot be done or fails the check (hostile or broken input), the copy is rebuilt from
the decoded parts with no header fields but Subject and Date, or, if even that fails, keeps
nothing but those two fields and a note. Never raises; never keeps a field outside `ALLOWED`.
"""

from __future__ import annotations

import binascii
import quopri
import re
from email.message import EmailMessage, Message
from email.utils import format_datetime, parsedate_to_datetime

from pipeline.config import LimitsConfig
from pipeline.limits import (
    _FIELD,
    _HEADER_RUN,
    _ORPHAN_LINES,
    Deadline,
    Refused,
    _Fields,
    _Scanner,
    guarded_policy,
    walk,
)
from pipeline.models import to_the_hour
from pipeline.parse import ParseError, read_message
from pipeline.recipients import header_fields

ALLOWED = frozenset(
    {
        "subject",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-language",
    }
)
_ENCODINGS = frozenset({"base64", "quoted-printable"})
REBUILT_NOTE = (
    "The header fields of this anonymous original could not be removed safely, so this copy "
    "was rebuilt from its parts: the texts and attachments are kept, the header fields are not."
)
EMPTY_NOTE = (
    "The header fields of this anonymous original could not be removed safely and its parts "
    "could not be read, so nothing of it was kept but its subject and date."
)
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)?")
_EOL = re.compile(rb"(?:\r\n|\r|\n)\Z")
_FILE_DATES = re.compile(
    rb"[ \t\r\n]*;[ \t\r\n]*(?:creation|modification|read)-date\*?[ \t\r\n]*=[ \t\r\n]*"
    rb'(?:"(?:[^"\\\r\n]|\\.)*"|[^;\r\n]*)',
    re.I,
)


class _HeaderSpans(_Scanner):
    """The pre-scan walker, noting where each header block (top, part, attached message) is."""

    spans: list[tuple[int, int]]

    def header_block(self) -> _Fields:
        if not self.at_eof():
            start = self.pos
            run = _HEADER_RUN.match(self.raw, start)
            self.spans.append((start, self.next_eof(start, end=run.end() if run else start)))
        return super().header_block()


def _header_spans(raw: bytes, limits: LimitsConfig) -> list[tuple[int, int]]:
    scanner = _HeaderSpans(raw, limits, Deadline(limits), guarded_policy())
    scanner.spans = []
    scanner.entity(0, None)
    return scanner.spans


def rounded_date(value: bytes) -> bytes | None:
    """An RFC 5322 date, rounded down to the hour, in UTC (`Tue, 24 Nov 2026 10:00:00 +0000`);
    None when it cannot be read."""
    text = re.sub(r"\s+", " ", value.decode("ascii", "replace")).strip()
    if not text or len(text) > 200:
        return None
    try:
        moment = to_the_hour(parsedate_to_datetime(text))
        return format_datetime(moment).encode("ascii")
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _kept_field(field: bytes, eol: bytes) -> bytes | None:
    """One header field (with its folded lines) as it may be kept, or None."""
    if field.startswith(b"From "):
        return None  # the mbox separator line names the envelope sender
    name, colon, value = field.partition(b":")
    key = name.strip().lower().decode("ascii", "replace")
    if not colon or key not in ALLOWED:
        return None
    if key == "date":
        date = rounded_date(re.sub(rb"\r\n|\r|\n", b"", value))
        return None if date is None else b"Date: " + date + (eol or b"\n")
    if key == "content-disposition":
        field = _FILE_DATES.sub(b"", field)
    return field + eol


def filtered_block(block: bytes) -> bytes:
    """A header block with only the allowlisted fields (orphan continuation lines dropped)."""
    kept: list[bytes] = []
    pos = 0
    while pos < len(block):
        field = _FIELD.match(block, pos)
        if field is None:
            orphan = _ORPHAN_LINES.match(block, pos)
            line = _LINE.match(block, orphan.end() if orphan else pos)
            pos = line.end() if line and line.end() > pos else len(block)
            continue
        line = _LINE.match(block, field.end())
        end = line.end() if line else field.end()
        eol = block[field.end() : end]
        result = _kept_field(field.group(0), eol if _EOL.fullmatch(eol) else b"")
        if result is not None:
            kept.append(result)
        pos = max(end, pos + 1)
    return b"".join(kept)


def rewritten(raw: bytes, limits: LimitsConfig) -> bytes:
    """Every header block filtered in place; the bytes between them unchanged. Refused when
    the message cannot be walked within the limits."""
    pieces: list[bytes] = []
    position = 0
    for start, end in _header_spans(raw, limits):
        if start < position:
            raise Refused("header blocks overlap")
        pieces += [raw[position:start], filtered_block(raw[start:end])]
        position = end
    pieces.append(raw[position:])
    return b"".join(pieces)


def _leaves(msg: Message, limits: LimitsConfig, depth: int | None = 0) -> list[tuple[str, bytes]]:
    """Each leaf part's type and decoded bytes. A leaf that is itself a message (a forward
    sent base64 or quoted-printable encoded, which the walker cannot enter) is redacted in
    turn, unless `depth` is None (the bytes as they are)."""
    leaves = []
    inside: set[int] = set()  # parts of an encoded message, read as that message's bytes
    for part in walk(msg, limits, Deadline(limits)):
        if id(part) in inside:
            continue
        encoded = _encoded_message(part)
        if encoded is not None:
            inside.update(id(sub) for sub in part.walk())
            data = encoded if depth is None else _inner_original(encoded, limits, depth + 1)
            leaves.append((part.get_content_type(), data))
        elif not part.is_multipart():
            payload = part.get_payload(decode=True)
            leaves.append((part.get_content_type(), payload if isinstance(payload, bytes) else b""))
    return leaves


def _encoded_message(part: Message) -> bytes | None:
    """The decoded bytes of a message/* part sent base64 or quoted-printable encoded (the
    parser keeps such a message as one header-less text part), else None."""
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if not part.get_content_type().startswith("message/") or cte not in _ENCODINGS:
        return None
    inner = part.get_payload()
    inner = inner[0] if isinstance(inner, list) and inner else inner
    text = inner.get_payload() if isinstance(inner, Message) else inner
    if not isinstance(text, str):
        return b""
    data = text.encode("ascii", "replace")
    try:
        return binascii.a2b_base64(data) if cte == "base64" else quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return EMPTY_NOTE.encode()  # cannot be read, so cannot be vouched for: not kept


def _inner_original(data: bytes, limits: LimitsConfig, depth: int) -> bytes:
    """An encoded attached message, redacted like the original (nothing past the depth limit)."""
    if depth > limits.depth:
        return EMPTY_NOTE.encode()
    return stored_original(data, limits, depth=depth)


def _top_is_clean(data: bytes) -> bool:
    """Every line up to the first empty one is an allowlisted field or a folded line of one."""
    for line in _LINE.findall(data[: 1024 * 1024]):
        text = line.rstrip(b"\r\n")
        if not text:
            return True
        if text[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = text.partition(b":")
        if not colon or name.strip().lower().decode("ascii", "replace") not in ALLOWED:
            return False
    return True


def checked(original: bytes, copy: bytes, limits: LimitsConfig, depth: int = 0) -> bool:
    """Whether the copy parses, keeps no field outside the allowlist in any part, and every
    leaf part decodes to the same bytes as the original's (an encoded attached message: as
    the original's, redacted)."""
    try:
        before, after = read_message(original, limits=limits), read_message(copy, limits=limits)
        for part in walk(after, limits, Deadline(limits)):
            if any(str(key).strip().lower() not in ALLOWED for key in part):
                return False
        redacted, kept = _leaves(before, limits, depth), _leaves(after, limits, None)
        return _top_is_clean(copy) and redacted == kept
    except Exception:  # ParseError, Refused, and whatever a hostile part makes the package do
        return False


def _safe_top(raw: bytes) -> tuple[str | None, str | None]:
    """The top Subject (as text) and rounded Date of a raw message."""
    subject = date = None
    for name, value in header_fields(raw) or ():
        if name == "subject" and subject is None:
            subject = re.sub(r"\s+", " ", value.decode("utf-8", "replace")).strip()[:998]
        elif name == "date" and date is None:
            rounded = rounded_date(value)
            date = rounded.decode("ascii") if rounded else None
    return subject, date


def rebuilt(raw: bytes, limits: LimitsConfig, depth: int = 0) -> bytes:
    """The fail-closed copy: Subject and Date, a note, and every leaf part's decoded bytes as
    an attachment with no header fields but its type and file name."""
    subject, date = _safe_top(raw)
    copy = EmailMessage()
    if subject:
        copy["Subject"] = subject
    if date:
        copy["Date"] = date
    try:
        leaves = _leaves(read_message(raw, limits=limits), limits, depth)
    except (ParseError, Refused, Exception):
        copy.set_content(EMPTY_NOTE)
        return copy.as_bytes()
    copy.set_content(REBUILT_NOTE)
    for number, (ctype, data) in enumerate(leaves, start=1):
        maintype, _, subtype = ctype.partition("/")
        if maintype not in ("image", "audio", "video", "application"):
            maintype, subtype = "application", "octet-stream"  # bytes kept as they were
        copy.add_attachment(data, maintype=maintype, subtype=subtype, filename=f"part-{number}.bin")
    return copy.as_bytes()


def stored_original(raw: bytes, limits: LimitsConfig | None = None, *, depth: int = 0) -> bytes:
    """What of an anonymous original may be stored (see the module docstring). Never raises.
    `depth` counts encoded messages inside encoded messages."""
    limits = limits or LimitsConfig()
    try:
        copy = rewritten(raw, limits)
        if checked(raw, copy, limits, depth):
            return copy
    except (Refused, RecursionError, Exception):
        pass
    try:
        return rebuilt(raw, limits, depth)
    except Exception:
        return b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n" + (
            EMPTY_NOTE.encode() + b"\n"
        )


def quarantined_original(raw: bytes, limits: LimitsConfig | None = None) -> bytes:
    """What of an anonymous message that could not be read may be stored: every header block
    filtered where the message can be walked, else the top block only; every other byte kept
    (it is all the evidence there is, and the record is encrypted). Never raises."""
    try:
        return rewritten(raw, limits or LimitsConfig())
    except Exception:
        pass
    end = re.search(rb"\r?\n\r?\n", raw)
    if end is None:  # header fields only, or not a message at all (then kept as it is)
        return filtered_block(raw) if _FIELD.match(raw) else raw
    return filtered_block(raw[: end.start()] + b"\n") + b"\n" + raw[end.end() :]
