"""The referral says when the reporter sent the report (the message's Date, a form's submission
time) and when it was received, in the deployment's time zone (`[display] timezone`, default
Europe/London); an anonymous report's times are to the hour. Read from the real referral: the
daemon runs as a process, the referral is taken from the SMTP sink and decrypted.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pipeline.config import ConfigError, load_config
from tests.integration.conftest import ANONYMOUS, Deployment, email

LONDON = ZoneInfo("Europe/London")
# A Qualtrics export mapped by question text; RecordedDate is written in UTC.
QUALTRICS_FORM = """
[[forms]]
id = "qualtrics"
path = "exports/*.csv"
settle_seconds = 0
[forms.columns]
description = "Please describe the incident"
location = "Where did it happen?"
"""


def last_summer_morning() -> datetime:
    """09:15 UTC on the latest 1 July before now: British Summer Time, within a year."""
    now = datetime.now(UTC)
    moment = datetime(now.year, 7, 1, 9, 15, tzinfo=UTC)
    return moment if moment < now else moment.replace(year=now.year - 1)


def referral_text(deployment: Deployment, marker: str) -> str:
    """The text of the one decrypted referral whose report holds `marker`."""
    texts = []
    for inner in deployment.referrals():
        message = message_from_bytes(inner, policy=policy.default)
        assert isinstance(message, EmailMessage)
        part = message.get_body(("plain",))
        assert part is not None
        texts.append(part.get_content())
    (found,) = {text for text in texts if marker in text}
    return found


def line(text: str, label: str) -> str:
    return next(row for row in text.splitlines() if row.startswith(label))


def shown(moment: datetime) -> str:
    return moment.astimezone(LONDON).strftime("%Y-%m-%d %H:%M %Z")


def write_qualtrics(path: Path, recorded: datetime, description: str) -> None:
    ids = ["RecordedDate", "ResponseId", "Q1", "Q2"]
    texts = [
        "Recorded Date",
        "Response ID",
        "Please describe\nthe incident",
        "Where did it happen?",
    ]
    imports = [{"ImportId": "recordedDate", "timeZone": "UTC"}, {"ImportId": "_recordId"}]
    imports += [{"ImportId": "QID1_TEXT"}, {"ImportId": "QID2_TEXT"}]
    row = [recorded.strftime("%Y-%m-%d %H:%M:%S"), "R_times", description, "Library"]
    path.parent.mkdir(exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerows([ids, texts, [json.dumps(i) for i in imports], row])


def test_referrals_show_sent_and_received_times_in_london(deployment: Deployment) -> None:
    sent = last_summer_morning()
    deployment.write(extra=QUALTRICS_FORM)
    dated = email("NAMED-TIMES report", message_id="<times-named@x>")
    deployment.imap.append(dated.replace(b"Tue, 24 Nov 2026 10:00:00 +0000", _date(sent)))
    anonymous_sent = sent + timedelta(minutes=32)  # 09:47 UTC: 10:00 BST to the hour
    anonymous = email("ANON-TIMES report", to=ANONYMOUS, message_id="<times-anon@x>")
    deployment.imap.append(
        anonymous.replace(b"Tue, 24 Nov 2026 10:00:00 +0000", _date(anonymous_sent))
    )
    bogus = email("BOGUS-DATE report", message_id="<times-bogus@x>")
    deployment.imap.append(bogus.replace(b"Tue, 24 Nov 2026", b"Thu, 01 Jan 1970"))
    submitted = sent + timedelta(days=2, minutes=5)
    write_qualtrics(deployment.root / "exports" / "export.csv", submitted, "FORM-TIMES report")

    before = datetime.now(UTC).replace(second=0, microsecond=0)
    run = deployment.run_once()
    after = datetime.now(UTC)
    assert run.returncode == 0, run.stderr
    minutes = range(int((after - before).total_seconds()) // 60 + 1)
    received = {shown(before + timedelta(minutes=n)) for n in minutes}

    named = referral_text(deployment, "NAMED-TIMES")
    assert line(named, "Sent:") == f"Sent:       {shown(sent)} (as dated by the reporter's mail)"
    assert shown(sent).endswith("10:15 BST")  # 09:15 UTC, in British Summer Time
    assert line(named, "Received:")[12:32] in received

    form = referral_text(deployment, "FORM-TIMES")
    assert line(form, "Sent:") == f"Sent:       {shown(submitted)} (submitted on the form)"
    assert shown(submitted).endswith("10:20 BST")
    assert line(form, "Received:").endswith("(via form, form qualtrics)")

    hidden = referral_text(deployment, "ANON-TIMES")
    assert line(hidden, "Sent:").startswith(f"Sent:       {shown(sent)[:11]}10:00 BST")
    assert line(hidden, "Received:")[26:28] == "00"  # to the hour
    assert "Both times are to the hour" in hidden

    assert line(referral_text(deployment, "BOGUS-DATE"), "Sent:") == "Sent:       not known"


def _date(moment: datetime) -> bytes:
    return format_datetime(moment).encode()


def test_another_time_zone_is_used_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "intake.toml"
    gpg = '[gpg]\nrecords_keys = ["0123456789ABCDEF0123456789ABCDEF01234567"]\n'
    config.write_text(gpg)
    assert load_config(config).display.zone == LONDON  # the default
    config.write_text(gpg + '[display]\ntimezone = "America/New_York"\n')
    assert load_config(config).display.zone == ZoneInfo("America/New_York")
    for bad in ("Europe/Londn", "", "/etc/localtime", "../zoneinfo/UTC"):
        config.write_text(gpg + f'[display]\ntimezone = "{bad}"\n')
        with pytest.raises(ConfigError, match=rf"{config}: display\.timezone: .*{bad!r}"):
            load_config(config)
