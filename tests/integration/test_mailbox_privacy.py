"""Nothing readable is left in the mailbox, and anonymous sources are anonymous (issue 8, §1 and
§3): real Dovecot, run_daemon.py --once, gpg and the SMTP sink.

By default an original is expunged once stored; `imap.processed_folder` keeps only stored named
reports; `imap.anonymous_folders` and `[maildir] anonymous` make every message anonymous."""

from __future__ import annotations

import mailbox
import sqlite3
from collections.abc import Callable

import pytest

from pipeline.config import ImapConfig
from pipeline.ingest import Outcome
from pipeline.intake.imap import Folder, keep_folder, may_keep, polled_folders
from tests.integration.conftest import ANONYMOUS, Deployment, email
from tests.servers.dovecot import Dovecot

# A Bcc to the anonymous alias, routed into a folder by a mail-flow rule: nothing in the
# headers says "anonymous".
BCC_SENDER = "Named Person <named.person@example.org>"
BCC_HEADERS = "X-Originating-IP: [192.0.2.41]\r\n"
PROCESSED = 'processed_folder = "Processed"\n'
ANON_FOLDER = 'anonymous_folders = ["Anonymous"]\n'


def every_message(server: Dovecot) -> dict[str, list[bytes]]:
    """Each folder of the mailbox with the messages it holds (any flags)."""
    return {folder: server.fetch_all(folder) for folder in server.folders()}


def anywhere(server: Dovecot, marker: str) -> list[str]:
    """The folders holding a message that contains `marker`."""
    return [
        f for f, msgs in every_message(server).items() if any(marker.encode() in m for m in msgs)
    ]


def referrals(deployment: Deployment) -> list[str]:
    """Every referral sent so far, decrypted with the services' keys."""
    return [inner.decode() for inner in deployment.referrals()]


def referral_with(deployment: Deployment, marker: str) -> str:
    deployment.smtp.wait_for(1)
    found = [r for r in referrals(deployment) if marker in r]
    assert found, f"no referral carries {marker}"
    return found[0]


def anonymous_flags(deployment: Deployment) -> list[bool]:
    database = sqlite3.connect(deployment.data_dir / "intake.db")
    try:
        return [bool(a) for (a,) in database.execute("SELECT anonymous FROM report ORDER BY id")]
    finally:
        database.close()


def assert_no_sender(referral: str) -> None:
    for identity in ("named.person", "Named Person", "192.0.2.41"):
        assert identity not in referral


# -- the pure decisions -----------------------------------------------------------------


def imap_config(**keys: object) -> ImapConfig:
    return ImapConfig(host="imap.example", username="intake", **keys)  # type: ignore[arg-type]


def test_folders_polled_and_where_originals_may_be_kept() -> None:
    config = imap_config(anonymous_folders=["Anonymous", "Anonymous", "Other"])
    assert polled_folders(config) == [
        Folder("Anonymous", True),
        Folder("Other", True),
        Folder("INBOX", False),
    ]
    assert polled_folders(imap_config(anonymous_folders=["INBOX"])) == [Folder("INBOX", True)]
    assert keep_folder(imap_config()) is None  # the default keeps nothing
    assert keep_folder(imap_config(processed_folder="Kept")) == "Kept"
    assert keep_folder(imap_config(processed_folder="Kept", delete_processed=True)) is None
    assert may_keep(Outcome("stored", "R-1"))
    for outcome in (
        Outcome("stored", "R-1", anonymous=True),
        Outcome("quarantined", "R-2"),
        Outcome("duplicate", "R-1"),
        Outcome("seen"),
        Outcome("bounce"),
        Outcome("auto_reply"),
    ):
        assert not may_keep(outcome), outcome


def test_processed_folder_that_is_also_polled_refuses_to_start(deployment: Deployment) -> None:
    deployment.write(imap_extra='processed_folder = "Anonymous"\n' + ANON_FOLDER)

    run = deployment.run_once()

    assert run.returncode == 1
    assert "imap.processed_folder" in run.stderr and "intake.toml" in run.stderr


# -- the mailbox keeps nothing readable -------------------------------------------------


def test_default_config_leaves_no_message_in_any_folder(deployment: Deployment) -> None:
    server = deployment.imap
    server.append(email("Named report, expunged once stored. GONE-named-1"))
    server.append(email("Anonymous one. GONE-anon-2", to=ANONYMOUS, message_id="<m2@x>"))
    server.append(b"\x00\x01 garbage GONE-garbage-3")  # quarantined

    run = deployment.run_once()

    assert run.returncode == 8, run.stderr  # 8: a report (the garbage) was quarantined
    assert referral_with(deployment, "GONE-named-1")
    assert referral_with(deployment, "GONE-anon-2")
    left = every_message(server)
    assert "INBOX" in left and "Processed" in left  # every folder was looked at
    assert left == {folder: [] for folder in left}


@pytest.mark.parametrize("without", [set(), {"MOVE"}], ids=["move", "copy-expunge"])
def test_processed_folder_keeps_only_stored_named_originals(
    deployment: Deployment, dovecot_factory: Callable[..., Dovecot], without: set[str]
) -> None:
    if without:
        deployment.imap = dovecot_factory(capabilities_without=without)
    deployment.write(imap_extra=PROCESSED)
    server = deployment.imap
    server.append(email("Named, kept on request. KEEP-named-1"))
    server.append(email("Anonymous, never kept. KEEP-anon-2", to=ANONYMOUS, message_id="<a@x>"))
    server.append(b"\x00\x01\x02 garbage KEEP-garbage-3")  # quarantined: not kept either

    run = deployment.run_once()

    assert run.returncode == 8, run.stderr  # 8: a report (the garbage) was quarantined
    assert referral_with(deployment, "KEEP-anon-2")
    kept = server.fetch_all("Processed")
    assert len(kept) == 1 and b"KEEP-named-1" in kept[0]
    assert server.uids("INBOX") == []
    assert anywhere(server, "KEEP-anon-2") == []
    assert anywhere(server, "KEEP-garbage-3") == []


# -- anonymous sources ------------------------------------------------------------------


@pytest.mark.parametrize("extra", ["", PROCESSED], ids=["default", "processed-folder"])
def test_bcc_into_an_anonymous_folder_is_anonymous_and_not_kept(
    deployment: Deployment, extra: str
) -> None:
    server = deployment.imap
    with server.client() as imap:
        imap.create_folder("Anonymous")
    server.append(
        email(
            "Bcc to the anonymous alias. BCC-body-1",
            sender=BCC_SENDER,
            to="someone-else@example.ac.uk",
            extra_headers=BCC_HEADERS,
        ),
        folder="Anonymous",
    )
    server.append(email("Named in the INBOX. BCC-named-2", sender=BCC_SENDER, message_id="<n@x>"))
    deployment.write(imap_extra=ANON_FOLDER + extra)

    run = deployment.run_once()

    assert run.returncode == 0, run.stderr
    assert_no_sender(referral_with(deployment, "BCC-body-1"))
    assert "named.person@example.org" in referral_with(deployment, "BCC-named-2")  # control
    assert sorted(anonymous_flags(deployment)) == [False, True]
    assert server.uids("Anonymous") == [] and server.uids("INBOX") == []
    assert anywhere(server, "BCC-body-1") == []
    assert len(anywhere(server, "BCC-named-2")) == (1 if extra else 0)


def test_missing_anonymous_folder_is_an_error_and_the_inbox_is_still_polled(
    deployment: Deployment,
) -> None:
    deployment.write(imap_extra='anonymous_folders = ["Anonymous", "Gone"]\n')
    with deployment.imap.client() as imap:
        imap.create_folder("Anonymous")
    deployment.imap.append(email("Still taken. MISSING-1"))
    deployment.imap.append(email("Anon. MISSING-2", message_id="<x@y>"), folder="Anonymous")

    run = deployment.run_once()

    assert run.returncode == 2  # a source (folder) could not be read
    assert 'imap.anonymous_folders: no folder "Gone" in the mailbox' in run.stderr
    assert 'Anonymous" in the mailbox' not in run.stderr
    assert referral_with(deployment, "MISSING-1") and referral_with(deployment, "MISSING-2")
    assert deployment.imap.uids("INBOX") == deployment.imap.uids("Anonymous") == []


@pytest.mark.parametrize("anonymous", [True, False])
def test_anonymous_maildir_takes_every_message_as_anonymous(
    deployment: Deployment, anonymous: bool
) -> None:
    path = deployment.root / "maildir"
    deployment.write(extra=f'[maildir]\npath = "maildir"\nanonymous = {str(anonymous).lower()}\n')
    box = mailbox.Maildir(str(path), create=True)
    box.add(
        email(
            "Delivered to the anonymous Maildir. MAILDIR-1",
            sender=BCC_SENDER,
            to="someone-else@example.ac.uk",
            extra_headers=BCC_HEADERS,
        )
    )

    run = deployment.run_once()

    assert run.returncode == 0, run.stderr
    referral = referral_with(deployment, "MAILDIR-1")
    if anonymous:
        assert_no_sender(referral)
    else:
        assert "named.person@example.org" in referral  # the control: a named Maildir
    assert anonymous_flags(deployment) == [anonymous]
    assert list(mailbox.Maildir(str(path), create=False).keys()) == []


def test_a_crash_between_flag_and_expunge_is_finished_by_the_next_poll(
    deployment: Deployment,
) -> None:
    server = deployment.imap
    server.append(email("Flagged, then the daemon died. LEFTOVER-1"))

    crashed = deployment.run_once(crash_at="after-flag")

    assert crashed.returncode != 0
    assert anywhere(server, "LEFTOVER-1") == ["INBOX"]  # flagged \Deleted, still readable
    assert deployment.run_once().returncode == 0
    assert anywhere(server, "LEFTOVER-1") == []
    assert len([r for r in referrals(deployment) if "LEFTOVER-1" in r]) == 1


def test_a_labelled_copy_in_the_inbox_too_is_taken_as_anonymous(deployment: Deployment) -> None:
    """A Gmail label without "Skip the Inbox": the same Bcc'd message is in both folders."""
    deployment.write(imap_extra=ANON_FOLDER)
    raw = email("Labelled twice. BOTH-FOLDERS-1", sender=BCC_SENDER, to="someone@example.org")
    with deployment.imap.client() as imap:
        imap.create_folder("Anonymous")
    deployment.imap.append(raw, folder="Anonymous")
    deployment.imap.append(raw)

    assert deployment.run_once().returncode == 0

    (referral,) = [r for r in referrals(deployment) if "BOTH-FOLDERS-1" in r]
    assert_no_sender(referral)
    assert anonymous_flags(deployment) == [True]
    assert anywhere(deployment.imap, "BOTH-FOLDERS-1") == []
