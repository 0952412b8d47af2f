"""Recipients: the raw header block of a message in; whether it was sent to an anonymous address
out. Fails closed where an anonymous address could be hidden and we cannot tell.

Mail clients write a recipient in many shapes (`"anonymous@x" <anonymous@x>`, group syntax,
RFC 2047 names, comments, upper case, Bcc with the address only in an envelope header), so every
recipient and envelope header field is read twice, from the raw bytes:

- with a real address parser (`email.utils.getaddresses`, one top-level item at a time, items
  split at `,` and `;` outside quotes, comments and angle brackets), comparing each address
  (quotes, case and a trailing dot removed) with the anonymous addresses; and
- as text, raw and with encoded words decoded, searched case-insensitively for each anonymous
  address, also with white space, quotes and comments taken out (`"anonymous" (c) @ x`). A match
  must stand alone: not preceded by a word character, `.`, `+` or `-`, and not followed by one
  (a single trailing dot is allowed), so `not-anonymous@x` and `anonymous@x.evil.com` are not it.

Which addresses are anonymous:

- a configured address WITHOUT a plus tag (`anonymous@x`): itself and its plus-variants
  (`anonymous+web@x`);
- a configured address WITH a plus tag (`report+anonymous@x`): only itself, exactly (so plain
  `report@x`, the intake address, stays named);
- any local part tagged `+anonymous` at the domain of a configured anonymous address
  (`support+anonymous@x`): plus-addressing is the one way to write "anonymous" to any of our
  addresses. The same tag at another domain (`someone+anonymous@gmail.com`) is someone else's.

A message is anonymous when one of those addresses appears in a recipient or envelope field, or
when a recipient field could hide one: bytes that are not UTF-8, control characters, a field over
`MAX_FIELD_CHARS`, an encoded word that does not decode (`unknown-8bit` decodes as Latin-1: its
ASCII is intact), unbalanced quotes, comments or angle brackets, a parser exception, or an item
without an address (a bare name may be the alias's display name; a bare word may be its local
part). What real clients write stays readable: `;` between items (Outlook), `Name <>`, empty
groups (`undisclosed-recipients:;`) among addresses, and an unquoted comma in a display name
(`O'Brien, Pat <p@x>`) when a name and an angle address follow and the word before the comma is
not an anonymous local part. A header block that does not end within `MAX_HEADER_BLOCK` bytes
is anonymous. Never raises; every pattern is linear in its input and every field is read within
a size limit.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
_EMPTY_GROUP = re.compile(r"[^:\"<>@()\\]*:\s*")  # `undisclosed-recipients:` (`;` split off)
_EMPTY_ANGLE = re.compile(r"[^<>@]*<\s*>")  # `Student Services <>`
_PHRASE = re.compile(r"[^@<>\"():\\\[\]]+")  # the `O'Brien` of `O'Brien, Pat <p@x>`
_TAG = r"(?:\+[^\s@<>,;:\"()]{0,64})?"  # a plus tag in the text search
_BEFORE = r"(?<![\w.+-])"  # an address found as text starts here ...
_AFTER = r"(?!\.?[\w-])"  # ... and ends here (`anonymous@x.` is it, `anonymous@x.evil` is not)
ANONYMOUS_TAG = "anonymous"  # `anyone+anonymous@` at the domain of an anonymous address
UNKNOWN_8BIT = "unknown-8bit"  # bytes in an unknown ASCII-compatible charset: read as Latin-1


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
        name = charset.split("*")[0]
        codec = codecs.lookup("latin-1" if name.lower() == UNKNOWN_8BIT else name)
        if not getattr(codec, "_is_text_encoding", True) or codec.name in ("punycode", "idna"):
            raise LookupError(charset)
        return octets.decode(codec.name)
    except (binascii.Error, ValueError, LookupError, UnicodeError) as exc:
        raise Unreadable("an encoded word that does not decode") from exc


def decoded_text(value: str) -> str:
    """A field value with its RFC 2047 encoded words decoded; Unreadable when one does not."""
    return _ENCODED_WORD.sub(_strict_word, _ADJACENT_WORDS.sub(r"\1", value))


def _items(value: str) -> list[str]:
    """The top-level items of an address list: split at `,` and `;` outside quotes, comments and
    angle brackets, in a linear scan; Unreadable when those are not balanced."""
    items: list[str] = []
    start, quoted, escaped, comments, angles = 0, False, False, 0, 0
    for at, char in enumerate(value):
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
        elif char in ")<>":
            angles += {"<": 1, ">": -1}.get(char, 2)
            if angles not in (0, 1):
                raise Unreadable("unbalanced quotes, comments or angle brackets")
        elif char in ",;" and not angles:
            items.append(value[start:at].strip())
            start = at + 1
    if quoted or escaped or comments or angles:
        raise Unreadable("unbalanced quotes, comments or angle brackets")
    items.append(value[start:].strip())
    return items


def canonical(address: str) -> str:
    """`"Report+Anonymous"@Example.AC.UK.` → `report+anonymous@example.ac.uk`: no quotes, case or
    trailing dot (the plus tag stays), for comparing addresses."""
    local, _, domain = address.strip().lower().rpartition("@")
    local = local.replace('"', "").replace("\\", "")
    return f"{local}@{domain.rstrip('.')}"


def normalised(address: str) -> str:
    """`"Anonymous+Tag"@Example.AC.UK.` → `anonymous@example.ac.uk`: `canonical` without the plus
    tag."""
    local, _, domain = canonical(address).rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def _pattern(local: str, domain: str, *, tagged: bool) -> re.Pattern[str]:
    tag = _TAG if tagged else ""
    return re.compile(_BEFORE + re.escape(local) + tag + "@" + re.escape(domain) + _AFTER, re.I)


@dataclass(frozen=True)
class AnonymousAddresses:
    """The configured anonymous addresses, as they are matched (see the module docstring)."""

    exact: frozenset[str]  # every configured address, canonical
    plain: frozenset[str]  # those without a plus tag: their plus-variants match too
    domains: frozenset[str]  # where `anyone+anonymous@` matches
    patterns: tuple[re.Pattern[str], ...]  # the same three rules for the text search

    @classmethod
    def of(cls, addresses: Iterable[str]) -> AnonymousAddresses:
        exact = frozenset(canonical(a) for a in addresses if "@" in a)
        plain = frozenset(a for a in exact if "+" not in a.rpartition("@")[0])
        domains = frozenset(a.rpartition("@")[2] for a in exact)
        patterns = []
        for address in sorted(exact):
            local, _, domain = address.rpartition("@")
            patterns.append(_pattern(local, domain, tagged=address in plain))
        if domains:
            alternatives = "|".join(re.escape(d) for d in sorted(domains))
            patterns.append(re.compile(rf"\+{ANONYMOUS_TAG}@(?:{alternatives}){_AFTER}", re.I))
        return cls(exact, plain, domains, tuple(patterns))

    def match(self, address: str) -> bool:
        """True when the address (any case, quoted or not) is one of the anonymous addresses."""
        address = canonical(address)
        local, _, domain = address.rpartition("@")
        return (
            address in self.exact
            or normalised(address) in self.plain
            or (local.partition("+")[2] == ANONYMOUS_TAG and domain in self.domains)
        )

    def search(self, text: str) -> bool:
        """True when one of the anonymous addresses stands alone in the text."""
        return any(pattern.search(text) for pattern in self.patterns)


def _addresses_of(item: str) -> list[str]:
    """The addresses of one top-level item; Unreadable when the parser fails or leaves out an
    address or a part of one."""
    try:
        pairs = getaddresses([item])
    except Exception as exc:  # RecursionError on nested comments, the parser's own bugs
        raise Unreadable("the address parser failed") from exc
    for _name, address in pairs:
        local, at, domain = address.rpartition("@")
        if not (local and at and domain):
            raise Unreadable("an item without an address")
    return [address for _name, address in pairs]


def _name_with_a_comma(item: str, following: str, wanted: AnonymousAddresses) -> bool:
    """True when an item without an address is the first part of the next item's display name
    (`O'Brien, Pat <p@x>`): a plain phrase, not an anonymous local part, followed by a display
    name and an angle address."""
    if not _PHRASE.fullmatch(item) or any(wanted.match(f"{item}@{d}") for d in wanted.domains):
        return False
    try:
        ((name, _address),) = getaddresses([following])
        _addresses_of(following)
    except (ValueError, Unreadable):
        return False
    return bool(name) and "<" in following


def parsed_addresses(value: str, wanted: AnonymousAddresses | None = None) -> list[str]:
    """Every address of an address-list field, canonical; Unreadable when an item could hide an
    address (see the module docstring)."""
    wanted = wanted or AnonymousAddresses.of(())
    items = _items(value)
    found: list[str] = []
    for at, item in enumerate(items):
        if not item or _EMPTY_GROUP.fullmatch(item) or _EMPTY_ANGLE.fullmatch(item):
            continue  # `a@x,, b@x,`, `undisclosed-recipients:;`, `Student Services <>`
        try:
            found += [canonical(address) for address in _addresses_of(item)]
        except Unreadable:
            following = items[at + 1] if at + 1 < len(items) else ""
            if not _name_with_a_comma(item, following, wanted):
                raise
    return found


def _views(text: str) -> list[str]:
    """The field as written, and with white space, quotes and (up to three levels of) comments
    taken out: `"anonymous" (c) @ x` → `anonymous@x`."""
    compact = text
    for _ in range(3):
        compact = _COMMENT.sub("", compact)
    return [text, _QUOTES_AND_SPACE.sub("", compact), _QUOTES_AND_SPACE.sub("", text)]


def _field_is_anonymous(name: str, raw_value: bytes, wanted: AnonymousAddresses) -> bool:
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
        if strict and any(wanted.match(a) for a in parsed_addresses(value, wanted)):
            return True
    except Unreadable:
        if strict or name != "received":
            return True
        texts = [value[:MAX_FIELD_CHARS]]
    return any(wanted.search(view) for text in texts for view in _views(text))


def sent_to_anonymous(raw: bytes, anonymous_addresses: Iterable[str]) -> bool:
    """True when a recipient or envelope field of the top header block names an anonymous
    address, or cannot be read for certain. Never raises."""
    try:
        wanted = AnonymousAddresses.of(anonymous_addresses)
        fields = header_fields(raw)
        if fields is None:
            return True
        seen = 0
        for name, value in fields:
            if name not in RECIPIENT_FIELDS and name not in ENVELOPE_FIELDS:
                continue
            seen += 1
            if seen > MAX_FIELDS or _field_is_anonymous(name, value, wanted):
                return True
    except Exception:  # fail closed: a message we cannot read is anonymous
        return True
    return False
