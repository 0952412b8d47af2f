"""TLS you can trust (issue 10 §2), on real servers with certificates from a CA the tests make:
the daemon reads Dovecot over imaps and over STARTTLS and sends through aiosmtpd with STARTTLS,
trusting `imap.ca_file` / `smtp.ca_file`; a server whose certificate that CA did not sign (or
no ca_file: the system's CAs) is refused with a message that says "certificate" and names the
key, and nothing is lost meanwhile. The first tests check the TLS and XOAUTH2 test servers
themselves (tests/servers/tls.py, dovecot.py, smtp.py)."""

from __future__ import annotations

import base64
import json
import shutil
import smtplib
import ssl
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from pipeline.models import OutboxRow
from tests.integration.conftest import Deployment, Intake, email
from tests.integration.test_faults import set_smtp
from tests.integration.test_smtp_refusal import attention, rows
from tests.servers.dovecot import Dovecot
from tests.servers.net import wait_until
from tests.servers.smtp import XOAUTH2_ERROR, SmtpSink
from tests.servers.tls import TlsFiles, client_context, server_context
from tests.servers.tokens import Client, TokenServer

GOOD_TOKEN = "tok-3f9a-good"
BODY = "Someone followed me home from the library. TLS-CANARY-5b1e"


# -- the test servers ---------------------------------------------------------------------


def xoauth2(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def test_dovecot_with_tls_speaks_imaps_and_starttls_from_the_ca(
    tls_dovecot: Dovecot, tls_files: TlsFiles
) -> None:
    before = len(tls_dovecot.logins())
    trusted = client_context(tls_files.ca_cert)
    with IMAPClient(tls_dovecot.host, tls_dovecot.imaps_port, ssl_context=trusted) as imap:
        imap.login(tls_dovecot.username, tls_dovecot.password)
    plain = IMAPClient(tls_dovecot.host, tls_dovecot.port, ssl=False, timeout=5)
    assert b"STARTTLS" in plain.capabilities()
    plain.starttls(trusted)
    plain.login(tls_dovecot.username, tls_dovecot.password)
    plain.logout()
    assert wait_until(lambda: len(tls_dovecot.logins()) == before + 2, 5.0)
    assert [(x.method, x.tls) for x in tls_dovecot.logins()[before:]] == [("PLAIN", True)] * 2
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(
            tls_dovecot.host,
            tls_dovecot.imaps_port,
            ssl_context=client_context(tls_files.other_ca_cert),
            timeout=5,
        )


def test_dovecot_checks_bearer_tokens_by_introspection_over_https(
    dovecot_factory: Callable[..., Dovecot], tls_files: TlsFiles
) -> None:
    with TokenServer(tls=tls_files) as tokens:
        tokens.add_client(Client("app-1", "intake", secret="app-secret"))
        form = {"grant_type": "client_credentials", "client_id": "app-1"}
        token = tokens.grant(tokens.token_url, {**form, "client_secret": "app-secret"}, None)
        server = dovecot_factory(tls=tls_files, oauth2_introspection_url=f"{tokens.url}/introspect")
        assert tokens.url.startswith("https://")  # Dovecot verifies it against the CA
        before = len(server.logins())
        trusted = client_context(tls_files.ca_cert)
        with IMAPClient(server.host, server.imaps_port, ssl_context=trusted) as imap:
            assert {b"AUTH=XOAUTH2", b"AUTH=OAUTHBEARER"} <= set(imap.capabilities())
            imap.oauth2_login("intake", token["access_token"])
        with IMAPClient(server.host, server.imaps_port, ssl_context=trusted) as imap:
            imap.oauthbearer_login("intake", token["access_token"])
        tokens.revoke()
        with (
            IMAPClient(server.host, server.imaps_port, ssl_context=trusted) as imap,
            pytest.raises(LoginError),
        ):
            imap.oauth2_login("intake", token["access_token"])
        with server.client():  # the password still opens the mailbox (PLAIN, LOGIN)
            pass
    assert wait_until(lambda: len(server.logins()) == before + 3, 5.0)
    assert [(x.user, x.method, x.tls) for x in server.logins()[before:]] == [
        ("intake", "XOAUTH2", True),
        ("intake", "OAUTHBEARER", True),
        ("intake", "PLAIN", True),
    ]


def test_smtp_sink_requires_starttls_and_takes_xoauth2(
    smtp_sink_factory: Callable[..., SmtpSink], tls_files: TlsFiles
) -> None:
    users = []

    def check(user: str, token: str) -> bool:
        users.append(user)
        return token == GOOD_TOKEN

    sink = smtp_sink_factory(tls_context=server_context(tls_files), xoauth2_check=check)
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.ehlo()
        assert "auth" not in client.esmtp_features  # nothing to sign in with before TLS
        assert client.mail("a@example.ac.uk")[0] == 530
        client.starttls(context=client_context(tls_files.ca_cert))
        client.ehlo()
        assert "XOAUTH2" in client.esmtp_features["auth"].split()
        code, challenge = client.docmd("AUTH", "XOAUTH2 " + xoauth2("me@uni", "tok-bad"))
        assert (code, json.loads(base64.b64decode(challenge))) == (334, XOAUTH2_ERROR)
        assert client.docmd("")[0] == 535
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2("me@uni", GOOD_TOKEN))[0] == 235
        client.sendmail("me@uni", ["b@example.ac.uk"], b"Subject: hi\r\n\r\nbody\r\n")
    [received] = sink.wait_for(1)
    assert (received.auth, received.tls) == (("XOAUTH2", "me@uni"), True)
    assert sink.sign_ins == [("XOAUTH2", "me@uni")] and users == ["me@uni"] * 2


def test_smtp_sink_implicit_tls_and_no_xoauth2_unless_asked(
    smtp_sink_factory: Callable[..., SmtpSink], tls_files: TlsFiles
) -> None:
    sink = smtp_sink_factory(tls_context=server_context(tls_files), implicit_tls=True)
    trusted = client_context(tls_files.ca_cert)
    with smtplib.SMTP_SSL(sink.host, sink.port, timeout=5, context=trusted) as client:
        client.ehlo()
        assert "XOAUTH2" not in client.esmtp_features["auth"].split()
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2("me@uni", GOOD_TOKEN))[0] == 504
        client.login("intake", "pw")
        client.sendmail("me@uni", ["b@example.ac.uk"], b"Subject: hi\r\n\r\nbody\r\n")
    [received] = sink.wait_for(1)
    assert (received.auth, received.tls, sink.logins) == (("PLAIN", "intake"), True, ["intake"])
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL(
            sink.host, sink.port, timeout=5, context=client_context(tls_files.other_ca_cert)
        )


# -- the daemon over TLS ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_dovecot_server(tls_files: TlsFiles) -> Iterator[Dovecot]:
    with Dovecot(tls=tls_files) as server:
        yield server


@pytest.fixture
def tls_dovecot(tls_dovecot_server: Dovecot) -> Dovecot:
    """The module's Dovecot with TLS required, its folders empty."""
    tls_dovecot_server.clear()
    return tls_dovecot_server


@pytest.fixture
def tls_deployment(
    deployment: Deployment,
    tls_dovecot: Dovecot,
    smtp_sink_factory: Callable[..., SmtpSink],
    tls_files: TlsFiles,
) -> Deployment:
    """The deployment on a Dovecot and an SMTP sink that both require TLS (config: plain
    until `use_tls`)."""
    deployment.imap = tls_dovecot
    deployment.smtp = smtp_sink_factory(tls_context=server_context(tls_files))
    deployment.write()
    return deployment


def use_tls(
    d: Deployment, *, imap: str = "tls", imap_ca: Path | None, smtp_ca: Path | None
) -> None:
    """Point the config at imaps (`imap="tls"`) or STARTTLS on the plain port, and at
    STARTTLS for SMTP, trusting these CA files (none: the system's CAs)."""
    text = d.config_path.read_text()
    port = d.imap.imaps_port if imap == "tls" else d.imap.port
    old = f'port = {d.imap.port}\nsecurity = "none"\n'
    ca_line = f'ca_file = "{imap_ca}"\n' if imap_ca else ""
    assert text.count(old) == 1
    d.config_path.write_text(text.replace(old, f'port = {port}\nsecurity = "{imap}"\n{ca_line}'))
    smtp_ca_line = f'ca_file = "{smtp_ca}"' if smtp_ca else ""
    set_smtp(d, f'security = "starttls"\n{smtp_ca_line}')


def outbox_states(d: Deployment) -> Counter[tuple[str, str]]:
    """(kind, state) of the report's mail (not of admin alerts)."""
    return Counter((r.kind, r.state) for r in rows(d, OutboxRow) if r.kind != "alert")


def imap_source(intake: Intake) -> dict[str, object]:
    """The IMAP source's entry of `intake status --json`."""
    sources = json.loads(intake("status", "--json").stdout)["sources"]
    [source] = [s for n, s in sources.items() if n.startswith("imap:")]
    return dict(source)


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_reads_over_tls_and_refers_over_starttls_trusting_the_ca_files(
    tls_deployment: Deployment, tls_files: TlsFiles, security: str
) -> None:
    d = tls_deployment
    shutil.copy(tls_files.ca_cert, d.root / "our-ca.pem")  # relative: next to the config
    use_tls(d, imap=security, imap_ca=Path("our-ca.pem"), smtp_ca=tls_files.ca_cert)
    assert d.config().imap.ca_file == d.root / "our-ca.pem"  # type: ignore[union-attr]
    d.imap.append(email(BODY))
    logins_before = len(d.imap.logins())

    run = d.run_once()

    assert run.returncode == 0, run.stderr
    assert wait_until(lambda: len(d.imap.logins()) > logins_before, 5.0)
    daemon_logins = d.imap.logins()[logins_before:]
    assert daemon_logins and all(login.tls for login in daemon_logins)  # STARTTLS, not plain
    [referral] = d.referrals()
    assert BODY.encode() in referral
    assert d.smtp.messages and all(m.tls for m in d.smtp.messages)
    assert outbox_states(d) == {("referral", "sent"): 1, ("ack", "sent"): 1}
    assert d.imap.uids("INBOX") == []


@pytest.mark.parametrize(
    ("security", "trust"),
    [("tls", "other CA"), ("starttls", "other CA"), ("tls", "system CAs")],
)
def test_an_imap_server_the_ca_did_not_sign_fails_naming_imap_ca_file(
    tls_deployment: Deployment, tls_files: TlsFiles, intake: Intake, security: str, trust: str
) -> None:
    d = tls_deployment
    wrong = tls_files.other_ca_cert if trust == "other CA" else None
    use_tls(d, imap=security, imap_ca=wrong, smtp_ca=tls_files.ca_cert)
    d.imap.append(email(BODY))

    assert d.run_in_process() == 2  # a source could not be read

    source = imap_source(intake)
    error = str(source["last_error"])
    assert "certificate" in error and "imap.ca_file" in error, error
    assert source["error_since"] is not None and source["last_success"] is None
    assert len(d.imap.uids("INBOX")) == 1 and d.referrals() == []  # waits in the mailbox

    d.write()
    use_tls(d, imap=security, imap_ca=tls_files.ca_cert, smtp_ca=tls_files.ca_cert)
    assert d.run_in_process() == 0
    assert imap_source(intake)["last_error"] is None
    assert d.imap.uids("INBOX") == [] and len(d.referrals()) == 1


@pytest.mark.parametrize("trust", ["other CA", "system CAs"])
def test_an_smtp_server_the_ca_did_not_sign_holds_the_mail_naming_smtp_ca_file(
    tls_deployment: Deployment, tls_files: TlsFiles, intake: Intake, trust: str
) -> None:
    d = tls_deployment
    wrong = tls_files.other_ca_cert if trust == "other CA" else None
    use_tls(d, imap_ca=tls_files.ca_cert, smtp_ca=wrong)
    d.imap.append(email(BODY))

    run = d.run_once()

    assert run.returncode == 4, run.stderr  # mail could not be handed over; the poll was fine
    assert d.smtp.messages == []
    assert outbox_states(d) == {("referral", "queued"): 1, ("ack", "queued"): 1}
    # a configuration fault: the whole queue waits, no attempt used up, nothing dead-lettered
    assert {(row.state, row.attempts) for row in rows(d, OutboxRow)} == {("queued", 0)}
    [held] = attention(d, "smtp")
    reason = str(held["reason"])
    assert "certificate" in reason and "smtp.ca_file" in reason, reason
    assert "smtp.ca_file" in run.stderr and BODY not in run.stderr

    d.write()
    use_tls(d, imap_ca=tls_files.ca_cert, smtp_ca=tls_files.ca_cert)
    assert d.run_in_process() == 0
    assert len(d.referrals()) == 1 and all(m.tls for m in d.smtp.messages)
    assert outbox_states(d) == {("referral", "sent"): 1, ("ack", "sent"): 1}
    assert attention(d, "smtp") == []
