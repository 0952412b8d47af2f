"""Form exports end to end: export file in, encrypted referral out through the SMTP server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import ADMIN, Deployment
from tests.integration.forms_data import PLATFORMS, QUESTION_DESCRIPTION, Response, form_config

ENCODINGS = [("utf-8", ","), ("utf-8-sig", ";"), ("utf-16", "\t"), ("cp1252", ",")]
NAMED = Response(
    "101", "named.student@example.ac.uk", "Named Student", False, "He grabbed me, NAMED-MARK"
)
ANON = Response(
    "102", "hidden.person@example.ac.uk", "Hidden Person", True, "Comments in halls, ANON-MARK"
)


def drop(
    deployment: Deployment,
    platform_key: str,
    responses: list[Response],
    name: str = "export",
    encoding: str = "utf-8",
    delimiter: str = ",",
) -> Path:
    platform = PLATFORMS[platform_key]
    folder = deployment.root / "exports"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}{platform.suffix}"
    platform.write(path, responses, encoding, delimiter)
    return path


def setup_form(deployment: Deployment, platform_key: str, after: str = "archive-encrypted") -> None:
    deployment.write(extra=form_config(PLATFORMS[platform_key], "report-form", "exports", after))


def referral_texts(deployment: Deployment) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for received in deployment.smtp.messages:
        message = received.message
        if message.get_content_type() == "multipart/encrypted":
            encrypted = message.get_payload()[1].get_payload(decode=True)  # type: ignore[index,union-attr]
            text = deployment.keys.decrypt(encrypted).decode()
        else:
            text = message.get_content()
        found.setdefault(received.rcpt_tos[0], []).append(text)
    return found


CASES = [
    pytest.param(p, enc, delim, id=f"{p}-{enc}")
    for p in ("google", "qualtrics", "jisc", "generic")
    for enc, delim in ENCODINGS
] + [
    pytest.param("microsoft", "utf-8", ",", id="microsoft-xlsx"),
    pytest.param("json", "utf-8", ",", id="json"),
    pytest.param("jsonl", "utf-8", ",", id="jsonl"),
]


@pytest.mark.parametrize(("platform", "encoding", "delimiter"), CASES)
def test_export_to_encrypted_referrals(
    deployment: Deployment, platform: str, encoding: str, delimiter: str
) -> None:
    setup_form(deployment, platform)
    export = drop(deployment, platform, [NAMED, ANON], encoding=encoding, delimiter=delimiter)
    original = export.read_bytes()

    assert deployment.run_in_process() == 0

    mail = referral_texts(deployment)
    advice, support = (deployment.keys.emails[s] for s in ("advice-centre", "student-services"))
    assert set(mail) == {advice, support, NAMED.email}  # no acknowledgement to the anonymous one
    assert len(mail[advice]) == 2
    named = next(t for t in mail[advice] if "NAMED-MARK" in t)
    anonymous = next(t for t in mail[advice] if "ANON-MARK" in t)
    assert NAMED.email in named and NAMED.name in named and "sexual-harassment" in named
    assert "Library" in named  # a mapped extra field travels in the referral
    for identity in (ANON.email, ANON.name, "198.51.100.23", "51.5072"):
        assert identity not in anonymous
    assert "198.51.100.23" not in named
    assert "NAMED-MARK" not in mail[NAMED.email][0]
    assert not export.exists()  # archived encrypted, plaintext removed
    archived = list((deployment.data_dir / "archive" / "report-form").iterdir())
    assert len(archived) == 1
    assert deployment.keys.decrypt(archived[0].read_bytes()) == original


def test_marker_is_nowhere_in_plaintext_after_processing(deployment: Deployment) -> None:
    setup_form(deployment, "google")
    drop(deployment, "google", [NAMED, ANON])

    assert deployment.run_in_process() == 0

    assert len(deployment.smtp.messages) == 5
    for path in deployment.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for marker in (b"NAMED-MARK", b"ANON-MARK", NAMED.email.encode(), b"hidden.person"):
                assert marker not in data, f"{marker!r} in {path}"
    archived = next((deployment.data_dir / "archive" / "report-form").iterdir())
    assert b"NAMED-MARK" in deployment.keys.decrypt(archived.read_bytes())


def test_cumulative_exports_refer_only_new_responses(deployment: Deployment) -> None:
    setup_form(deployment, "generic")
    first = [NAMED, ANON]
    for _ in range(3):  # the same export dropped three times
        drop(deployment, "generic", first)
        assert deployment.run_in_process() == 0
    assert len(deployment.smtp.messages) == 5
    new = [
        Response(
            "103", "third@example.ac.uk", "Third", False, "Third report THIRD-MARK", "Bullying"
        ),
        Response(
            "104", "fourth@example.ac.uk", "Fourth", True, "Fourth report FOURTH-MARK", "Bullying"
        ),
    ]
    drop(deployment, "generic", [*first, *new], name="export-later")

    assert deployment.run_in_process() == 0

    texts = referral_texts(deployment)
    advice = deployment.keys.emails["advice-centre"]
    assert sum("NAMED-MARK" in t for t in texts[advice]) == 1
    assert sum("THIRD-MARK" in t for t in texts[advice]) == 1
    assert sum("FOURTH-MARK" in t for t in texts[advice]) == 1
    assert len(deployment.smtp.messages) == 5 + 3  # two referrals and one acknowledgement


def test_bad_row_is_quarantined_and_the_rest_go_through(deployment: Deployment) -> None:
    setup_form(deployment, "generic", after="keep")
    empty = Response("105", "e@example.ac.uk", "Empty", False, "   ")
    drop(deployment, "generic", [NAMED, empty, ANON])

    assert deployment.run_in_process() == 8  # a row was quarantined

    status = json.loads(deployment.intake("status", "--json").stdout)
    assert status["reports"]["quarantined"] == 1
    assert status["reports"]["delivered"] == 2
    route = deployment.intake(
        "route",
        "--dry-run",
        "--json",
        "--form",
        "report-form",
        str(deployment.root / "exports" / "export.csv"),
    )
    lines = [json.loads(line) for line in route.stdout.splitlines()]
    assert len(lines) == 3
    assert lines[1] == {"quarantined": True, "reason": "export.csv:3: the description is empty"}
    assert set(lines[0]) >= {"category", "anonymous", "urgent", "refer", "acknowledge", "rules"}
    assert lines[0]["category"] == "sexual-harassment" and lines[0]["anonymous"] is False
    assert lines[2]["anonymous"] is True


def test_unknown_layout_is_refused_naming_columns(deployment: Deployment) -> None:
    setup_form(deployment, "generic")
    path = deployment.root / "exports"
    path.mkdir()
    (path / "other.csv").write_text("id,colour\n1,blue\n")

    assert deployment.run_in_process() == 2  # the form (a source) could not be read

    route = deployment.intake(
        "route", "--dry-run", "--json", "--form", "report-form", str(path / "other.csv")
    )
    assert route.returncode == 1
    assert (
        "other.csv" in route.stderr
        and QUESTION_DESCRIPTION in route.stderr
        and "colour" in route.stderr
    )
    assert (path / "other.csv").exists()  # left for the admin
    assert [m.rcpt_tos for m in deployment.smtp.messages] == [[ADMIN]]  # its alert only


def test_file_being_written_waits(deployment: Deployment) -> None:
    deployment.write(
        extra=form_config(PLATFORMS["generic"], "report-form", "exports").replace(
            "settle_seconds = 0", "settle_seconds = 30"
        )
    )
    drop(deployment, "generic", [NAMED])
    drop(deployment, "generic", [ANON], name="~$export")

    assert deployment.run_in_process() == 0

    assert deployment.smtp.messages == []
    assert (deployment.root / "exports" / "export.csv").exists()
