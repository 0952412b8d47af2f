"""Inline OpenPGP blocks: text in; the same text without clear-signed message headers, signature
blocks and public key blocks (a key id or user id names the signer) out.

`-----BEGIN PGP SIGNED MESSAGE-----` and its `Hash:` lines go, and the dash-escaped lines of the
signed text (`- --`) are unescaped; `-----BEGIN PGP SIGNATURE-----` or `PUBLIC KEY BLOCK` up to
its END line (or the end of the text when there is none) goes. A `>` quote prefix is allowed.
Never raises; never makes the text longer.
"""

from __future__ import annotations

import re

_PREFIX = r"[ \t>]*"
_SIGNED = re.compile(_PREFIX + r"-----BEGIN PGP SIGNED MESSAGE-----[ \t\r]*")
_HASH = re.compile(_PREFIX + r"Hash:[ \t]*[\w, -]{1,80}[ \t\r]*")
_BEGIN = re.compile(_PREFIX + r"-----BEGIN PGP (?P<kind>SIGNATURE|PUBLIC KEY BLOCK)-----[ \t\r]*")
_END = re.compile(_PREFIX + r"-----END PGP (?:SIGNATURE|PUBLIC KEY BLOCK)-----[ \t\r]*")
_ESCAPED = re.compile(r"(?P<prefix>[ \t>]*)- (?=-)")
MAX_LINE = 1000


def _match(pattern: re.Pattern[str], line: str) -> bool:
    return len(line) <= MAX_LINE and pattern.fullmatch(line) is not None


def strip_pgp(text: str) -> tuple[str, bool]:
    """The text without inline OpenPGP headers and blocks; whether anything was removed."""
    lines = text.split("\n")
    out: list[str] = []
    removed = False
    signed = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _match(_SIGNED, line):
            removed, signed = True, True
            i += 1
            while i < len(lines) and _match(_HASH, lines[i]):
                i += 1
            if i < len(lines) and not lines[i].strip(" \t\r>"):
                i += 1  # the blank line after the armour header
            continue
        if _match(_BEGIN, line):
            removed, signed = True, False
            i += 1
            while i < len(lines) and not _match(_END, lines[i]):
                i += 1
            i += 1
            continue
        if signed and len(line) <= MAX_LINE:
            line = _ESCAPED.sub(r"\g<prefix>", line, count=1) if _ESCAPED.match(line) else line
        out.append(line)
        i += 1
    return "\n".join(out), removed
