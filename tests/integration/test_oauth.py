"""XOAUTH2 sign-in on real servers: Dovecot over TLS checking bearer tokens by introspection
against the local token server, aiosmtpd with STARTTLS and AUTH XOAUTH2, and the daemon
between them, for each provider (microsoft with a secret or a certificate, google with a
service account, generic). Also: a revoked token replaced once, a refused client secret that
shows nowhere, and server certificates from another CA (issue 10, §1 and §2).

Also a token endpoint that misbehaves (`Canned` answers): mail waits and is never dead-lettered
for a sign-in problem, an outage is "unreachable", not a wrong configuration, and an endpoint
that echoes the client secret gets it into no log of the daemon. And the mail servers' side: no
AUTH=XOAUTH2, a connection lost while signing in, a refusal that says what the mailbox needs.

The servers live for the module; `dovecot` and `smtp_sink` are overridden here, so the shared
`deployment` fixture runs on them.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient.exceptions import LoginError
from sqlmodel import Session

from pipeline.config import ImapConfig, OAuth2Config, SmtpConfig
from pipeline.deliver import SendError, SmtpTransport
from pipeline.intake import SourceError
from pipeline.intake.idle import IdleWatcher
from pipeline.intake.imap import ImapSource, connect_error
from pipeline.models import SourceStatus
from pipeline.oauth import forget_tokens, token_source
from pipeline.store import make_engine
from tests.integration.conftest import Deployment, Intake, email
from tests.servers.dovecot import Dovecot, Login
from tests.servers.net import LOOPBACK
from tests.servers.smtp import SmtpSink
from tests.servers.tls import TlsFiles, server_context
from tests.servers.tokens import (
    MICROSOFT_SCOPE,
    Canned,
    Client,
    ServiceAccountKey,
    TokenServer,
    make_rsa_key,
    write_client_certificate,
)

SECRET = "S3cret-of-the-app~4c2e"
WRONG = "Wr0ng-secret-of-the-app~91d0"  # the token server quotes it when it refuses it


@dataclass(frozen=True)
class Apps:
    secret_file: Path
    wrong_secret_file: Path
    certificate_file: Path
    google: ServiceAccountKey


@pytest.fixture(scope="module")
def apps(
    token_server: TokenServer,
    google_service_account: ServiceAccountKey,
    tmp_path_factory: pytest.TempPathFactory,
) -> Apps:
    folder = tmp_path_factory.mktemp("oauth-apps")
    files = Apps(
        folder / "client-secret",
        folder / "wrong-secret",
        folder / "app.pem",
        google_service_account,
    )
    for path, text in ((files.secret_file, SECRET), (files.wrong_secret_file, WRONG)):
        path.write_text(text + "\n")
        path.chmod(0o600)
    certificate = write_client_certificate(files.certificate_file, make_rsa_key(), "ms-cert")
    token_server.add_client(Client("ms-secret", "intake", secret=SECRET, scope=MICROSOFT_SCOPE))
    token_server.add_client(
        Client("ms-cert", "intake", certificate=certificate, scope=MICROSOFT_SCOPE)
    )
    token_server.add_client(Client("generic", "intake", secret=SECRET))
    return files


@pytest.fixture(scope="module")
def oauth_dovecot(tls_files: TlsFiles, token_server: TokenServer) -> Iterator[Dovecot]:
    """Dovecot requiring TLS, taking XOAUTH2 tokens the token server vouches for."""
    with Dovecot(tls=tls_files, oauth2_introspection_url=token_server.introspection_url) as server:
        yield server


@pytest.fixture(scope="module")
def oauth_smtp(tls_files: TlsFiles, token_server: TokenServer) -> Iterator[SmtpSink]:
    """An SMTP sink requiring STARTTLS, taking AUTH XOAUTH2 with the token server's tokens."""
    with SmtpSink(tls_context=server_context(tls_files), xoauth2_check=token_server.check) as sink:
        yield sink


@pytest.fixture
def dovecot(oauth_dovecot: Dovecot) -> Dovecot:
    oauth_dovecot.clear()
    return oauth_dovecot


@pytest.fixture
def smtp_sink(oauth_smtp: SmtpSink) -> SmtpSink:
    oauth_smtp.clear()
    return oauth_smtp


@pytest.fixture(autouse=True)
def fresh(tokens: TokenServer) -> None:
    """No token cached in this process, none issued by the server."""
    forget_tokens()


def microsoft_secret(server: TokenServer, apps: Apps, secret_file: Path | None = None) -> str:
    return f"""provider = "microsoft"
client_id = "ms-secret"
client_secret_file = "{secret_file or apps.secret_file}"
token_url = "{server.microsoft_token_url}"
"""


def microsoft_certificate(server: TokenServer, apps: Apps) -> str:
    return f"""provider = "microsoft"
client_id = "ms-cert"
certificate_file = "{apps.certificate_file}"
token_url = "{server.microsoft_token_url}"
"""


def google(server: TokenServer, apps: Apps) -> str:
    return f"""provider = "google"
service_account_file = "{apps.google.path}"
"""


def generic(server: TokenServer, apps: Apps) -> str:
    return f"""provider = "generic"
client_id = "generic"
client_secret_file = "{apps.secret_file}"
token_url = "{server.token_url}"
"""


Table = Callable[[TokenServer, Apps], str]


def use_oauth(
    deployment: Deployment,
    table: str,
    *,
    imap_security: str = "tls",
    imap_ca: Path | None = None,
    smtp_ca: Path | None = None,
) -> None:
    """IMAP over TLS (imaps, or STARTTLS) and SMTP over STARTTLS, both signing in with
    XOAUTH2 and the `[imap.oauth2]` table (SMTP has none of its own)."""
    tls = deployment.imap.tls
    assert tls is not None
    deployment.write(extra=f'\n[imap.oauth2]\n{table}ca_file = "{tls.ca_cert}"\n')
    imap_port = deployment.imap.imaps_port if imap_security == "tls" else deployment.imap.port
    text = deployment.config_path.read_text()
    changes = {
        f'port = {deployment.imap.port}\nsecurity = "none"\n': (
            f'port = {imap_port}\nsecurity = "{imap_security}"\n'
            f'ca_file = "{imap_ca or tls.ca_cert}"\n'
        ),
        'password_env = "TEST_IMAP_PASSWORD"\n': 'auth = "oauth2"\n',
        f"port = {deployment.smtp.port}\n": (
            f'port = {deployment.smtp.port}\nsecurity = "starttls"\nauth = "oauth2"\n'
            f'ca_file = "{smtp_ca or tls.ca_cert}"\n'
        ),
    }
    for old, new in changes.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    deployment.config_path.write_text(text)


def source_status(deployment: Deployment) -> SourceStatus:
    engine = make_engine(deployment.config().database_url)
    try:
        with Session(engine) as session:
            name = "imap:intake@127.0.0.1/INBOX"
            found = session.get(SourceStatus, name)
            assert found is not None
            return found
    finally:
        engine.dispose()


# -- the daemon ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table", [microsoft_secret, microsoft_certificate, google, generic], ids=lambda t: t.__name__
)
def test_daemon_reads_over_tls_and_refers_over_starttls_with_xoauth2(
    deployment: Deployment, tokens: TokenServer, apps: Apps, table: Table
):
    use_oauth(deployment, table(tokens, apps))
    deployment.imap.append(email("Someone followed me home. MARK-oauth-1"))
    before = len(deployment.imap.logins())

    assert deployment.run_in_process() == 0

    assert deployment.imap.logins()[before:] == [Login("intake", "XOAUTH2", tls=True)]
    assert deployment.imap.uids("INBOX") == []
    referrals = deployment.referrals()
    assert referrals and all(b"MARK-oauth-1" in inner for inner in referrals)
    sent = deployment.smtp.messages
    assert {(m.auth, m.tls) for m in sent} == {(("XOAUTH2", "intake"), True)}
    assert tokens.issued() == 1  # the poller and the sender shared one token


def test_a_revoked_token_is_fetched_again_once_and_the_poll_succeeds(
    deployment: Deployment, tokens: TokenServer, apps: Apps
):
    use_oauth(deployment, generic(tokens, apps))
    deployment.imap.append(email("First. MARK-oauth-2", message_id="<o2a@example.ac.uk>"))
    assert deployment.run_in_process() == 0
    tokens.revoke()  # the cached token is refused from now on
    deployment.imap.append(email("Second. MARK-oauth-3", message_id="<o2b@example.ac.uk>"))

    assert deployment.run_in_process() == 0

    assert deployment.imap.uids("INBOX") == []
    assert tokens.issued() == 2
    assert source_status(deployment).last_error is None
    assert any(b"MARK-oauth-3" in inner for inner in deployment.referrals())


def test_a_refused_client_secret_is_a_source_error_naming_imap_oauth2_and_shows_nowhere(
    deployment: Deployment, tokens: TokenServer, apps: Apps, intake: Intake
):
    use_oauth(deployment, microsoft_secret(tokens, apps, apps.wrong_secret_file))
    deployment.imap.append(email("Still here. MARK-oauth-4"))

    run = deployment.run_once()

    assert run.returncode & 2, run.stderr  # a source could not be read
    status = source_status(deployment)
    assert status.error_cause == "oauth2"
    assert status.last_error is not None
    assert "imap.oauth2: 127.0.0.1 refused the token request" in status.last_error
    assert "invalid_client, AADSTS7000215" in status.last_error
    assert "imap.oauth2" in run.stderr
    shown = intake("status")
    assert "imap.oauth2" in shown.stdout
    assert len(deployment.imap.uids("INBOX")) == 1  # nothing lost
    assert tokens.requests and all(r.error == "invalid_client" for r in tokens.requests)
    files = [p for p in deployment.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("intake.db") for p in files)
    deployment.assert_nowhere([WRONG], files)  # the database, its WAL, and the run's logs
    assert WRONG not in shown.stdout + shown.stderr
    assert all(WRONG.encode() not in m.data for m in deployment.smtp.messages)


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_imap_certificate_from_another_ca_names_imap_ca_file(
    deployment: Deployment, tokens: TokenServer, apps: Apps, tls_files: TlsFiles, security: str
):
    table = generic(tokens, apps)
    use_oauth(deployment, table, imap_security=security, imap_ca=tls_files.other_ca_cert)

    assert deployment.run_in_process() & 2

    status = source_status(deployment)
    assert status.error_cause == "certificate"
    assert status.last_error is not None
    assert "certificate" in status.last_error and "imap.ca_file" in status.last_error
    subjects = [m.message["Subject"] for m in deployment.smtp.messages]
    assert any("cannot be read (certificate)" in s for s in subjects)  # alerted over XOAUTH2


# -- SMTP and IDLE directly ---------------------------------------------------------------


def smtp_config(
    sink: SmtpSink, server: TokenServer, apps: Apps, ca_file: Path, **changes: object
) -> SmtpConfig:
    oauth2 = OAuth2Config(
        provider="generic",
        client_id="generic",
        client_secret_file=apps.secret_file,
        token_url=server.token_url,
        ca_file=ca_file,
    )
    fields = {
        "host": sink.host,
        "port": sink.port,
        "security": "starttls",
        "auth": "oauth2",
        "username": "intake",
        "oauth2": oauth2,
        "ca_file": ca_file,
    }
    return SmtpConfig.model_validate({**fields, **changes})


def test_smtp_session_signs_in_with_xoauth2_and_sends_nothing(
    smtp_sink: SmtpSink, tokens: TokenServer, apps: Apps, tls_files: TlsFiles
):
    transport = SmtpTransport(smtp_config(smtp_sink, tokens, apps, tls_files.ca_cert))
    with transport.session() as client:
        assert client.noop()[0] == 250
    assert smtp_sink.sign_ins == [("XOAUTH2", "intake")] and smtp_sink.messages == []


def test_smtp_replaces_a_revoked_token_once(
    smtp_sink: SmtpSink, tokens: TokenServer, apps: Apps, tls_files: TlsFiles
):
    config = smtp_config(smtp_sink, tokens, apps, tls_files.ca_cert)
    revoked = token_source(config).token()
    tokens.revoke(revoked)

    SmtpTransport(config).send("intake@example.ac.uk", "a@example.ac.uk", email("Hi"))

    assert tokens.issued() == 2 and len(smtp_sink.messages) == 1
    assert smtp_sink.messages[0].auth == ("XOAUTH2", "intake")


def test_smtp_token_refused_twice_is_a_fault_naming_smtp_oauth2(
    smtp_sink: SmtpSink, tokens: TokenServer, apps: Apps, tls_files: TlsFiles
):
    config = smtp_config(smtp_sink, tokens, apps, tls_files.ca_cert, username="other@x.test")
    with pytest.raises(SendError) as raised:
        SmtpTransport(config).send("intake@example.ac.uk", "a@example.ac.uk", email("Hi"))
    assert raised.value.fault == "smtp.username and smtp.oauth2"
    assert not raised.value.unreachable and tokens.issued() == 2
    assert smtp_sink.messages == []


def test_smtp_server_without_xoauth2_is_a_fault(
    smtp_sink_factory: Callable[..., SmtpSink],
    tokens: TokenServer,
    apps: Apps,
    tls_files: TlsFiles,
):
    sink = smtp_sink_factory(tls_context=server_context(tls_files))
    transport = SmtpTransport(smtp_config(sink, tokens, apps, tls_files.ca_cert))
    with pytest.raises(SendError) as raised, transport.session():
        pass
    assert raised.value.fault == "smtp.auth and smtp.security"
    assert "XOAUTH2" in str(raised.value) and tokens.issued() == 0


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "tls"])
def test_smtp_certificate_from_another_ca_is_a_fault_naming_smtp_ca_file(
    smtp_sink_factory: Callable[..., SmtpSink],
    tokens: TokenServer,
    apps: Apps,
    tls_files: TlsFiles,
    implicit: bool,
):
    sink = smtp_sink_factory(tls_context=server_context(tls_files), implicit_tls=implicit)
    security = "tls" if implicit else "starttls"
    config = smtp_config(sink, tokens, apps, tls_files.other_ca_cert, security=security)
    with pytest.raises(SendError) as raised:
        SmtpTransport(config).send("intake@example.ac.uk", "a@example.ac.uk", email("Hi"))
    error = raised.value
    assert error.fault == "smtp.ca_file" and error.temporary and not error.unreachable
    assert "certificate" in str(error) and "smtp.ca_file" in str(error)
    assert str(error).startswith("SMTP connect:" if implicit else "SMTP STARTTLS:")


def test_idle_signs_in_with_the_shared_token(
    deployment: Deployment, tokens: TokenServer, apps: Apps
):
    use_oauth(deployment, generic(tokens, apps))
    config = deployment.config()
    assert config.imap is not None
    token_source(config.smtp).token()  # the sender's token, which IDLE reuses
    before = len(deployment.imap.logins())
    woken = threading.Event()
    watcher = IdleWatcher(config.imap, woken.set)
    watcher.start()
    try:
        assert woken.wait(10)  # called once signed in and idling
    finally:
        watcher.stop()
    assert deployment.imap.logins()[before:] == [Login("intake", "XOAUTH2", tls=True)]
    assert tokens.issued() == 1


# -- a token endpoint that misbehaves -------------------------------------------------------


def use_smtp_oauth(deployment: Deployment, table: str) -> None:
    """IMAP as the shared deployment has it (a password, on loopback); SMTP over STARTTLS
    signing in with XOAUTH2 and an `[smtp.oauth2]` table of its own."""
    tls = deployment.imap.tls
    assert tls is not None
    deployment.write(extra=f'\n[smtp.oauth2]\n{table}ca_file = "{tls.ca_cert}"\n')
    text = deployment.config_path.read_text()
    old = f"port = {deployment.smtp.port}\n"
    assert text.count(old) == 1
    new = f'{old}security = "starttls"\nauth = "oauth2"\nusername = "intake"\n'
    deployment.config_path.write_text(text.replace(old, f'{new}ca_file = "{tls.ca_cert}"\n'))


def test_a_token_endpoint_without_a_usable_answer_holds_the_outbox_and_fails_no_mail(
    deployment: Deployment, tokens: TokenServer, apps: Apps, intake: Intake
):
    use_smtp_oauth(deployment, microsoft_secret(tokens, apps))
    tokens.canned = Canned(body="[]")  # a broken proxy, say: msal chokes on it
    deployment.imap.append(email("Someone shouted at me in the lab. MARK-oauth-5"))

    run = deployment.run_once()

    assert run.returncode & 4, run.stderr  # mail could not be handed over in this run
    assert "smtp.oauth2: the token endpoint 127.0.0.1 gave no usable token answer" in run.stderr
    status = json.loads(intake("status", "--json").stdout)
    assert [item for item in status["attention"] if item["kind"] == "failed"] == []
    assert deployment.smtp.messages == []
    tokens.canned = None  # the endpoint is mended: the mail that waited goes
    assert deployment.run_in_process() == 0
    assert any(b"MARK-oauth-5" in inner for inner in deployment.referrals())


def test_an_endpoint_that_echoes_the_secret_gets_it_into_no_log_of_the_daemon(
    deployment: Deployment, tokens: TokenServer, apps: Apps
):
    use_smtp_oauth(deployment, microsoft_secret(tokens, apps))
    tokens.canned = Canned(400, "<html>Bad request: {form}</html>", "text/html")
    deployment.imap.append(email("Still here. MARK-oauth-6"))

    run = deployment.run_once()

    assert "gave no usable token answer (JSONDecodeError, HTTP 400)" in run.stderr
    files = [p for p in deployment.data_dir.rglob("*") if p.is_file()]
    deployment.assert_nowhere([SECRET], files)  # the database, and this run's standard error


def test_imap_without_a_usable_token_answer_is_a_source_error_naming_imap_oauth2(
    deployment: Deployment, tokens: TokenServer, apps: Apps
):
    use_oauth(deployment, microsoft_secret(tokens, apps))
    tokens.canned = Canned(body='"ok"')

    assert deployment.run_in_process() & 2

    status = source_status(deployment)
    assert status.error_cause == "oauth2" and status.last_error is not None
    assert (
        status.last_error.startswith("imap (127.0.0.1:")
        and "imap.oauth2: the token endpoint 127.0.0.1 gave no usable token answer (AttributeError"
        in (status.last_error)
    )


def test_a_token_endpoint_outage_makes_imap_unreachable_not_misconfigured(
    deployment: Deployment, tokens: TokenServer, apps: Apps
):
    use_oauth(deployment, generic(tokens, apps))
    tokens.canned = Canned(503, "<html>Service Unavailable</html>", "text/html")

    assert deployment.run_in_process() & 2

    status = source_status(deployment)
    assert status.error_cause == "unreachable" and status.last_error is not None
    assert "imap.oauth2: the token endpoint 127.0.0.1 failed (HTTP 503)" in status.last_error


@pytest.mark.parametrize("status", [500, 429])
def test_a_token_endpoint_outage_makes_smtp_unreachable_not_a_fault(
    smtp_sink: SmtpSink, tokens: TokenServer, apps: Apps, tls_files: TlsFiles, status: int
):
    tokens.canned = Canned(status, "<html>Try later</html>", "text/html")
    config = smtp_config(smtp_sink, tokens, apps, tls_files.ca_cert)
    with pytest.raises(SendError) as raised:
        SmtpTransport(config).send("intake@example.ac.uk", "a@example.ac.uk", email("Hi"))
    error = raised.value
    assert error.unreachable and error.temporary and error.fault is None
    assert str(error).startswith(
        f"smtp.oauth2: the token endpoint 127.0.0.1 failed (HTTP {status})"
    )


def test_a_sign_in_that_fails_in_the_client_holds_the_mail_and_names_the_key(
    smtp_sink_factory: Callable[..., SmtpSink],
):
    sink = smtp_sink_factory()
    config = SmtpConfig(
        host=sink.host, port=sink.port, security="none", username="intake", password="pässwörd"
    )
    with pytest.raises(SendError) as raised:  # smtplib cannot encode it: no fault of the mail
        SmtpTransport(config).send("intake@example.ac.uk", "a@example.ac.uk", email("Hi"))
    error = raised.value
    assert error.temporary and error.fault == "smtp.password"
    assert str(error) == "SMTP AUTH: sign-in failed (UnicodeEncodeError): check smtp.password"


# -- the mail servers' side -------------------------------------------------------------


def imap_oauth2(host: str, port: int, server: TokenServer, apps: Apps, ca_file: Path) -> ImapConfig:
    oauth2 = OAuth2Config(
        provider="generic",
        client_id="generic",
        client_secret_file=apps.secret_file,
        token_url=server.token_url,
        ca_file=ca_file,
    )
    return ImapConfig(
        host=host, port=port, security="none", username="intake", auth="oauth2", oauth2=oauth2
    )


def test_imap_without_xoauth2_says_so_and_asks_for_no_token(
    dovecot_server: Dovecot, tokens: TokenServer, apps: Apps, tls_files: TlsFiles
):
    if not dovecot_server.running:
        dovecot_server.start()
    config = imap_oauth2(dovecot_server.host, dovecot_server.port, tokens, apps, tls_files.ca_cert)
    with pytest.raises(SourceError) as raised:
        ImapSource(config).poll(None)  # type: ignore[arg-type]  # it fails before taking any
    assert raised.value.cause == "auth"
    assert "the server does not offer AUTH=XOAUTH2: check imap.auth" in str(raised.value)
    assert tokens.requests == []


@contextmanager
def imap_that_hangs_up_at_sign_in() -> Iterator[int]:
    """A scripted IMAP server on loopback (its port) that offers XOAUTH2 and closes the
    connection when a client authenticates: a server restarting, a balancer cutting in."""
    capability = b"CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2"
    listener = socket.create_server((LOOPBACK, 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            with connection, connection.makefile("rwb") as stream:
                stream.write(b"* OK [" + capability + b"] ready\r\n")
                stream.flush()
                for line in stream:
                    tag, _, command = line.partition(b" ")
                    if not command.upper().startswith(b"CAPABILITY"):
                        break  # AUTHENTICATE: hang up
                    stream.write(b"* " + capability + b"\r\n" + tag + b" OK done\r\n")
                    stream.flush()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_a_connection_lost_while_signing_in_keeps_the_shared_token(
    tokens: TokenServer, apps: Apps, tls_files: TlsFiles
):
    with imap_that_hangs_up_at_sign_in() as port:
        config = imap_oauth2(LOOPBACK, port, tokens, apps, tls_files.ca_cert)
        token = token_source(config).token()  # the sender's, say, shared with the poller
        with pytest.raises(SourceError) as raised:
            ImapSource(config).poll(None)  # type: ignore[arg-type]  # it fails before taking any
    assert raised.value.cause == "connection"
    assert "the connection was lost" in str(raised.value)
    assert token_source(config).token() == token and tokens.issued() == 1  # not refused


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (
            "535 5.7.3 Authentication unsuccessful",
            "SMTP 535 5.7.3 at AUTH: the app needs SMTP.SendAsApp, and its Exchange service "
            "principal needs Add-MailboxPermission on the mailbox",
        ),
        (
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled",
            "SMTP 535 5.7.139 at AUTH: SMTP AUTH is disabled for the mailbox (or the tenant): "
            "Set-CASMailbox -Identity intake -SmtpClientAuthenticationDisabled $false",
        ),
    ],
)
def test_smtp_sign_in_refused_says_what_the_mailbox_needs(
    smtp_sink: SmtpSink,
    tokens: TokenServer,
    apps: Apps,
    tls_files: TlsFiles,
    reply: str,
    says: str,
):
    smtp_sink.refuse(reply, at="AUTH")
    oauth2 = OAuth2Config(
        provider="microsoft",
        client_id="ms-secret",
        client_secret_file=apps.secret_file,
        token_url=tokens.microsoft_token_url,
        ca_file=tls_files.ca_cert,
    )
    config = smtp_config(smtp_sink, tokens, apps, tls_files.ca_cert, oauth2=oauth2)
    with pytest.raises(SendError) as raised:
        SmtpTransport(config).send("intake@example.ac.uk", "a@example.ac.uk", email("Hi"))
    assert str(raised.value).startswith(says)
    assert raised.value.fault == "smtp.username and smtp.oauth2"


def test_google_imap_refused_after_a_token_was_issued_points_at_imap_access():
    oauth2 = OAuth2Config(provider="google", service_account_file=Path("/etc/google.json"))
    config = ImapConfig(
        host="imap.gmail.com", username="box@uni.ac.uk", auth="oauth2", oauth2=oauth2
    )
    error = connect_error(config, LoginError("b'[AUTHENTICATIONFAILED] Invalid credentials'"))
    assert error.cause == "login"
    assert "IMAP is most likely off for this user" in str(error)
