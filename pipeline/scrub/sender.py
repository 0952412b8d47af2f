"""Sender names: the sender's name and address in; text with every mention of them replaced by
`[sender]` out. The last pass of `pipeline.scrub` over an anonymous report's text.

Replaced, as whole words: each address (any case); its local part when it has at least three
characters and is not a common word (any case); the display name (any case, any white space
between its words); and each of its words of three letters or more, as written (case matters,
so the name "May" goes and the verb "may" stays; a lower-case name word that is also a common
word, a particle such as "van" or a title such as "Mrs" is left to the full-name match). A role
or function word ("Lecturer", "Student", "Help", "Me", `ROLE_WORDS`) is never replaced on its
own, in any case, and a display name made only of them ("Not telling") is not looked for at all:
it would turn "my lecturer told me" into "my [sender] told me". A one-word display name that is
a common word ("Grace") is replaced only as written, with its capital.
Display names may arrive RFC 2047-encoded; they are decoded first. Never raises; the text grows
only by `[sender]` standing in for a word of three characters or more; a second pass changes
nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.header import decode_header, make_header

SENDER = "[sender]"
MIN_PART = 3
MAX_HINT = 200

#: Role and function words: a display name made only of these ("Lecturer", "Not telling",
#: "Anonymous Student") names nobody, so it is never replaced in the text; such a word in a
#: longer name is replaced only as part of that whole name, never on its own, in any case.
ROLE_WORDS = frozenset(
    """a about admin administrator advisor adviser after again all also am an and anon
    anonymous any are as at be can college contact could counsellor department did do
    faculty for friend from general get guest had has have he hello help helpdesk her here
    him his how i info just know lecturer let like mail main me member might more most must
    my no nobody none not now of office on one only or other our out over person private
    professor report reporter reports said sales say school see she should so some someone
    staff student support survivor supervisor teacher team telling than that the them then
    there they this to too tutor under university unknown up us user victim was we well were
    what when where who will with witness would you your""".split()  # noqa: SIM905
)
#: Words too common to replace when they are a lower-case name word or an address's local part
#: (a capitalised one, such as "Grace" or "May", is still replaced as a name word).
COMMON_WORDS = ROLE_WORDS | frozenset(
    """art away back bell best bill bird brook case dale dawn day del der des down du each eve
    faith frank gold good grace green guy hope ivy jack joy last lee little long love march
    mark may mike miss mr mrs ms new old pat post rain rob rose ruby stone sue summer van von
    west white wood year""".split()  # noqa: SIM905
)
TITLES = frozenset(
    {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "sir", "dame", "lord", "lady"}
)

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_ENCODED = re.compile(r"=\?[^?\s]{1,64}\?[qQbB]\?[^?\s]*\?=")


@dataclass(frozen=True)
class SenderPatterns:
    """Compiled patterns for one sender: `full` (address, local part, display name) and `parts`
    (single display-name words, case-sensitive)."""

    full: re.Pattern[str] | None
    parts: re.Pattern[str] | None

    def replace(self, text: str, *, parts: bool = True) -> tuple[str, bool]:
        """The text with the sender's names replaced; whether anything was. `parts=False`
        leaves single name words alone (a From line of someone else's message)."""
        changed = False
        for pattern in (self.full, self.parts if parts else None):
            if pattern is None:
                continue
            pieces = text.split(SENDER)  # a replacement is never touched again
            new = SENDER.join(pattern.sub(SENDER, piece) for piece in pieces)
            changed = changed or new != text
            text = new
        return text, changed


def decoded_name(name: str) -> str:
    """A display name with RFC 2047 encoded words decoded (as written when they do not)."""
    if not _ENCODED.search(name):
        return name
    try:
        return str(make_header(decode_header(name)))
    except (ValueError, LookupError, UnicodeError, AssertionError):
        return name


def _alternation(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


def _name_words(name: str) -> list[str]:
    words: list[str] = []
    for word in _WORD.findall(name):
        words.append(word)
        words.extend(re.split(r"['’-]", word) if "-" in word else [])
    return [w for w in words if sum(c.isalpha() for c in w) >= MIN_PART]


def _keep_part(word: str) -> bool:
    lowered = word.lower()
    if lowered in TITLES or lowered in ROLE_WORDS:
        return False
    return not (word == lowered and lowered in COMMON_WORDS)


def names_nobody(name: str) -> bool:
    """Whether a display name is only role and function words ("Lecturer", "Not telling"):
    it is never looked for in the text on its own."""
    words = _WORD.findall(name)
    return all(word.lower() in ROLE_WORDS or word.lower() in TITLES for word in words)


def sender_patterns(hints: Iterable[str]) -> SenderPatterns:
    """Patterns for the sender named by `hints` (display names and addresses, in any order)."""
    full: list[str] = []
    locals_: list[str] = []  # tried after the addresses and names they may be part of
    parts: list[str] = []
    for raw in hints:
        hint = decoded_name((raw or "").strip().strip("<>\"' "))[:MAX_HINT]
        if len(hint) < MIN_PART:
            continue
        if "@" in hint:
            full.append(rf"(?<![\w.+-]){re.escape(hint)}(?![\w-]|\.\w)")
            local = hint.rpartition("@")[0]
            if len(local) >= MIN_PART and local.lower() not in COMMON_WORDS:
                locals_.append(rf"(?<![\w.+-]){re.escape(local)}(?![\w-]|[.+]\w)")
            continue
        words = _WORD.findall(hint)
        if names_nobody(hint):
            continue
        # A one-word name is matched as a name part only (case-sensitive): "Fourth" the name,
        # not "FOURTH" or "fourth" in the text.
        if len(words) > 1 and sum(map(len, words)) >= MIN_PART:
            spaced = r"[\W_]+".join(re.escape(w) for w in words)
            full.append(rf"(?<!\w){spaced}(?!\w)")
        parts.extend(w for w in _name_words(hint) if _keep_part(w))
    ordered = sorted(set(full), key=len, reverse=True) + sorted(set(locals_), key=len, reverse=True)
    full_re = re.compile("|".join(ordered), re.I) if ordered else None
    parts_re = re.compile(rf"(?<!\w)(?:{_alternation(parts)})(?!\w)") if parts else None
    return SenderPatterns(full_re, parts_re)
