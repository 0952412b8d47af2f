"""Scrub: the text of an anonymous report in; the same text without what names its sender out,
and a plain sentence for each kind of thing removed.

Removed from the report's own text (the lines that are not quoted with `>` and come before a
forwarded or original message):
- a signature block: from a line that is exactly `--` or `-- ` to the end of that stretch of
  text; the lines after a closing salutation ("Thanks,", "Kind regards", "Cheers"...) when they
  are short (name, job title, phone, address lines); a name on the salutation line itself
  ("Thanks, Sam" keeps "Thanks,"); a last line that is the sender's name or address; and
  "Sent from my iPhone" lines;
Removed anywhere:
- reply attributions: `On <date>, <name> wrote:` (also wrapped over two or three lines) and
  its German, French, Spanish, Italian, Portuguese, Welsh and Dutch forms, and
  `-----Original Message-----` lines;
- in an inline header block of a quoted or forwarded message (Outlook's From/Sent/To/Subject,
  Gmail's and Apple Mail's forwarded headers, in several languages), the To, Cc, Bcc and
  Reply-To lines (with their wrapped lines), and the From line when it names the sender; From,
  Date and Subject stay as evidence.

The quoted text itself stays. Works line by line with bounded, anchored patterns; lines over
`MAX_LINE` characters are never matched. Never raises, never makes the text longer, and is
idempotent (a pass is repeated until nothing changes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.report import Report

SIGNATURE_NOTE = "A signature block was removed because this report is anonymous."
ATTRIBUTION_NOTE = "A reply attribution line naming the sender was removed."
RECIPIENTS_NOTE = (
    "Recipient lines (To/Cc) of a quoted or forwarded message were removed because this report "
    "is anonymous."
)
MAX_LINE = 1000
MAX_PASSES = 8
SIGNATURE_LINES = 8  # the most short lines taken as a signature after a salutation
SHORT_LINE = 80
SHORT_WORDS = 10

_DELIMITER = re.compile(r"-- ?")
_DEVICE = re.compile(
    r"(?:sent from my \S.{0,40}|sent from (?:mail|outlook|yahoo mail|gmail)\b.{0,60}"
    r"|get outlook for (?:ios|android).{0,20}|sent from (?:the )?\S+ app.{0,30}"
    r"|von meinem \S.{0,30} gesendet|envoy[ée] de mon \S.{0,30}|enviado desde mi \S.{0,30}"
    r"|verzonden (?:met|vanaf) mijn \S.{0,30}|anfonwyd o fy \S.{0,30})",
    re.I,
)
_SALUTATIONS = (
    r"thanks(?: again| so much| very much| in advance)?|thank you(?: so much| very much)?"
    r"|many thanks|with thanks|best|best wishes|best regards|kind regards|warm regards"
    r"|warmest regards|regards|all the best|cheers|yours sincerely|yours faithfully|sincerely"
    r"|yours|take care|thanks and regards|mit freundlichen gr(?:ü|ue)(?:ß|ss)en"
    r"|viele gr(?:ü|ue)(?:ß|ss)e|liebe gr(?:ü|ue)(?:ß|ss)e|cordialement|bien (?:à|a) vous"
    r"|saludos|un saludo|atentamente"
    r"|met vriendelijke groet(?:en)?|groeten|diolch(?: yn fawr)?|cofion(?: cynnes)?"
    r"|cordiali saluti"
)
_SALUTATION = re.compile(rf"[ \t]*(?:{_SALUTATIONS})[ \t]*[,.!]?[ \t]*", re.I)
_SALUTATION_NAME = re.compile(
    rf"(?P<keep>[ \t]*(?:{_SALUTATIONS})[ \t]*[,.!-]?)[ \t]*"
    r"(?P<name>[A-Z][\w'.-]{0,30}(?:[ \t]+[A-Z][\w'.-]{0,30}){0,3})[ \t]*",
    re.I,
)
_CAPITALISED_NAME = re.compile(r"[A-Z][\w'.-]{0,30}(?:[ \t]+[A-Z][\w'.-]{0,30}){0,3}")
_CONTACT = re.compile(
    r"@|https?://|www\.|\+?\d[\d ()./-]{6,}\d|\b(?:tel|phone|mobile|mob|ext|email|e-mail)\b"
    r"|\((?:she|he|they|ze|xe)/\w+\)|\b(?:student|university|college|department|school|faculty)\b",
    re.I,
)

# Reply attributions, each anchored and bounded: the opening word, up to 400 characters, the
# closing words. Joined over up to three wrapped lines.
_ATTRIBUTION = re.compile(
    r"[ \t>]*(?:"
    r"on\s.{1,400}?\swrote\s?:"
    r"|am\s.{1,400}?\sschrieb\s?.{0,300}:"
    r"|le\s.{1,400}?\sa\s[ée]crit\s?:"
    r"|el\s.{1,400}?\sescribi[óo]\s?:"
    r"|il\s.{1,400}?\sha\sscritto\s?:"
    r"|em\s.{1,400}?\sescreveu\s?:"
    r"|ar\s.{1,400}?\sysgrifennodd\s?.{0,300}:"
    r"|op\s.{1,400}?\s(?:schreef\s?.{0,300}|het\svolgende\sgeschreven)\s?:"
    r"|-{2,}\s*(?:original message|urspr(?:ü|ue)ngliche nachricht|message d'origine"
    r"|mensaje original|oorspronkelijk bericht|messaggio originale|neges wreiddiol)\s*-{2,}"
    r")[ \t]*",
    re.I | re.S,
)
_ATTRIBUTION_START = re.compile(r"[ \t>]*(?:on|am|le|el|il|em|ar|op)\s", re.I)

# Inline header blocks of quoted or forwarded messages.
_FORWARD_MARKER = re.compile(
    r"[ \t]*(?:-{5,}[^-\n]{3,60}-{5,}|_{10,}|begin forwarded message\s?:"
    r"|d[ée]but du message r[ée]exp[ée]di[ée]\s?:|anfang der weitergeleiteten nachricht\s?:"
    r"|inicio del mensaje reenviado\s?:|begin doorgestuurd bericht\s?:)[ \t]*",
    re.I,
)
_LABEL = re.compile(r"[ \t>]*\*?(?P<label>[^\W\d_][\w' -]{0,20}?)\*?[ \t]*:\*?(?:[ \t]|\r?$)")
_FROM_LABELS = {"from", "von", "de", "van", "da", "oddi wrth", "gan"}
_DATE_LABELS = {
    "sent", "date", "gesendet", "datum", "envoyé", "envoye", "enviado", "fecha",
    "verzonden", "inviato", "data", "anfonwyd", "dyddiad", "subject", "betreff", "objet",
    "asunto", "onderwerp", "oggetto", "pwnc", "to", "an", "à", "a", "para", "aan", "at",
}  # fmt: skip
_RECIPIENT_LABELS = {
    "to", "cc", "bcc", "reply-to", "an", "kopie", "à", "a", "para", "aan", "at", "copie",
    "cco", "cci", "copia", "cc/bcc",
}  # fmt: skip
_BLOCK_LABELS = _FROM_LABELS | _DATE_LABELS | _RECIPIENT_LABELS | {"cc"}


@dataclass
class Scrubbed:
    """The scrubbed text and which kinds of thing were removed from it."""

    text: str
    removed: set[str] = field(default_factory=set)


def _label(line: str) -> str | None:
    if len(line) > MAX_LINE:
        return None
    found = _LABEL.match(line)
    return found["label"].strip().lower() if found else None


def _is_quoted(line: str) -> bool:
    return line.lstrip(" \t").startswith(">")


def _names_sender(line: str, hints: list[str]) -> bool:
    lowered = line.lower()
    return any(hint and hint in lowered for hint in hints)


def _attribution_end(lines: list[str], i: int) -> int | None:
    """The index after an attribution starting at line i (over up to three lines), or None."""
    if len(lines[i]) > MAX_LINE:
        return None
    if _ATTRIBUTION.fullmatch(lines[i].rstrip()):
        return i + 1
    if not _ATTRIBUTION_START.match(lines[i]):
        return None
    joined = lines[i].rstrip()
    for j in range(i + 1, min(i + 3, len(lines))):
        if not lines[j].strip() or len(lines[j]) > MAX_LINE:
            return None
        joined += " " + lines[j].strip().lstrip("> ")
        if _ATTRIBUTION.fullmatch(joined):
            return j + 1
    return None


def _header_block_end(lines: list[str], i: int) -> int | None:
    """The end of an inline header block starting at line i (a From line followed within three
    lines by a date, subject or recipient line), or None."""
    if _label(lines[i]) not in _FROM_LABELS:
        return None
    following = [_label(line) for line in lines[i + 1 : i + 4]]
    if not any(label in _DATE_LABELS for label in following):
        return None
    end = i + 1
    while end < len(lines) and lines[end].strip() and end - i < 40:
        end += 1
    return end


def _scrub_header_block(block: list[str], hints: list[str], removed: set[str]) -> list[str]:
    """Drop the recipient lines (and their wrapped lines) and a From line naming the sender."""
    kept: list[str] = []
    dropping = False
    for number, line in enumerate(block):
        label = _label(line)
        if label is not None:
            dropping = label in _RECIPIENT_LABELS or (number == 0 and _names_sender(line, hints))
        if dropping:
            removed.add("attribution" if number == 0 else "recipients")
        else:
            kept.append(line)
    return kept


def _short(line: str) -> bool:
    """A line that may belong to a signature: short, and a name, title or contact detail
    rather than a sentence (which starts in lower case or ends with a full stop)."""
    text, words = line.strip(), len(line.split())
    if len(text) > SHORT_LINE or words > SHORT_WORDS:
        return False
    if _CONTACT.search(text):
        return True
    return not text[:1].islower() and not (words >= 4 and text.endswith((".", "!", "?")))


def _signature_tail(segment: list[str], hints: list[str], removed: set[str]) -> list[str]:
    """One stretch of the sender's own text without its signature."""
    for index, line in enumerate(segment):
        if _DELIMITER.fullmatch(line.rstrip("\r\n")):
            removed.add("signature")
            segment = segment[:index]
            break
    kept = []
    for line in segment:
        if len(line) <= MAX_LINE and _DEVICE.fullmatch(line.strip()):
            removed.add("signature")
        else:
            kept.append(line)
    segment = kept
    for index in range(len(segment) - 1, -1, -1):
        line = segment[index]
        if len(line) > MAX_LINE:
            continue
        if _SALUTATION.fullmatch(line.rstrip("\r")):
            return _after_salutation(segment, index, removed) or segment
        named = _SALUTATION_NAME.fullmatch(line.rstrip("\r"))
        if named and _CAPITALISED_NAME.fullmatch(named["name"]):
            before = _after_salutation(segment, index, removed)
            if before is None:
                return segment
            removed.add("signature")
            return [*before[:-1], named["keep"]]
    return _trailing_name(segment, hints, removed)


def _after_salutation(segment: list[str], index: int, removed: set[str]) -> list[str] | None:
    """The segment up to and including the salutation line when everything after it is a
    signature (name and title lines right after it, then at most a few paragraphs of contact
    details, `SIGNATURE_LINES` lines in all), else None."""
    tail = segment[index + 1 :]
    filled = [line for line in tail if line.strip()]
    if not filled:
        return segment[: index + 1]
    if len(filled) > SIGNATURE_LINES:
        return None
    if not all(_short(line) for line in filled):
        return None
    if filled[0].strip().lower().startswith(("p.s", "ps ", "ps:")):
        return None
    paragraphs = [p for p in "\n".join(tail).split("\n\n") if p.strip()]
    # A name right under the salutation is a signature; anything further down (or after a
    # blank line) only when it carries contact details.
    for number, paragraph in enumerate(paragraphs):
        if (number or not tail[0].strip()) and not _CONTACT.search(paragraph):
            return None
    removed.add("signature")
    return segment[: index + 1]


def _trailing_name(segment: list[str], hints: list[str], removed: set[str]) -> list[str]:
    """Without last lines that are the sender's name or address (or their first name)."""
    names = {h.strip().lower() for h in hints if h.strip()}
    names |= {h.split()[0].lower() for h in hints if h.strip() and "@" not in h}
    end = len(segment)
    while end and (
        not segment[end - 1].strip() or segment[end - 1].strip(" \t\r,.").lower() in names
    ):
        end -= 1
    if any(segment[i].strip() for i in range(end, len(segment))):
        removed.add("signature")
        return segment[:end]
    return segment


def _one_pass(lines: list[str], hints: list[str], removed: set[str], signatures: bool) -> list[str]:
    out: list[str] = []
    own: list[str] = []  # the current stretch of the sender's own text
    forwarded = False
    i = 0

    def flush() -> None:
        out.extend(_signature_tail(own, hints, removed) if own and signatures else own)
        own.clear()

    while i < len(lines):
        line = lines[i]
        attribution = _attribution_end(lines, i)
        if attribution is not None:
            flush()
            removed.add("attribution")
            i = attribution
            continue
        block_end = _header_block_end(lines, i)
        if block_end is not None:
            flush()
            forwarded = True
            out.extend(_scrub_header_block(lines[i:block_end], hints, removed))
            i = block_end
            continue
        if len(line) <= MAX_LINE and _FORWARD_MARKER.fullmatch(line.rstrip("\r")):
            flush()
            forwarded = True
        if forwarded or _is_quoted(line):
            flush()
            out.append(line)
        else:
            own.append(line)
        i += 1
    flush()
    return out


def _hints(hints: Iterable[str]) -> list[str]:
    return [h.strip().lower() for h in hints if h and len(h.strip()) >= 3]


def scrub_text(text: str, hints: Iterable[str] = (), *, signatures: bool = True) -> Scrubbed:
    """The text without signature (unless `signatures` is False), attributions and quoted
    recipients; `hints` are the sender's name and address (a From line or last line naming
    them goes)."""
    names = _hints(hints)
    removed: set[str] = set()
    for _ in range(MAX_PASSES):
        lines = text.split("\n")
        scrubbed = _one_pass(lines, names, removed, signatures)
        if scrubbed == lines:
            break
        text = "\n".join(scrubbed)
    return Scrubbed(text, removed)


def scrub_report(report: Report, hints: Iterable[str] = ()) -> None:
    """Scrub an anonymous report's body and forwarded messages in place, adding a note to
    `report.notes` for each kind of thing removed."""
    names = _hints(hints)
    removed: set[str] = set()
    body = scrub_text(report.body, names)
    report.body = body.text
    removed |= body.removed
    forwarded = []
    for entry in report.forwarded:
        entry, kinds = _scrub_forwarded(entry, names)
        forwarded.append(entry)
        removed |= kinds
    report.forwarded = forwarded
    for kind, note in (
        ("signature", SIGNATURE_NOTE),
        ("attribution", ATTRIBUTION_NOTE),
        ("recipients", RECIPIENTS_NOTE),
    ):
        if kind in removed and note not in report.notes:
            report.notes.append(note)


def _scrub_forwarded(entry: str, hints: list[str]) -> tuple[str, set[str]]:
    """A forwarded message ("From: ...\nDate: ...\n\n<body>") without its To and Cc lines,
    and without its From line when that names the sender. Its text loses reply attributions
    and quoted recipient lines; its signature only when the sender wrote it (it is evidence
    of who wrote it otherwise)."""
    head, blank, rest = entry.partition("\n\n")
    lines = head.split("\n")
    by_sender = any(_label(line) in _FROM_LABELS and _names_sender(line, hints) for line in lines)
    kept = [
        line
        for line in lines
        if _label(line) not in _RECIPIENT_LABELS
        and not (_label(line) in _FROM_LABELS and _names_sender(line, hints))
    ]
    removed = {"attribution"} if by_sender else set()
    if any(_label(line) in _RECIPIENT_LABELS for line in lines):
        removed.add("recipients")
    body = scrub_text(rest, hints, signatures=by_sender)
    return "\n".join(kept) + blank + body.text, removed | body.removed
