"""Plain text (.txt, .csv): kept as it is when the bytes really are text.

In: an attachment and its safe name. Out: its charset and content type, or None.
"""

from __future__ import annotations

import unicodedata

from pipeline.report import Attachment

_TEXT_TYPES = {"text/plain", "text/csv"}
_TEXT_SUFFIXES = {".txt": "text/plain", ".csv": "text/csv"}
_TEXT_CONTROLS = {"\t", "\n", "\r", "\f", "\v", "\x1a"}


def _declared_type(attachment: Attachment) -> str:
    return attachment.content_type.split(";", 1)[0].strip().lower()


def _suffix(name: str) -> str:
    return name[name.rfind(".") :].lower() if "." in name else ""


def text_type(attachment: Attachment, name: str) -> str:
    """text/plain or text/csv, from the declared type or else the file name."""
    declared = _declared_type(attachment)
    if declared in _TEXT_TYPES:
        return declared
    return _TEXT_SUFFIXES.get(_suffix(name), "text/plain")


def text_charset(attachment: Attachment, name: str) -> str | None:
    """The charset when the attachment is declared as text and its bytes really are text."""
    if _declared_type(attachment) not in _TEXT_TYPES and _suffix(name) not in _TEXT_SUFFIXES:
        return None
    for charset in _text_charsets(attachment.data):
        try:
            text = attachment.data.decode(charset)
        except UnicodeDecodeError:
            continue
        if all(c in _TEXT_CONTROLS or unicodedata.category(c) != "Cc" for c in text):
            return charset
        return None
    return None


def _text_charsets(data: bytes) -> tuple[str, ...]:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ("utf-16",)
    return ("utf-8", "windows-1252")
