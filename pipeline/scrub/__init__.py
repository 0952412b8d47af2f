"""Scrub: the text of an anonymous report in; the same text without what names its sender out,
and a plain sentence for each kind of thing removed.

Removed from the report's own text (the lines that are not quoted with `>` and come before a
forwarded or original message; signatures in `pipeline.scrub.signature`):
- a signature block: from a line that is `--` (then a space, a no-break or other Unicode space,
  or nothing) to the end of that stretch of text; the lines after a closing salutation
  ("Thanks,", "Kind regards", "Love,", "Thx", "Thanks x"...) when they are short (name, job
  title, phone, address lines), also when blank lines separate them as in HTML mail turned
  into text; a name on the salutation line itself ("Thanks, Sam" keeps "Thanks,"); a last line
  that is the sender's name or address; a last block (the last paragraph, or the last six
  lines) that starts with the sender's name (or `[sender]`) and goes on with short name,
  title, contact or ID lines and no sentence; and "Sent from my iPhone" lines;
- inline PGP: the clear-signed message header and signature or key blocks (`pipeline.scrub.pgp`);
Removed anywhere:
- reply attributions: `On <date>, <name> wrote:` (also wrapped over up to four lines) and its
  German, French, Spanish, Italian, Portuguese, Welsh, Dutch, Swedish, Danish, Norwegian,
  Polish, Russian, Japanese, Chinese and Turkish forms, and `-----Original Message-----` lines
  (patterns in `pipeline.scrub.patterns`); in any language, a line that names an address or
  the sender (or is "X wrote on <date>:") and ends with a colon, right above quoted text (or,
  naming the sender, above a header block), with the dated first half of a wrapped one;
- in an inline header block of a quoted or forwarded message (Outlook's From/Sent/To/Subject,
  Gmail's and Apple Mail's forwarded headers, in several languages), the To, Cc, Bcc and
  Reply-To lines (with their wrapped lines), and every From (De, Von, Van...) line that names
  the sender, also in nested quoted blocks; someone else's From, Date and Subject stay as
  evidence;
- a quoted phone-number line under a quoted salutation and the sender's quoted name.
Replaced anywhere: the sender's address, local part, display name and name words, with
`[sender]` (`pipeline.scrub.sender`); the From line of someone else's message keeps single name
words it shares with the sender.

The quoted text itself stays. Works line by line with bounded, anchored patterns; lines over
`MAX_LINE` characters are never matched. Never raises, never makes the text longer except by
`[sender]` standing in for a name word of three or more characters, and is idempotent (a pass
is repeated until nothing changes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.report import Report
from pipeline.scrub.patterns import (
    ADDRESS,
    ATTRIBUTION,
    ATTRIBUTION_LINES,
    ATTRIBUTION_START,
    DATE_LABELS,
    FORWARD_MARKER,
    FROM_LABELS,
    LABEL,
    PHONE,
    RECIPIENT_LABELS,
    SALUTATION,
    SPACES,
    WROTE_ON,
)
from pipeline.scrub.pgp import strip_pgp
from pipeline.scrub.sender import (
    SENDER,
    SenderPatterns,
    decoded_name,
    names_nobody,
    sender_patterns,
)
from pipeline.scrub.signature import MAX_LINE, SHORT_LINE, SIGNATURE_LINES, signature_tail

SIGNATURE_NOTE = "A signature block was removed because this report is anonymous."
ATTRIBUTION_NOTE = "A reply attribution line naming the sender was removed."
RECIPIENTS_NOTE = (
    "Recipient lines (To/Cc) of a quoted or forwarded message were removed because this report "
    "is anonymous."
)
SENDER_NOTE = (
    "The sender's name and address were replaced with [sender] because this report is anonymous."
)
PGP_NOTE = (
    "An inline PGP signature or key was removed because this report is anonymous (its key id "
    "names the signer)."
)
_NOTES = (
    ("signature", SIGNATURE_NOTE),
    ("attribution", ATTRIBUTION_NOTE),
    ("recipients", RECIPIENTS_NOTE),
    ("pgp", PGP_NOTE),
    ("sender", SENDER_NOTE),
)
MAX_PASSES = 8


@dataclass
class Scrubbed:
    """The scrubbed text and which kinds of thing were removed from it."""

    text: str
    removed: set[str] = field(default_factory=set)


def _label(line: str) -> str | None:
    if len(line) > MAX_LINE:
        return None
    found = LABEL.match(line)
    return found["label"].strip().lower() if found else None


def _is_quoted(line: str) -> bool:
    return line.lstrip(" \t").startswith(">")


def _names_sender(line: str, hints: list[str]) -> bool:
    lowered = line.lower()
    return SENDER in line or any(hint and hint in lowered for hint in hints)


def _generic_attribution(lines: list[str], i: int, hints: list[str]) -> bool:
    """Whether line i is an attribution in any language: it names an address (or is "X wrote
    on <date>:"), ends with a colon and comes right before quoted text (one blank line may
    come between); or it names the sender and comes right before a header block."""
    if i >= len(lines) or len(lines[i]) > MAX_LINE:
        return False
    text = lines[i].translate(SPACES).rstrip()
    if not text.endswith((":", "：")):
        return False
    own = _names_sender(text, hints)
    if not (own or ADDRESS.search(text) or WROTE_ON.fullmatch(text)):
        return False
    following = i + 1
    if following < len(lines) and not lines[following].strip():
        following += 1
    if following >= len(lines):
        return False
    return _is_quoted(lines[following]) or (own and _header_block_end(lines, following) is not None)


def _wrapped_start(lines: list[str], i: int) -> bool:
    """Whether line i may be the first half of a wrapped attribution: a short line with a
    date or time in it, not a sentence, first in its paragraph."""
    line = lines[i].translate(SPACES).strip()
    return (
        0 < len(line) <= SHORT_LINE
        and any(c.isdigit() for c in line)
        and not line.endswith((".", "!", "?", ":"))
        and (i == 0 or not lines[i - 1].strip())
    )


def _attribution_end(lines: list[str], i: int, hints: list[str]) -> int | None:
    """The index after an attribution starting at line i (over up to three lines), or None."""
    if len(lines[i]) > MAX_LINE:
        return None
    if ATTRIBUTION.fullmatch(lines[i].translate(SPACES).rstrip()):
        return i + 1
    if _generic_attribution(lines, i, hints):
        return i + 1
    if _wrapped_start(lines, i) and _generic_attribution(lines, i + 1, hints):
        return i + 2
    if not ATTRIBUTION_START.match(lines[i]):
        return None
    joined = lines[i].translate(SPACES).rstrip()
    for j in range(i + 1, min(i + ATTRIBUTION_LINES, len(lines))):
        if not lines[j].strip() or len(lines[j]) > MAX_LINE:
            return None
        joined += " " + lines[j].translate(SPACES).strip().lstrip("> ")
        if ATTRIBUTION.fullmatch(joined):
            return j + 1
    return None


def _header_block_end(lines: list[str], i: int) -> int | None:
    """The end of an inline header block starting at line i (a From line followed within three
    lines by a date, subject or recipient line), or None."""
    if _label(lines[i]) not in FROM_LABELS:
        return None
    following = [_label(line) for line in lines[i + 1 : i + 4]]
    if not any(label in DATE_LABELS for label in following):
        return None
    end = i + 1
    while end < len(lines) and lines[end].strip(" \t\r>") and end - i < 40:
        end += 1
    return end


def _scrub_header_block(block: list[str], hints: list[str], removed: set[str]) -> list[str]:
    """Drop the recipient lines (and their wrapped lines) and a From line naming the sender."""
    kept: list[str] = []
    dropping, kind = False, "recipients"
    for line in block:
        label = _label(line)
        if label is not None:
            own = label in FROM_LABELS and _names_sender(line, hints)
            dropping = label in RECIPIENT_LABELS or own
            kind = "attribution" if own else "recipients"
        if dropping:
            removed.add(kind)
        else:
            kept.append(line)
    return kept


def _one_pass(lines: list[str], hints: list[str], removed: set[str], signatures: bool) -> list[str]:
    out: list[str] = []
    own: list[str] = []  # the current stretch of the sender's own text
    forwarded = False
    i = 0

    def flush() -> None:
        out.extend(signature_tail(own, hints, removed) if own and signatures else own)
        own.clear()

    while i < len(lines):
        line = lines[i]
        attribution = _attribution_end(lines, i, hints)
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
        if len(line) <= MAX_LINE and FORWARD_MARKER.fullmatch(line.rstrip("\r")):
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
    """The sender's names and addresses, lower-cased, without names that name nobody."""
    return [
        h.strip().lower()
        for h in hints
        if h and len(h.strip()) >= 3 and not names_nobody(decoded_name(h.strip()))
    ]


def _quoted_phones(lines: list[str], hints: list[str], removed: set[str]) -> list[str]:
    """Without quoted phone-number lines of the sender's own quoted signature: a quoted
    salutation, then a quoted line naming the sender, then the number, within a few lines."""
    kept: list[str] = []
    for index, line in enumerate(lines):
        if _is_quoted(line) and len(line) <= MAX_LINE:
            content = line.translate(SPACES).lstrip(" \t>").rstrip()
            first = index
            while first > max(0, index - SIGNATURE_LINES) and _is_quoted(lines[first - 1]):
                first -= 1
            before = lines[first:index]
            if (
                PHONE.fullmatch(content)
                and any(SALUTATION.fullmatch(b.lstrip(" \t>").rstrip()) for b in before)
                and any(SENDER in b or _names_sender(b, _first_names(hints)) for b in before)
            ):
                removed.add("signature")
                continue
        kept.append(line)
    return kept


def _first_names(hints: list[str]) -> list[str]:
    return hints + [h.split()[0] for h in hints if "@" not in h and len(h.split()[0]) >= 3]


def _replace_names(lines: list[str], patterns: SenderPatterns, removed: set[str]) -> list[str]:
    """Every mention of the sender replaced with `[sender]`; the From line of an inline header
    block (someone else's message: the sender's own was removed) keeps single name words."""
    out = []
    for index, line in enumerate(lines):
        own_from = _header_block_end(lines, index) is not None
        new, changed = patterns.replace(line, parts=not own_from)
        if changed:
            removed.add("sender")
        out.append(new)
    return out


def scrub_text(text: str, hints: Iterable[str] = (), *, signatures: bool = True) -> Scrubbed:
    """The text without signature and inline PGP blocks (unless `signatures` is False: someone
    else wrote it), attributions and quoted recipients, and with the sender's name and address
    replaced by `[sender]`; `hints` are the sender's names and addresses."""
    given = [h for h in hints if h]
    names = _hints(given)
    patterns = sender_patterns(given)
    removed: set[str] = set()
    if signatures:
        text, pgp = strip_pgp(text)
        if pgp:
            removed.add("pgp")
    for _ in range(MAX_PASSES):
        lines = text.split("\n")
        scrubbed = _one_pass(lines, names, removed, signatures)
        scrubbed = _quoted_phones(scrubbed, names, removed)
        scrubbed = _replace_names(scrubbed, patterns, removed)
        if scrubbed == lines:
            break
        text = "\n".join(scrubbed)
    return Scrubbed(text, removed)


def notes_for(removed: set[str]) -> list[str]:
    """The sentences for the referral saying what was removed, in a fixed order."""
    return [note for kind, note in _NOTES if kind in removed]


def scrub_report(report: Report, hints: Iterable[str] = ()) -> None:
    """Scrub an anonymous report's body and forwarded messages in place, adding a note to
    `report.notes` for each kind of thing removed."""
    given = [h for h in hints if h]
    removed: set[str] = set()
    body = scrub_text(report.body, given)
    report.body = body.text
    removed |= body.removed
    forwarded = []
    for entry in report.forwarded:
        entry, kinds = _scrub_forwarded(entry, given)
        forwarded.append(entry)
        removed |= kinds
    report.forwarded = forwarded
    report.notes.extend(note for note in notes_for(removed) if note not in report.notes)


def scrub_text_attachment(
    text: str,
    sender_name: str | None,
    sender_address: str | None,
    *,
    more: Iterable[str] = (),
) -> tuple[str, list[str]]:
    """A text attachment's decoded text scrubbed like the report's own text (Exchange turns
    the text after an inline photo into `ATT00001.txt`), and the notes saying what went;
    `more` are further names and addresses of the sender."""
    result = scrub_text(text, [sender_name or "", sender_address or "", *more])
    return result.text, notes_for(result.removed)


def _scrub_forwarded(entry: str, given: list[str]) -> tuple[str, set[str]]:
    """A forwarded message ("From: ...\nDate: ...\n\n<body>") without its To and Cc lines,
    and without its From line when that names the sender. Its text loses reply attributions
    and quoted recipient lines; its signature only when the sender wrote it (it is evidence
    of who wrote it otherwise)."""
    hints = _hints(given)
    patterns = sender_patterns(given)
    head, blank, rest = entry.partition("\n\n")
    lines = head.split("\n")
    by_sender = any(_label(line) in FROM_LABELS and _names_sender(line, hints) for line in lines)
    kept = [
        line
        for line in lines
        if _label(line) not in RECIPIENT_LABELS
        and not (_label(line) in FROM_LABELS and _names_sender(line, hints))
    ]
    removed = {"attribution"} if by_sender else set()
    if any(_label(line) in RECIPIENT_LABELS for line in lines):
        removed.add("recipients")
    named = []
    for line in kept:  # the From line of someone else's message keeps single name words
        line, changed = patterns.replace(line, parts=_label(line) not in FROM_LABELS)
        named.append(line)
        removed |= {"sender"} if changed else set()
    body = scrub_text(rest, given, signatures=by_sender)
    return "\n".join(named) + blank + body.text, removed | body.removed
