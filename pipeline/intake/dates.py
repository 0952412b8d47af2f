"""Dates in form exports: a cell's text in; out, a submission time as a datetime
(`parse_date`, `parse_moment`) or a date answer as the referral shows it (`answer_date`).

Submission times are written by the platform; ISO 8601 is always accepted, and a date whose day
and month could be swapped (03/04/2026) needs the form's `date_format`. Date answers are typed
by the reporter (or picked in a widget): a date-only answer stays a date (2026-11-20, not
midnight UTC), a moment keeps the zone it names (none when it names none), free text such as
"after the party on Friday" is kept as written, and an ambiguous date is kept as written with
a note, for the caseworker to read.

A ValueError raised here never quotes the text it was given: it says what is wrong, and the
caller names the column. strptime's own messages (which quote the text) never pass through.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

_EXAMPLE_DATE = {
    "google": "2026/11/24 10:15:32 am GMT",
    "microsoft": "11/24/26 10:15:32",
    "qualtrics": "2026-11-24 10:15:32",
    "jisc": "24/11/2026 10:15",
    "generic": "2026-11-24T10:15:32Z",
}
_DATE_FORMATS = {
    "/": ("%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d/%m/%y", "%m/%d/%y"),
    ".": ("%d.%m.%Y",),
}
_ZONE = re.compile(
    r"^(?P<moment>.*?)\s*\b(?:GMT|UTC)(?:(?P<sign>[+-])(?P<h>\d{1,2})(?::?(?P<m>\d\d))?)?$", re.I
)
_TIME_DIRECTIVE = re.compile(r"%[-#]?[HIMSfpXcTRzZ]")


def parse_date(text: str, dialect: str, date_format: str | None = None) -> datetime:
    """A platform's timestamp text as a datetime in UTC (the text taken as UTC when it names no
    zone).

    ISO 8601 is always accepted. A date whose day and month could be swapped (03/04/2026) is read
    with `date_format` (a strptime format) when given, else ValueError says it is ambiguous.
    """
    moment = parse_moment(text, dialect, date_format)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def parse_moment(text: str, dialect: str, date_format: str | None) -> datetime:
    """A timestamp as written by `dialect`, naive when the text names no zone; ValueError (which
    does not quote the text) when it is not one."""
    if dialect not in _EXAMPLE_DATE:
        raise ValueError(f"unknown dialect {dialect!r}; use one of {', '.join(_EXAMPLE_DATE)}")
    text = " ".join(text.split())
    if not text:
        raise ValueError("the date is empty")
    if date_format:
        try:
            return datetime.strptime(text, date_format)
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    moment, zone = _split_zone(text)
    readings = _readings(moment)
    unmatched = f" (date_format {date_format!r} does not match it)" if date_format else ""
    if not readings:
        raise ValueError(
            f"not a date as {dialect} writes them (e.g. '{_EXAMPLE_DATE[dialect]}') nor "
            f"ISO 8601{unmatched}; set date_format for this form"
        )
    if len(readings) > 1:
        fmt1, fmt2 = (fmt for _, fmt in sorted(readings.items())[:2])
        raise ValueError(
            f"day and month are ambiguous (either could come first){unmatched}; set "
            f"date_format for this form, e.g. '{fmt1}' or '{fmt2}'"
        )
    found = next(iter(readings))
    return found.replace(tzinfo=zone) if zone else found


def answer_date(text: str, date_format: str | None = None) -> str:
    """A date answer as the referral shows it: `2026-11-20` for a date, `2026-11-20 21:30`
    (with the offset it names, if any) for a moment, else the text as written; an ambiguous
    date (03/04/2026, no `date_format`) as written with a note naming both readings."""
    cleaned = " ".join(text.split())
    if date_format:
        try:
            return _shown(datetime.strptime(cleaned, date_format), date_format)
        except ValueError:
            pass
    try:
        return date.fromisoformat(cleaned).isoformat()
    except ValueError:
        pass
    try:
        return _shown(datetime.fromisoformat(cleaned), "%H:%M")
    except ValueError:
        pass
    try:
        moment, zone = _split_zone(cleaned)
    except ValueError:
        return text
    readings = _readings(moment)
    if len(readings) == 1:
        ((found, fmt),) = readings.items()
        return _shown(found.replace(tzinfo=zone) if zone else found, fmt)
    if len(readings) > 1:
        first, second = sorted(readings)[:2]
        return (
            f"{text} (as written: day and month are ambiguous, "
            f"{first.day} {first:%B %Y} or {second.day} {second:%B %Y})"
        )
    return text


def _shown(moment: datetime, fmt: str) -> str:
    """A date when `fmt` reads no time of day, else the moment to the minute (or second)."""
    if not _TIME_DIRECTIVE.search(fmt):
        return moment.date().isoformat()
    precise = moment.second or moment.microsecond
    return moment.isoformat(sep=" ", timespec="seconds" if precise else "minutes")


def _readings(moment: str) -> dict[datetime, str]:
    """Each different datetime the text reads as, with the first format that reads it so."""
    readings: dict[datetime, str] = {}
    for fmt in _candidate_formats(moment):
        try:
            readings.setdefault(datetime.strptime(moment, fmt), fmt)
        except ValueError:
            continue
    return readings


def _split_zone(text: str) -> tuple[str, tzinfo | None]:
    """'... GMT', '... GMT+1', '... UTC-05:30' -> the text before it and that fixed zone."""
    match = _ZONE.match(text)
    if not match:
        return text, None
    hours, minutes = int(match["h"] or 0), int(match["m"] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError("the zone offset is out of range")
    offset = timedelta(hours=hours, minutes=minutes) * (-1 if match["sign"] == "-" else 1)
    return match["moment"], timezone(offset)


def _candidate_formats(moment: str) -> list[str]:
    """The strptime formats that could fit: each day/month order, the one time shape given."""
    day, _, clock = moment.partition(" ")
    dates = next((formats for sep, formats in _DATE_FORMATS.items() if sep in day), ())
    if not clock:
        return list(dates)
    seconds = ":%S" if clock.count(":") >= 2 else ""
    if clock.lower().endswith(("am", "pm")):
        shape = f"%I:%M{seconds} %p"
    else:
        shape = f"%H:%M{seconds}" + (".%f" if seconds and "." in clock else "")
    return [f"{d} {shape}" for d in dates]
