"""Shared pieces of the cleaners: the outcome type, the reasons a file is withheld, safe names.

In: a reason or a file name. Out: `Cleaned` values and the sentences the referral shows.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.report import Attachment

MAX_NAME_LENGTH = 100

KEPT = "the original is kept in the encrypted record"
METADATA = "withheld because its metadata could not be removed"
UNKNOWN = "withheld because this kind of file cannot be checked for hidden details"
TOO_LARGE = "withheld because it is too large to check safely"
UNREADABLE = "withheld because it could not be read"
PROTECTED = "withheld because it is password-protected"
EMBEDDED = "withheld because it contains embedded files or macros that cannot be checked"
FAILED = "withheld because it could not be checked"
IMAGE_REMOVED = "hidden details such as location, camera and author were removed"
DOCUMENT_REMOVED = "hidden details such as author and title were removed"
TOO_SLOW = "withheld because it took too long to check"
PART_UNKNOWN = "withheld because it holds parts that cannot be checked for hidden details"
FIELDS = "withheld because it contains fields that show the author, file path or document details"
SIGNED = "withheld because it is digitally signed: the signature names the signer"
LINKED = "withheld because it refers to files outside it by name or path"
HEIF_CONVERTED = (
    "converted to JPEG, and hidden details such as location, camera and author were removed"
)


@dataclass(frozen=True)
class Cleaned:
    """The outcome for one attachment: a cleaned copy or None (withheld), and a referral note."""

    attachment: Attachment | None
    note: str | None
    # For plain text: the charset its bytes were decoded with (also in the content type), so a
    # caller that changes the text can decode and re-encode it the same way.
    charset: str | None = None


class Withhold(Exception):
    """Raised inside this module to withhold an attachment for the given reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Deadline:
    """A time budget checked between steps: past it, `check` withholds what is being cleaned.

    One deadline may span a whole report, so one slow attachment cannot hold up the rest for
    longer than the budget: the attachments after it are withheld at once."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = clock() + seconds

    def expired(self) -> bool:
        return self._clock() > self._end

    def check(self) -> None:
        if self.expired():
            raise Withhold(TOO_SLOW)


def kept(
    name: str, content_type: str, data: bytes, removed: str | None, charset: str | None = None
) -> Cleaned:
    note = f"{name}: {removed}." if removed else None
    return Cleaned(Attachment(filename=name, content_type=content_type, data=data), note, charset)


def withheld(name: str, reason: str) -> Cleaned:
    return Cleaned(None, f"{name}: {reason}; {KEPT}.")


# -- Links ------------------------------------------------------------------------------------

_WEB_LINK = re.compile(r"(https?://|mailto:)", re.IGNORECASE)
# Frame names a link may open in; any other name is free text (it could hold a path).
STANDARD_FRAMES = frozenset({"_self", "_blank", "_parent", "_top"})


def web_link(target: str) -> bool:
    """True for an http(s) or mailto link: one that names no file on the sender's computer or
    network (unlike file:, smb:, UNC \\\\server\\share, C:\\..., relative paths)."""
    return bool(_WEB_LINK.match(target))


# -- File names -------------------------------------------------------------------------------

_UNSAFE_CHARACTERS = str.maketrans(dict.fromkeys('<>:"|?*', "_"))


def safe_name_or_default(attachment: Attachment) -> str:
    try:
        return safe_name(attachment.filename)
    except Exception:
        return "attachment"


def safe_name(filename: str) -> str:
    """Basename only; no separators, control or format characters; at most 100 characters."""
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", filename))[-1]
    base = "".join(c for c in base if unicodedata.category(c) not in {"Cc", "Cf", "Zl", "Zp"})
    base = base.translate(_UNSAFE_CHARACTERS).strip(" .")
    if not base:
        return "attachment"
    if len(base) <= MAX_NAME_LENGTH:
        return base
    stem, dot, extension = base.rpartition(".")
    if dot and stem and len(extension) <= 16:
        return stem[: MAX_NAME_LENGTH - len(extension) - 1].rstrip(" .") + "." + extension
    return base[:MAX_NAME_LENGTH]
