"""MIME text, read leniently: a parsed `Message` (or its parts) in, plain `str` values out.

The pieces parse.py, body.py and acks.py share: header fields as one line of text (a field
the header registry cannot parse is decoded by hand; encoded words in unknown charsets read as
UTF-8), a part's content type, disposition, file name and decoded payload, text in the charset
a sender named, and HTML as visible text. Every function here is linear in its input and
never raises for bad input: an unreadable value is absent, empty or opaque data.
"""

from __future__ import annotations

import binascii
import codecs
import html
import re
from email.message import Message

from pipeline.limits import safe_to_parse

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,64})\?([qQbB])\?([^?\s]*)\?=")
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_HTML_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"  # a comment; an unclosed one runs to the end, as in a browser
    r"|<(script|style|head|title|noscript|template)\b[^<>]*>.*?(?:</\1\s*>|\Z)"
    r"|</?([a-z][a-z0-9]*)\b[^<>]*>"  # a tag: only line breaks are kept
    r"|<[!?][^<>]*>",  # doctype, CDATA, processing instruction
    re.S | re.I,
)
#: Codecs written in Python with quadratic decoders: never run on sender-sized data.
_SLOW_CODECS = frozenset({"punycode", "idna"})
_SLOW_WORD = re.compile(r"=\?(?:punycode|idna)[?*]", re.I)  # left to our own decoder
_HTML_BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})


def html_to_text(text: str) -> str:
    """HTML to plain text: visible text only, no scripts, styles or remote resources.

    A tokenizer of bounded regular expressions, linear in the input: `html.parser` in CPython
    3.11 takes minutes on a few hundred KB of unclosed tags.
    """
    pieces: list[str] = []
    position = 0
    for token in _HTML_TOKEN.finditer(text):
        pieces.append(html.unescape(text[position : token.start()]))
        if (token.group(2) or "").lower() in _HTML_BREAKS:
            pieces.append("\n")
        position = token.end()
    pieces.append(html.unescape(text[position:]))
    joined = re.sub(r"[ \t\r\f\v]+", " ", "".join(pieces))
    return re.sub(r"\n\s*\n\s*", "\n\n", joined).strip()


def decode_text(data: bytes, charset: str | None) -> str:
    """Bytes in the charset a sender named, as text. An unknown charset, a codec that is not a
    text encoding (rot13, base64) or a slow one (punycode: minutes for 1 MB) reads as UTF-8."""
    try:
        codec = codecs.lookup(charset or "utf-8")
    except (LookupError, ValueError, TypeError):
        codec = codecs.lookup("utf-8")
    if not getattr(codec, "_is_text_encoding", True) or codec.name in _SLOW_CODECS:
        codec = codecs.lookup("utf-8")
    try:
        return data.decode(codec.name, "replace")
    except Exception:  # a codec that fails even with errors="replace"
        return data.decode("utf-8", "replace")


def clean_header(value: object) -> str:
    """A header value as one line of text, with no control characters."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", str(value)).strip()


# --- header fields ----------------------------------------------------------------------------


def raw_values(msg: Message, name: str) -> list[str]:
    """Every `name` field as received (unfolded), without the header registry."""
    wanted = name.lower()
    return [
        re.sub(r"[\r\n]", "", str(value)).strip()
        for key, value in msg.raw_items()
        if str(key).lower() == wanted
    ]


def _decode_word(found: re.Match[str]) -> str:
    charset, kind, data = found.groups()
    try:
        if kind in "bB":
            octets = binascii.a2b_base64(data + "=" * (-len(data) % 4))
        else:
            octets = binascii.a2b_qp(data.encode("ascii", "replace"), header=True)
    except (binascii.Error, ValueError):
        return found.group(0)
    return decode_text(octets, charset.split("*")[0])


def octets_as_text(value: str) -> str:
    """A raw header value (the parser keeps 8-bit bytes as surrogates) with 8-bit read as UTF-8."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def lenient_text(value: str) -> str:
    """A raw header value as one line of text: 8-bit bytes read as UTF-8, encoded words decoded
    where they can be, unknown charsets read as UTF-8."""
    text = re.sub(r"(\?=)\s+(?==\?)", r"\1", octets_as_text(value))  # adjacent encoded words
    return clean_header(_ENCODED_WORD.sub(_decode_word, text))


def header(msg: Message, name: str) -> str | None:
    """The first `name` field as one line of text, or None when absent."""
    values = raw_values(msg, name)
    if not values:
        return None
    if safe_to_parse(name, values[0]) and not _SLOW_WORD.search(values[0]):
        try:
            return clean_header(msg[name])
        except Exception:  # the header registry's IndexError, LookupError, RecursionError ...
            pass
    return lenient_text(values[0])


# --- MIME parts -------------------------------------------------------------------------------


def content_type(part: Message) -> str:
    """The part's type; an unreadable one is opaque data, never the body."""
    try:
        ctype = part.get_content_type()
    except Exception:
        return "application/octet-stream"
    return ctype if _MIME_TYPE.fullmatch(ctype) else "application/octet-stream"


def disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def filename(part: Message) -> str | None:
    """The part's file name as one safe path component, or None."""
    try:
        name = part.get_filename()
    except Exception:
        return None
    name = clean_header(name or "").replace("/", "_").replace("\\", "_")
    return name[:255] or None


def payload(part: Message) -> bytes:
    """A leaf part's decoded content (base64, quoted-printable), or b"" when unreadable."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return b""
    return data if isinstance(data, bytes) else b""


def text_of(part: Message) -> str:
    """A text part's content as text (HTML is left as it is)."""
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_text(payload(part), charset)


def transfer_encoding(part: Message) -> str:
    values = raw_values(part, "Content-Transfer-Encoding")
    return values[0].strip().lower() if values else "7bit"
