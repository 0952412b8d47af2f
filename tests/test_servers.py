"""Smoke tests of the real test servers in tests/servers/: each one must work as promised."""

from __future__ import annotations

import datetime as dt
import smtplib
from collections.abc import Callable
from email.message import EmailMessage

import pytest
import sqlalchemy as sa

from tests.servers.dovecot import DEFAULT_CAPABILITIES, Dovecot
from tests.servers.gpg import KeySet
from tests.servers.smtp import SmtpSink


def raw_mail(subject: str) -> bytes:
    return (
        f"From: student@example.ac.uk\r\nTo: report@example.ac.uk\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.ac.uk>\r\n\r\nSomething happened.\r\n"
    ).encode()


# -- Dovecot --------------------------------------------------------------------------


def test_dovecot_append_then_fetch(dovecot: Dovecot) -> None:
    assert dovecot.uids("INBOX") == []
    uid = dovecot.append(raw_mail("first"))
    assert dovecot.uids("INBOX") == [uid]
    assert dovecot.fetch_all("INBOX") == [raw_mail("first")]
    assert dovecot.fetch_all("Processed") == []


def test_dovecot_fixture_starts_each_test_empty(dovecot: Dovecot) -> None:
    with dovecot.client() as imap:
        imap.create_folder("Leftover")
    dovecot.append(raw_mail("left"), folder="Processed")
    dovecot.clear()
    assert dovecot.uids("INBOX") == dovecot.uids("Processed") == []
    assert sorted(dovecot.folders()) == ["INBOX", "Processed"]


def test_dovecot_default_capabilities_are_the_known_list(dovecot: Dovecot) -> None:
    assert dovecot.capabilities() == {name.upper() for name in DEFAULT_CAPABILITIES}


def test_dovecot_without_move_does_not_announce_it(
    dovecot_factory: Callable[..., Dovecot],
) -> None:
    server = dovecot_factory(capabilities_without={"MOVE", "UIDPLUS"})
    capabilities = server.capabilities()
    assert "MOVE" not in capabilities
    assert "UIDPLUS" not in capabilities
    assert {"IDLE", "CONDSTORE"} <= capabilities
    with server.client() as imap:
        assert not imap.has_capability("MOVE")


def test_dovecot_restart_keeps_mail(dovecot_factory: Callable[..., Dovecot]) -> None:
    server = dovecot_factory()
    server.append(raw_mail("kept"))
    port = server.port
    server.restart()
    assert server.port == port
    assert server.fetch_all("INBOX") == [raw_mail("kept")]


def test_dovecot_stop_closes_the_port(dovecot_factory: Callable[..., Dovecot]) -> None:
    server = dovecot_factory()
    server.stop()
    assert not server.running
    with pytest.raises(OSError):
        server.uids()


def test_dovecot_starts_again_after_a_crash(dovecot_factory: Callable[..., Dovecot]) -> None:
    server = dovecot_factory()
    server.append(raw_mail("survivor"))
    server.kill()
    assert (server.base / "run" / "master.pid").exists()
    server.start()
    assert server.fetch_all() == [raw_mail("survivor")]


# -- SMTP sink ------------------------------------------------------------------------


def mail(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "intake@example.ac.uk"
    message["To"] = "advice@su.example.ac.uk"
    message["Subject"] = subject
    message.set_content("Referral follows.")
    return message


def test_smtp_sink_receives_a_message(smtp_sink: SmtpSink) -> None:
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=5) as client:
        client.send_message(mail("hello"))
    [received] = smtp_sink.wait_for(1)
    assert received.mail_from == "intake@example.ac.uk"
    assert received.rcpt_tos == ["advice@su.example.ac.uk"]
    assert received.message["Subject"] == "hello"
    assert b"Referral follows." in received.data


def test_smtp_sink_scripted_reply_fails_then_accepts(smtp_sink: SmtpSink) -> None:
    smtp_sink.script("450 try later")
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPDataError) as failure:
            client.send_message(mail("first try"))
        assert failure.value.smtp_code == 450
        client.send_message(mail("second try"))
    assert [m.message["Subject"] for m in smtp_sink.wait_for(1)] == ["second try"]
    assert smtp_sink.pending_script() == 0


def test_smtp_sink_scripted_rcpt_refusal(smtp_sink: SmtpSink) -> None:
    smtp_sink.script("550 no such user", at="RCPT")
    with (
        smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=5) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused),
    ):
        client.send_message(mail("refused"))
    assert smtp_sink.messages == []


# -- gpg ------------------------------------------------------------------------------


def test_gpg_keys_round_trip_to_a_service(gpg_keys: KeySet) -> None:
    fpr = gpg_keys.services["advice-centre"]
    assert len(fpr) == 40 and fpr == fpr.upper()
    assert set(gpg_keys.services) == {"advice-centre", "student-services"}
    assert gpg_keys.emails["advice-centre"] == "advice@su.example.ac.uk"
    assert sorted(p.name for p in gpg_keys.keys_dir.glob("*.asc")) == [
        "advice-centre.asc",
        "records.asc",
        "student-services.asc",
    ]
    armored = gpg_keys.encrypt(b"a report", fpr)
    assert armored.startswith("-----BEGIN PGP MESSAGE-----")
    assert gpg_keys.decrypt(armored) == b"a report"


def test_gpg_public_key_files_hold_no_secret(gpg_keys: KeySet) -> None:
    for path in gpg_keys.keys_dir.glob("*.asc"):
        text = path.read_text()
        assert "BEGIN PGP PUBLIC KEY BLOCK" in text
        assert "PRIVATE KEY" not in text


def test_gpg_make_key_can_make_an_expired_key(gpg_keys: KeySet) -> None:
    fpr, armor = gpg_keys.make_key("old", "old@example.ac.uk", dt.date(2020, 1, 2))
    assert "BEGIN PGP PUBLIC KEY BLOCK" in armor
    result = gpg_keys.gpg.encrypt(b"x", [fpr], always_trust=True)
    assert not result.ok


# -- PostgreSQL -----------------------------------------------------------------------


def test_pg_url_is_an_empty_database_that_accepts_tables(pg_url: str) -> None:
    assert pg_url.startswith("postgresql+psycopg://postgres@127.0.0.1:5432/intake_test_")
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            assert sa.inspect(conn).get_table_names() == []
            conn.execute(sa.text("CREATE TABLE report (id serial PRIMARY KEY, body text)"))
            conn.execute(sa.text("INSERT INTO report (body) VALUES ('x')"))
            assert conn.execute(sa.text("SELECT count(*) FROM report")).scalar_one() == 1
    finally:
        engine.dispose()
