"""Form exports through the real daemon (run_daemon.py --once --verbose, gpg, the SMTP sink):
a canary in every cell, on every path (referred, quarantined, refused) is in no database file,
log line, reason or temporary file; anonymity fails closed; date answers stay readable; a
multi-line value cannot forge referral lines."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sqlite3
import sys
from pathlib import Path

from tests.integration.conftest import REPO, Deployment
from tests.integration.test_forms_end_to_end import referral_texts

ASK = "Do you want to stay anonymous?"
WHEN = "When did it happen?"
HEADER = ["id", "submitted", "email", "name", "What happened?", "Describe it", ASK, WHEN, "Where?"]
FORMS = f"""
[[forms]]
id = "csv-form"
path = "exports/*.csv"
id_column = "id"
settle_seconds = 0
after = "archive-encrypted"
anonymous_when = {{column = "{ASK}", equals = ["Yes"]}}
date_formats = {{"{WHEN}" = "%d/%m/%Y"}}
[forms.columns]
category = "What happened?"
description = "Describe it"
email = "email"
name = "name"
occurred_at = "{WHEN}"
location = "Where?"

[[forms]]
id = "json-form"
path = "exports/*.jsonl"
id_column = "id"
settle_seconds = 0
anonymous_when = {{column = "{ASK}", equals = ["Yes"]}}
[forms.columns]
description = "Describe it"
email = "email"
name = "name"
"""
FORGED = "Cnry-loc\rReporter: forged\u2028Email: forged@example.org\x0bCategory: forged"


CANARY = re.compile(rb"(?i)cnry(?:-|\d+@)")


def row(n: int, **given: str) -> list[str]:
    """A response whose every cell holds the canary `Cnry-<n>-...` unless given."""
    cells = {name: f"Cnry-{n}-{i} text" for i, name in enumerate(HEADER)}
    cells.update(id=f"Cnry-{n}-id", submitted="2026-11-24T10:00:00Z", email=f"cnry{n}@x.ac.uk")
    cells.update(given)
    return [cells[name] for name in HEADER]


def write_csv(path: Path, rows: list[list[str]]) -> None:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def run_verbose(deployment: Deployment) -> int:
    argv = [sys.executable, str(REPO / "run_daemon.py"), "--config", str(deployment.config_path)]
    run = deployment._run([*argv, "--once", "--verbose"])
    deployment.logs.append(run.stderr)
    return run.returncode


def test_form_canaries_are_in_no_file_log_or_reason(deployment: Deployment) -> None:
    deployment.write(extra=FORMS)
    exports = deployment.root / "exports"
    exports.mkdir()
    named = row(1, **{ASK: "No", WHEN: "after the party on Friday", "Where?": FORGED})
    # blank: anonymous. A person's name (the other cells' canaries share the word "Cnry", which
    # the anonymous pass would replace with [sender] everywhere, as it does a name).
    anonymous = row(2, **{ASK: "", WHEN: "03/04/2026", "name": "Robin Cnrytwo"})
    bad_time = row(3, submitted="Cnry-3-when GMT+99")
    empty = row(4, **{"Describe it": " "})
    write_csv(exports / "good.csv", [HEADER, named, anonymous, bad_time, empty])
    write_csv(exports / "headerless.csv", [row(5), row(6)])
    reworded = [ASK + " (optional)" if name == ASK else name for name in HEADER]
    write_csv(exports / "reworded.csv", [reworded, row(7, **{ASK: "No"})])
    lines = [
        {"id": "j1", "Describe it": "Cnry-8-d", "email": "cnry8@x.ac.uk", "name": "Cnry-8-n"},
        {"id": "j2", "Describe it": "Cnry-9-d", "email": "cnry9@x.ac.uk", ASK: "No"},
    ]
    (exports / "r.jsonl").write_text("\n".join(json.dumps(o) for o in lines), encoding="utf-8")

    assert run_verbose(deployment) == 10  # two files refused (2), rows quarantined (8)
    log = deployment.logs[-1]

    # refused files stay, their errors name columns, never cells
    assert (exports / "headerless.csv").exists() and (exports / "reworded.csv").exists()
    refused = [line for line in log.splitlines() if "ERROR" in line]
    assert any("headerless.csv" in line and "(9 cells, not shown)" in line for line in refused)
    assert f"anonymity question '{ASK}'" in log
    # nothing of any answer at rest outside the encrypted records, nor in the logs
    files = [p for p in deployment.root.rglob("*") if p.is_file() and exports not in p.parents]
    files = [p for p in files if "rules" not in p.parts]
    assert any(p.name == "intake.db" for p in files)
    for path in files:
        # Every canary is `Cnry-` or `cnry<n>@`: armoured OpenPGP (base64) can spell "cnry"
        # by chance, never with a "-" or "@" after it.
        assert CANARY.search(path.read_bytes()) is None, path
    assert "cnry" not in log.lower()
    with sqlite3.connect(deployment.data_dir / "intake.db") as db:
        reports = db.execute("SELECT form_id, state, category, reason FROM report").fetchall()
        dump = "\n".join(db.iterdump()).lower()
    assert "cnry" not in dump
    reasons = sorted(r[3] for r in reports if r[1] == "quarantined")
    assert reasons == [
        "good.csv:4: 'submitted': the zone offset is out of range",
        "good.csv:5: the description is empty",
        f"r.jsonl:1: '{ASK}': the response has no such field, so it is kept as anonymous "
        "(identifying columns removed)",
    ]
    assert all(r[2] is None for r in reports)  # free-text categories stay out of the database

    # the referrals: readable dates, indented continuation lines, anonymity kept
    advice = referral_texts(deployment)[deployment.keys.emails["advice-centre"]]
    named_text = next(t for t in advice if "Cnry-1-5" in t)
    anonymous_text = next(t for t in advice if "Cnry-2-5" in t)
    assert "Occurred at: after the party on Friday" in named_text
    assert "Reported as: Cnry-1-4 text" in named_text
    for line in named_text.splitlines():
        if "forged" in line:
            assert line.startswith(" " * 12), line
    assert "Occurred at: 2026-04-03" in anonymous_text  # date_formats for that column
    assert "cnry2@x.ac.uk" not in anonymous_text and "Cnry-2-3" not in anonymous_text


def test_responses_keyed_before_ids_were_hashed_are_not_taken_again(
    deployment: Deployment,
) -> None:
    deployment.write(extra=FORMS.replace('after = "archive-encrypted"', 'after = "keep"'))
    exports = deployment.root / "exports"
    exports.mkdir()
    write_csv(exports / "good.csv", [HEADER, row(1, **{ASK: "No"})])
    assert run_verbose(deployment) == 0
    sent = len(deployment.smtp.messages)
    assert sent == 2  # a referral and an acknowledgement
    with sqlite3.connect(deployment.data_dir / "intake.db") as db:
        (key,) = db.execute("SELECT source_key FROM source_item").fetchone()
        assert key.startswith("form:csv-form:") and "Cnry" not in key and len(key) == 78
        # as an earlier version keyed it: the response id itself (and its fingerprint so)
        legacy = "form:csv-form:Cnry-1-id"
        db.execute("UPDATE source_item SET source_key = ?", (legacy,))
        fingerprint = hashlib.sha256(legacy.encode()).hexdigest()
        db.execute("UPDATE report SET fingerprint = ?", (fingerprint,))

    assert run_verbose(deployment) == 0

    assert len(deployment.smtp.messages) == sent
