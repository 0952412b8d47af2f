"""Recipients: the raw header block of a message in; whether it was sent to an anonymous address
out. Fails closed: anything it cannot read for certain counts as anonymous.

Mail clients write a recipient in many shapes (`"anonymous@x" <anonymous@x>`, group syntax,
RFC 2047 names, comments, upper case, Bcc with the address only in an envelope header), so every
recipient and envelope header field is read twice, from the raw bytes:

- with a real address parser (`email.utils.getaddresses`), comparing each address (quotes,
  case and plus tags removed) with the anonymous addresses; and
- as text, raw and with encoded words decoded, searched case-insensitively for each anonymous
  address and its plus-variants (`anonymous+tag@x`), also with white space, quotes and comments
  taken out (`"anonymous" (c) @ x`).

If an anonymous address appears anywhere in one of those fields, or a recipient field cannot be
read (undecodable bytes, an encoded word that does not decode, unbalanced quotes, comments or
angle brackets, an item without an address, a parser exception), the message is anonymous. So is
a header block that does not end within `MAX_HEADER_BLOCK` bytes. Never raises; every pattern is
linear in its input and every field is read within a size limit.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Iterable, Iterator
from email.utils import getaddresses

#: Address-list fields: read with the address parser as well, and a parse problem is anonymous.
RECIPIENT_FIELDS = frozenset(
    {"to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc", "apparently-to", "x-apparently-to"}
)
#: Fields the receiving servers write with the envelope recipient: searched as text.
ENVELOPE_FIELDS = frozenset(
    {
        "delivered-to",
        "x-delivered-to",
        "x-original-to",
        "envelope-to",
        "x-envelope-to",
        "x-ms-exchange-organization-originalenveloperecipients",
        "x-ms-exchange-inbox-rules-loop",
        "x-forwarded-to",
        "x-forwarded-for",
        "x-rcpt-to",
        "x-resolved-to",
        "original-recipient",
        "x-original-recipient",
        "received",  # `for <anonymous@x>`: the only trace of a Bcc on some servers
    }
)
MAX_HEADER_BLOCK = 1024 * 1024  # bytes looked at for the end of the header block
MAX_FIELD_CHARS = 64 * 1024  # one unfolded field; a longer recipient field is unreadable
MAX_FIELDS = 1000  # recipient and envelope fields; more cannot all be read

_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)?")
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,64})\?([qQbB])\?([^?\s]*)\?=")
_ADJACENT_WORDS = re.compile(r"(\?=)[ \t]+(?==\?)")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_COMMENT = re.compile(r"\([^()]*\)")
_QUOTES_AND_SPACE = re.compile(r"[\s\"'\\]+")
_EMPTY_GROUP = re.compile(r"\s*[^:\"<>@,;]*:\s*;?\s*")
_EMPTY_ITEM = re.compile(r"[,;](?=[ \t]*(?:[,;]|$))")  # `a@x,, b@x,` and a group's closing `;`
_PLUS_ANONYMOUS = re.compile(r"\+anonymous@", re.I)


class Unreadable(ValueError):
    """A recipient field that cannot be read for certain (treated as anonymous)."""


def header_fields(raw: bytes) -> Iterator[tuple[str, bytes]] | None:
    """The top header block's fields as (lower-case name, unfolded raw value), or None when the
    block does not end within `MAX_HEADER_BLOCK` bytes. Lines without a colon are skipped."""
    prefix = raw[: MAX_HEADER_BLOCK + 4]
    end = _BLANK_LINE.search(prefix)
    if end is None and len(raw) > MAX_HEADER_BLOCK:
        return None
    block = prefix[: end.start() + 1] if end else prefix
    return _fields(block)


def _fields(block: bytes) -> Iterator[tuple[str, bytes]]:
    name: str | None = None
    value: list[bytes] = []
    for line in _LINE.findall(block):
        if not line:
            continue
        text = line.rstrip(b"\r\n")
        if text[:1] in (b" ", b"\t"):
            value.append(text)
            continue
        if name is not None:
            yield name, b"".join(value)
        head, colon, rest = text.partition(b":")
        name = head.strip().lower().decode("latin-1") if colon and len(head) <= 200 else None
        value = [rest]
    if name is not None:
        yield name, b"".join(value)


def _strict_word(found: re.Match[str]) -> str:
    charset, kind, data = found.groups()
    try:
        if kind in "bB":
            octets = binascii.a2b_base64(data + "=" * (-len(data) % 4), strict_mode=True)
        else:
            octets = binascii.a2b_qp(data.encode("ascii"), header=True)
        codec = codecs.lookup(charset.split("*")[0])
        if not getattr(codec, "_is_text_encoding", True) or codec.name in ("punycode", "idna"):
            raise LookupError(charset)
        return octets.decode(codec.name)
    except (binascii.Error, ValueError, LookupError, UnicodeError) as exc:
        raise Unreadable("an encoded word that does not decode") from exc


def decoded_text(value: str) -> str:
    """A field value with its RFC 2047 encoded words decoded; Unreadable when one does not."""
    return _ENCODED_WORD.sub(_strict_word, _ADJACENT_WORDS.sub(r"\1", value))


def _balanced(value: str) -> bool:
    """Quotes, comments and angle brackets are closed, in a linear scan."""
    quoted, escaped, comments, angles = False, False, 0, 0
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif comments:
            comments += {"(": 1, ")": -1}.get(char, 0)
        elif char == '"':
            quoted = True
        elif char == "(":
            comments = 1
        elif char == ")":
            return False
        elif char in "<>":
            angles += 1 if char == "<" else -1
            if angles not in (0, 1):
                return False
    return not (quoted or escaped or comments or angles)


def normalised(address: str) -> str:
    """`"Anonymous+Tag"@Example.AC.UK.` → `anonymous@example.ac.uk`: no quotes, case, plus tag
    or trailing dot, for comparing addresses."""
    local, _, domain = address.strip().lower().rpartition("@")
    local = local.replace('"', "").replace("\\", "").split("+", 1)[0]
    return f"{local}@{domain.rstrip('.')}"


def parsed_addresses(value: str) -> list[str]:
    """Every address of an address-list field, normalised; Unreadable when the field is not a
    clean address list."""
    if not _balanced(value):
        raise Unreadable("unbalanced quotes, comments or angle brackets")
    try:
        pairs = getaddresses([_EMPTY_ITEM.sub("", value)])
    except Exception as exc:  # RecursionError on nested comments, the parser's own bugs
        raise Unreadable("the address parser failed") from exc
    found: list[str] = []
    for _name, address in pairs:
        if not address:
            if _EMPTY_GROUP.fullmatch(value) or not value.strip():
                continue  # `undisclosed-recipients:;`
            raise Unreadable("an item without an address")
        if "@" not in address:
            raise Unreadable("an item without a domain")
        found.append(normalised(address))
    return found


def _search_patterns(addresses: Iterable[str]) -> list[re.Pattern[str]]:
    patterns = [_PLUS_ANONYMOUS]
    for address in addresses:
        local, _, domain = normalised(address).partition("@")
        plus = r"(?:\+[^\s@<>,;:\"()]{0,64})?"
        patterns.append(re.compile(re.escape(local) + plus + "@" + re.escape(domain), re.I))
    return patterns


def _views(text: str) -> list[str]:
    """The field as written, and with white space, quotes and (up to three levels of) comments
    taken out: `"anonymous" (c) @ x` → `anonymous@x`."""
    compact = text
    for _ in range(3):
        compact = _COMMENT.sub("", compact)
    return [text, _QUOTES_AND_SPACE.sub("", compact), _QUOTES_AND_SPACE.sub("", text)]


def _field_is_anonymous(
    name: str, raw_value: bytes, wanted: set[str], patterns: list[re.Pattern[str]]
) -> bool:
    """True when the field names an anonymous address, or is a recipient field that cannot be
    read for certain."""
    strict = name in RECIPIENT_FIELDS
    try:
        value = raw_value.decode("utf-8")
    except UnicodeDecodeError:
        if strict or name != "received":
            return True
        value = raw_value.decode("utf-8", "replace")
    texts = [value]
    try:
        if len(value) > MAX_FIELD_CHARS or _CONTROL.search(value):
            raise Unreadable("a recipient field too long or with control characters")
        texts.append(decoded_text(value))
        if strict and wanted & set(parsed_addresses(value)):
            return True
    except Unreadable:
        if strict or name != "received":
            return True
        texts = [value[:MAX_FIELD_CHARS]]
    return any(p.search(view) for text in texts for view in _views(text) for p in patterns)


def sent_to_anonymous(raw: bytes, anonymous_addresses: Iterable[str]) -> bool:
    """True when a recipient or envelope field of the top header block names an anonymous
    address, or cannot be read for certain. Never raises."""
    wanted = {normalised(a) for a in anonymous_addresses if "@" in a}
    try:
        fields = header_fields(raw)
        if fields is None:
            return True
        patterns = _search_patterns(wanted)
        seen = 0
        for name, value in fields:
            if name not in RECIPIENT_FIELDS and name not in ENVELOPE_FIELDS:
                continue
            seen += 1
            if seen > MAX_FIELDS or _field_is_anonymous(name, value, wanted, patterns):
                return True
    except Exception:  # fail closed: a message we cannot read is anonymous
        return True
    return False
