"""Scrub signatures: one stretch of an anonymous sender's own text in (the lines before any
quoted or forwarded message), the same lines without its signature block out, adding
"signature" to `removed` when one went. Used by `pipeline.scrub`.

A signature is: everything from a `-- ` delimiter line; "Sent from my iPhone" lines; the short
name, title and contact lines after a closing salutation (also with blank lines between, as in
HTML mail turned into text), or the name on the salutation line itself; a last block (the last
paragraph, or the last `BLOCK_LINES` lines) that starts with the sender's name (or `[sender]`)
and goes on with short name, title, contact or ID lines and no sentence; and last lines that
are the sender's name or address. Lines over `MAX_LINE` characters are never matched.
"""

from __future__ import annotations

from pipeline.scrub.patterns import (
    CAPITALISED_NAME,
    CONTACT,
    DELIMITER,
    DEVICE,
    SALUTATION,
    SALUTATION_NAME,
    SPACES,
)
from pipeline.scrub.sender import SENDER

MAX_LINE = 1000
SIGNATURE_LINES = 8  # the most short lines taken as a signature after a salutation
SHORT_LINE = 80
SHORT_WORDS = 10
BLOCK_LINES = 6  # the most lines of a signature that starts with the sender's name
BLOCK_LINE = 60


def _short(line: str) -> bool:
    """A line that may belong to a signature: short, and a name, title or contact detail
    rather than a sentence (which starts in lower case or ends with a full stop)."""
    text, words = line.strip(), len(line.split())
    if len(text) > SHORT_LINE or words > SHORT_WORDS:
        return False
    if CONTACT.search(text):
        return True
    return not text[:1].islower() and not (words >= 4 and text.endswith((".", "!", "?")))


_CONNECTORS = frozenset(
    {"of", "and", "in", "for", "at", "the", "de", "da", "di", "du", "van", "von", "der", "den"}
    | {"del", "la", "le", "&", "|", "-", "–", "—", "/", ","}
)


def _title_like(line: str) -> bool:
    """A name, degree or job title line: every word capitalised, a number or a connector
    ("Samantha Jones", "LLB Law", "Head of Student Support | Year 2")."""
    words = line.split()
    if not words or len(words) > SHORT_WORDS or len(line.strip()) > SHORT_LINE:
        return False
    for word in words:
        bare = word.strip(",.;:()|\"'")
        capital = bare == "" or word == SENDER or bare[:1].isupper() or bare[:1].isdigit()
        if not capital and bare.lower() not in _CONNECTORS:
            return False
    return words[0][:1].isupper() or words[0] == SENDER or words[0][:1].isdigit()


def _paragraphs(lines: list[str]) -> list[tuple[int, list[str]]]:
    """The runs of non-blank lines, each with the index of its first line."""
    found: list[tuple[int, list[str]]] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        if found and index and lines[index - 1].strip():
            found[-1][1].append(line)
        else:
            found.append((index, [line]))
    return found


def signature_tail(segment: list[str], hints: list[str], removed: set[str]) -> list[str]:
    """One stretch of the sender's own text without its signature."""
    plain = [line.translate(SPACES) for line in segment]
    for index, line in enumerate(plain):
        if DELIMITER.fullmatch(line.rstrip("\r\n")):
            removed.add("signature")
            segment = segment[:index]
            break
    kept = []
    for line in segment:
        if len(line) <= MAX_LINE and DEVICE.fullmatch(line.translate(SPACES).strip()):
            removed.add("signature")
        else:
            kept.append(line)
    segment = kept
    for index in range(len(segment) - 1, -1, -1):
        line = segment[index].translate(SPACES)
        if len(line) > MAX_LINE:
            continue
        if SALUTATION.fullmatch(line.rstrip("\r")):
            return _after_salutation(segment, index, removed) or segment
        named = SALUTATION_NAME.fullmatch(line.rstrip("\r"))
        if named and CAPITALISED_NAME.fullmatch(named["name"]):
            before = _after_salutation(segment, index, removed)
            if before is None:
                return segment
            removed.add("signature")
            return [*before[:-1], named["keep"]]
    return _trailing_name(_trailing_block(segment, hints, removed), hints, removed)


def _sender_names(hints: list[str]) -> set[str]:
    """The sender's names and addresses and first names, lower-cased, and `[sender]`."""
    names = {h.strip().lower() for h in hints if h.strip()}
    names |= {h.split()[0].lower() for h in hints if h.strip() and "@" not in h}
    return names | {SENDER}


def _is_name_line(line: str, names: set[str], full: set[str]) -> bool:
    """A line that is the sender's name ("[sender]", "Jane", "Jane Canary"), or their full
    name followed by a separator and a title ("Jane Canary | BSc Psychology")."""
    text = line.translate(SPACES).strip(" \t\r,.").lower()
    if text in names:
        return True
    return any(
        text.startswith(name) and text[len(name) :].lstrip()[:1] in _SEPARATORS for name in full
    )


_SEPARATORS = frozenset("|,(-–—/·")


def _signature_detail(line: str) -> bool:
    """A short name, title, contact or ID line of a signature: at most `BLOCK_LINE`
    characters, not a sentence (not starting in lower case unless it is a contact detail,
    not ending with sentence punctuation)."""
    text = line.translate(SPACES).strip()
    if not text or len(text) > BLOCK_LINE or len(text.split()) > SHORT_WORDS:
        return False
    if text.endswith((".", "!", "?", ";", ":")) and not text.endswith(SENDER):
        return False
    return bool(CONTACT.search(text)) or not text[:1].islower()


def _trailing_block(segment: list[str], hints: list[str], removed: set[str]) -> list[str]:
    """Without a signature with no salutation or `-- ` line: a trailing block (the last
    paragraph, or the last `BLOCK_LINES` lines) whose first line is the sender's name and
    whose other lines are short name, title, contact or ID lines."""
    end = len(segment)
    while end and not segment[end - 1].strip():
        end -= 1
    names = _sender_names(hints)
    full = {h for h in hints if " " in h.strip() or "@" in h}
    start = None
    for index in range(end - 1, max(end - BLOCK_LINES, 0) - 1, -1):
        line = segment[index]
        if not line.strip() or len(line) > MAX_LINE:
            break
        if _is_name_line(line, names, full) and index < end - 1:
            start = index
        elif not _signature_detail(line):
            break
    if start is None:
        return segment
    removed.add("signature")
    while start and not segment[start - 1].strip():
        start -= 1
    return segment[:start]


def _after_salutation(segment: list[str], index: int, removed: set[str]) -> list[str] | None:
    """The segment up to and including the salutation line when everything after it is a
    signature (name and title lines right after it, then at most a few paragraphs of contact
    details, `SIGNATURE_LINES` lines in all), else None."""
    tail = [line.translate(SPACES) for line in segment[index + 1 :]]
    filled = [line for line in tail if line.strip()]
    if not filled:
        return segment[: index + 1]
    if len(filled) > SIGNATURE_LINES:
        return None
    if not all(_short(line) for line in filled):
        return None
    if any(line.strip().lower().startswith(("p.s", "ps ", "ps:")) for line in filled):
        return None
    # A name right under the salutation is a signature; anything further down (or after a
    # blank line, as HTML mail turned into text has between all its lines) only when it
    # carries contact details or every line is a name or title.
    for start, paragraph in _paragraphs(tail):
        contact = CONTACT.search("\n".join(paragraph))
        if start and not contact and not all(_title_like(line) for line in paragraph):
            return None
    removed.add("signature")
    return segment[: index + 1]


def _trailing_name(segment: list[str], hints: list[str], removed: set[str]) -> list[str]:
    """Without last lines that are the sender's name or address (or their first name)."""
    names = _sender_names(hints)
    end = len(segment)
    while end and (
        not segment[end - 1].strip() or segment[end - 1].strip(" \t\r,.").lower() in names
    ):
        end -= 1
    if any(segment[i].strip() for i in range(end, len(segment))):
        removed.add("signature")
        return segment[:end]
    return segment
