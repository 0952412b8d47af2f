"""pipeline.oauth against the real local token server (tests/servers/tokens.py) over HTTPS:
each provider's grant, the cache shared by IMAP and SMTP, renewal before expiry, a new token
after a refusal, and errors that name the table, the host and the provider's code, never a
secret. Also the endpoint misbehaving (`Canned` answers): a page or a JSON list instead of a
token, an outage, a redirect, an echo of the secret, an answer that trickles in."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.config import ConfigError, ImapConfig, OAuth2Config, SmtpConfig
from pipeline.oauth import (
    Token,
    TokenError,
    endpoint,
    forget_tokens,
    microsoft_authority,
    read_certificate,
    token_source,
)
from tests.servers.net import free_port
from tests.servers.tls import TlsFiles
from tests.servers.tokens import (
    MICROSOFT_SCOPE,
    Canned,
    Client,
    ServiceAccountKey,
    TokenServer,
    make_rsa_key,
    write_client_certificate,
    write_service_account_file,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "Cl1ent-S3cret~value+/="  # form-encoding matters for HTTP Basic
WRONG = "wr0ng-S3cret~value-8e1a"  # the token server quotes it in its error description


@dataclass(frozen=True)
class Apps:
    """The applications registered with the session's token server."""

    certificate: Path  # key and certificate of "ms-cert"
    stranger: Path  # key and certificate no app holds
    ca_file: Path


@pytest.fixture(scope="module")
def apps(
    token_server: TokenServer, tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Apps:
    folder = tmp_path_factory.mktemp("apps")
    certificate = write_client_certificate(folder / "app.pem", make_rsa_key(), "ms-cert")
    write_client_certificate(folder / "stranger.pem", make_rsa_key(), "ms-cert")
    token_server.add_client(Client("ms-secret", "intake", secret=SECRET, scope=MICROSOFT_SCOPE))
    token_server.add_client(
        Client("ms-cert", "intake", certificate=certificate, scope=MICROSOFT_SCOPE)
    )
    token_server.add_client(Client("generic", "intake", secret=SECRET))
    return Apps(folder / "app.pem", folder / "stranger.pem", tls_files.ca_cert)


@pytest.fixture(autouse=True)
def no_cached_tokens() -> None:
    forget_tokens()


def generic(server: TokenServer, apps: Apps, **changes: object) -> OAuth2Config:
    fields = {
        "provider": "generic",
        "client_id": "generic",
        "client_secret": SECRET,
        "token_url": server.token_url,
        "ca_file": apps.ca_file,
    }
    return OAuth2Config.model_validate({**fields, **changes})


def microsoft(server: TokenServer, apps: Apps, **changes: object) -> OAuth2Config:
    fields = {
        "provider": "microsoft",
        "client_id": "ms-secret",
        "client_secret": SECRET,
        "token_url": server.microsoft_token_url,
        "ca_file": apps.ca_file,
    }
    return OAuth2Config.model_validate({**fields, **changes})


def google(key: ServiceAccountKey, ca_file: Path) -> OAuth2Config:
    return OAuth2Config(provider="google", service_account_file=key.path, ca_file=ca_file)


def imap(oauth2: OAuth2Config, username: str = "intake") -> ImapConfig:
    return ImapConfig(host="127.0.0.1", username=username, auth="oauth2", oauth2=oauth2)


def smtp(oauth2: OAuth2Config, username: str = "intake") -> SmtpConfig:
    return SmtpConfig(
        host="127.0.0.1", security="starttls", username=username, auth="oauth2", oauth2=oauth2
    )


# -- the cache ----------------------------------------------------------------------------


def test_one_token_serves_imap_and_smtp_until_it_nears_its_end(tokens: TokenServer, apps: Apps):
    oauth2 = generic(tokens, apps)
    first = token_source(imap(oauth2)).token()
    assert token_source(smtp(oauth2)).token() == first
    assert token_source(imap(oauth2)).token() == first
    assert tokens.issued() == 1 and tokens.active(first) == "intake"
    assert tokens.requests[0].basic  # the client secret went by HTTP Basic, form-encoded


def test_a_token_is_renewed_before_it_expires(tokens: TokenServer, apps: Apps):
    tokens.expires_in = 1  # renewed once less than 0.1 s of it is left
    source = token_source(imap(generic(tokens, apps)))
    first = source.token()
    assert source.token() == first
    time.sleep(0.95)
    assert source.token() != first
    assert tokens.issued() == 2


@pytest.mark.parametrize(
    ("lifetime", "left", "fresh"),
    [(3600, 301, True), (3600, 299, False), (60, 6.5, True), (60, 5.5, False)],
)
def test_the_margin_is_five_minutes_or_a_tenth_of_the_life(
    lifetime: float, left: float, fresh: bool
):
    assert Token("t", lifetime, expires=10_000.0).fresh(10_000.0 - left) is fresh


def test_invalidate_drops_only_the_refused_token(tokens: TokenServer, apps: Apps):
    oauth2 = generic(tokens, apps)
    poller, sender = token_source(imap(oauth2)), token_source(smtp(oauth2))
    old = poller.token()
    poller.invalidate(old)
    new = sender.token()
    assert new != old
    sender.invalidate(old)  # a late refusal of the old token keeps the new one
    assert poller.token() == new and tokens.issued() == 2


def test_sign_in_tries_a_new_token_once_after_a_refusal(tokens: TokenServer, apps: Apps):
    source = token_source(imap(generic(tokens, apps)))
    revoked = source.token()
    tokens.revoke()
    tried: list[str] = []

    def attempt(token: str) -> str:
        tried.append(token)
        if tokens.active(token) is None:
            raise PermissionError("refused")
        return token

    new = source.sign_in(attempt, PermissionError)
    assert tried == [revoked, new] and tokens.active(new) == "intake"
    assert source.token() == new


def test_sign_in_refused_twice_is_refused(tokens: TokenServer, apps: Apps):
    source = token_source(imap(generic(tokens, apps)))

    def attempt(token: str) -> None:
        raise PermissionError("refused")

    with pytest.raises(PermissionError):
        source.sign_in(attempt, PermissionError)
    assert tokens.issued() == 2


# -- providers ----------------------------------------------------------------------------


def test_microsoft_with_a_client_secret(tokens: TokenServer, apps: Apps):
    token = token_source(imap(microsoft(tokens, apps))).token()
    assert tokens.active(token) == "intake"
    assert [(r.flow, r.client, r.basic) for r in tokens.requests] == [
        ("secret", "ms-secret", False)
    ]


def test_microsoft_gives_a_new_token_after_a_refusal(tokens: TokenServer, apps: Apps):
    source = token_source(imap(microsoft(tokens, apps)))
    refused = source.token()
    source.invalidate(refused)  # msal's own cache holds it: it is emptied, not handed back
    assert source.token() not in (refused, None) and tokens.issued() == 2


def test_microsoft_with_a_certificate(tokens: TokenServer, apps: Apps):
    oauth2 = microsoft(
        tokens, apps, client_id="ms-cert", client_secret=None, certificate_file=apps.certificate
    )
    token = token_source(imap(oauth2)).token()
    assert tokens.active(token) == "intake"
    assert [(r.flow, r.client) for r in tokens.requests] == [("certificate", "ms-cert")]


def test_microsoft_with_a_certificate_the_app_does_not_hold(tokens: TokenServer, apps: Apps):
    oauth2 = microsoft(
        tokens, apps, client_id="ms-cert", client_secret=None, certificate_file=apps.stranger
    )
    with pytest.raises(TokenError) as raised:
        token_source(imap(oauth2)).token()
    _, thumbprint = read_certificate(apps.stranger, "key")
    message = str(raised.value)
    assert message.startswith("imap.oauth2: 127.0.0.1 refused the token request")
    assert "AADSTS700027" in message and thumbprint in message
    assert "imap.oauth2.certificate_file" in message


def test_microsoft_tenant_unknown_to_the_authority(tokens: TokenServer, apps: Apps):
    url = tokens.microsoft_token_url.replace(tokens.tenant, "nowhere.test")
    with pytest.raises(TokenError) as raised:
        token_source(imap(microsoft(tokens, apps, token_url=url))).token()
    message = str(raised.value)
    assert "AADSTS90002" in message and "imap.oauth2.tenant" in message


def test_microsoft_authority_from_tenant_or_token_url():
    base = {"provider": "microsoft", "client_id": "c", "client_secret": "s"}
    public = OAuth2Config.model_validate({**base, "tenant": "uni.onmicrosoft.com"})
    assert microsoft_authority(public, "imap.oauth2") == (
        "https://login.microsoftonline.com/uni.onmicrosoft.com"
    )
    us = OAuth2Config.model_validate(
        {
            **base,
            "token_url": "https://login.microsoftonline.us/uni.onmicrosoft.com/oauth2/v2.0/token",
        }
    )
    assert microsoft_authority(us, "imap.oauth2") == (
        "https://login.microsoftonline.us/uni.onmicrosoft.com"
    )
    v1 = OAuth2Config.model_validate(
        {**base, "token_url": "https://login.microsoftonline.us/uni/oauth2/token"}
    )
    with pytest.raises(ConfigError, match=r"^smtp\.oauth2\.token_url: .*v2\.0"):
        microsoft_authority(v1, "smtp.oauth2")


def test_google_service_account_acts_as_the_mailbox(
    tokens: TokenServer, google_service_account: ServiceAccountKey, apps: Apps
):
    token = token_source(imap(google(google_service_account, apps.ca_file))).token()
    assert tokens.active(token) == "intake"
    assert [(r.flow, r.client) for r in tokens.requests] == [
        ("jwt-bearer", google_service_account.email)
    ]


def test_google_mailbox_without_delegation(
    tokens: TokenServer, google_service_account: ServiceAccountKey, apps: Apps
):
    config = imap(google(google_service_account, apps.ca_file), username="someone.else")
    with pytest.raises(TokenError) as raised:
        token_source(config).token()
    message = str(raised.value)
    assert message.startswith("imap.oauth2: 127.0.0.1 refused the token request")
    assert "unauthorized_client" in message and "domain-wide delegation" in message
    assert "104857600000000000001" in message  # the key file's client ID, to paste there
    assert raised.value.code == "unauthorized_client"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "not JSON"),
        ('{"type": "authorized_user"}', "not a service account's key"),
        ('{"type": "service_account", "client_email": "a@b"}', "lacks private_key, token_uri"),
    ],
)
def test_google_key_file_that_is_not_one(tmp_path: Path, content: str, says: str, apps: Apps):
    path = tmp_path / "key.json"
    path.write_text(content)
    oauth2 = OAuth2Config(provider="google", service_account_file=path)
    with pytest.raises(ConfigError, match=r"^imap\.oauth2\.service_account_file: ") as raised:
        token_source(imap(oauth2)).token()
    assert says in str(raised.value)


# -- errors, and no secret in them ------------------------------------------------------


@pytest.mark.parametrize("provider", [microsoft, generic])
def test_a_refused_secret_names_table_host_and_code_and_never_the_secret(
    tokens: TokenServer,
    apps: Apps,
    provider: object,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.DEBUG)
    config = smtp(provider(tokens, apps, client_secret=WRONG))  # type: ignore[operator]
    with pytest.raises(TokenError) as raised:
        token_source(config).token()
    message = str(raised.value)
    assert message.startswith("smtp.oauth2: 127.0.0.1 refused the token request (invalid_client")
    assert raised.value.code == "invalid_client"
    assert tokens.requests[-1].error == "invalid_client"  # the server saw it, and quoted it
    for text in (message, repr(raised.value), caplog.text, repr(config), str(config)):
        assert WRONG not in text


def test_nothing_secret_in_the_logs_of_a_good_fetch(
    tokens: TokenServer, apps: Apps, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    oauth2 = microsoft(
        tokens, apps, client_id="ms-cert", client_secret=None, certificate_file=apps.certificate
    )
    source = token_source(imap(oauth2))
    token = source.token()
    key_body = apps.certificate.read_text().splitlines()[1]  # a line of the private key
    assert "new access token from 127.0.0.1" in caplog.text
    for text in (caplog.text, repr(source)):
        assert token not in text and key_body not in text and "PRIVATE KEY" not in text


@pytest.mark.parametrize("provider", [microsoft, generic])
def test_token_endpoint_whose_certificate_does_not_verify(
    tokens: TokenServer, apps: Apps, tls_files: TlsFiles, provider: object
):
    oauth2 = provider(tokens, apps, ca_file=tls_files.other_ca_cert)  # type: ignore[operator]
    with pytest.raises(TokenError) as raised:
        token_source(imap(oauth2)).token()
    message = str(raised.value)
    assert "certificate" in message and "imap.oauth2.ca_file" in message
    assert tokens.issued() == 0


def test_token_endpoint_unreachable(tokens: TokenServer, apps: Apps):
    url = f"https://127.0.0.1:{free_port()}/token"
    with pytest.raises(TokenError, match=r"^imap\.oauth2: cannot reach the token endpoint") as e:
        token_source(imap(generic(tokens, apps, token_url=url))).token()
    assert e.value.transient  # worth trying again: nothing in the configuration is wrong


def test_missing_ca_file_names_its_key(tokens: TokenServer, apps: Apps, tmp_path: Path):
    oauth2 = generic(tokens, apps, ca_file=tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=r"^imap\.oauth2\.ca_file: .*no such file"):
        token_source(imap(oauth2)).token()


def test_without_the_oauth_extra(tokens: TokenServer, apps: Apps, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "msal", None)  # as if it were not installed
    with pytest.raises(TokenError) as raised:
        token_source(smtp(microsoft(tokens, apps))).token()
    message = str(raised.value)
    assert message.startswith("smtp.oauth2: ") and "msal" in message
    assert "pip install 'report-intake[oauth]'" in message


def _pem_key(key: object) -> str:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_certificate_file_problems_name_the_key(tmp_path: Path, apps: Apps):
    text = apps.certificate.read_text()
    key_pem, cert_pem = text.split("-----END PRIVATE KEY-----\n")
    key_pem += "-----END PRIVATE KEY-----\n"
    other = _pem_key(make_rsa_key())
    encrypted = (
        make_rsa_key()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
        .decode()
    )
    cases = {
        "only-cert.pem": (cert_pem, "needs the private key and the certificate"),
        "other-key.pem": (other + cert_pem, "the private key is not the certificate's"),
        "encrypted.pem": (encrypted + cert_pem, "the private key is encrypted"),
        "ec.pem": (_pem_key(ec.generate_private_key(ec.SECP256R1())) + cert_pem, "RSA key"),
    }
    for name, (content, says) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(ConfigError) as raised:
            read_certificate(path, "imap.oauth2.certificate_file")
        message = str(raised.value)
        assert message.startswith(f"imap.oauth2.certificate_file: {path}: ") and says in message
        assert "PRIVATE KEY" not in message
    credential, thumbprint = read_certificate(apps.certificate, "imap.oauth2.certificate_file")
    assert len(thumbprint) == 40 and credential["public_certificate"] == cert_pem.strip()


def test_a_certificate_systemd_passes_is_read_from_its_credentials_folder(
    apps: Apps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """certificate_file = "${CREDENTIALS_DIRECTORY}/m365-certificate" (LoadCredential=)."""
    given = Path("${CREDENTIALS_DIRECTORY}/m365-certificate")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set"):
        read_certificate(given, "imap.oauth2.certificate_file")
    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "m365-certificate").write_bytes(apps.certificate.read_bytes())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    _, thumbprint = read_certificate(given, "imap.oauth2.certificate_file")
    assert thumbprint == read_certificate(apps.certificate, "key")[1]


# -- an endpoint that misbehaves ----------------------------------------------------------


def config_of(provider: str, tokens: TokenServer, apps: Apps, key: ServiceAccountKey) -> ImapConfig:
    if provider == "google":
        return imap(google(key, apps.ca_file))
    return imap((microsoft if provider == "microsoft" else generic)(tokens, apps))


PAGE = Canned(body="<html>Sign in to the proxy</html>", content_type="text/html")
UNUSABLE = {
    "microsoft, a JSON list": ("microsoft", Canned(body="[]"), "AttributeError"),
    "microsoft, a JSON string": ("microsoft", Canned(body='"ok"'), "AttributeError"),
    "microsoft, expires_in soon": ("microsoft", "soon", "ValueError"),
    "generic, a proxy's page": ("generic", PAGE, "no access_token"),
    "google, a proxy's page": ("google", PAGE, "TypeError"),
    "google, expires_in soon": ("google", "soon", "ValueError"),
}


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_an_answer_without_a_usable_token_is_a_token_error(
    tokens: TokenServer, apps: Apps, google_service_account: ServiceAccountKey, case: str
):
    provider, answer, what = UNUSABLE[case]
    if isinstance(answer, Canned):
        tokens.canned = answer
    else:
        tokens.expires_in = answer
    with pytest.raises(TokenError) as raised:
        token_source(config_of(provider, tokens, apps, google_service_account)).token()
    message = str(raised.value)
    assert message.startswith(
        f"imap.oauth2: the token endpoint 127.0.0.1 gave no usable token answer ({what}"
    )
    assert not raised.value.transient  # the endpoint answered: its address is the suspect


@pytest.mark.parametrize(
    ("expires_in", "valid"),
    [
        (0, 3600),
        (-100, 3600),
        (float("nan"), 3600),
        (float("inf"), 3600),  # 1e400 in JSON
        ("soon", 3600),
        (True, 3600),
        ("7200", 7200),
        (10**9, 86400),
    ],
)
def test_a_token_life_that_makes_no_sense_is_an_hour_and_at_most_a_day(
    tokens: TokenServer,
    apps: Apps,
    caplog: pytest.LogCaptureFixture,
    expires_in: object,
    valid: int,
):
    caplog.set_level(logging.INFO)
    tokens.expires_in = expires_in
    source = token_source(imap(generic(tokens, apps)))
    assert source.token() == source.token()
    assert tokens.issued() == 1
    assert f"new access token from 127.0.0.1 (valid {valid} s)" in caplog.text


@pytest.mark.parametrize("provider", ["microsoft", "google", "generic"])
def test_a_redirect_from_the_token_endpoint_is_never_followed(
    tokens: TokenServer, apps: Apps, google_service_account: ServiceAccountKey, provider: str
):
    elsewhere = f"{tokens.plain_url}/collect"  # plain HTTP, another port
    tokens.canned = Canned(status=307, headers=(("Location", elsewhere),))
    with pytest.raises(TokenError) as raised:
        token_source(config_of(provider, tokens, apps, google_service_account)).token()
    message = str(raised.value)
    assert "answered with a redirect (HTTP 307), which is never followed" in message
    assert not raised.value.transient
    assert tokens.stray == []  # nothing, the client secret or assertion least of all, went on


OUTAGES = [
    Canned(status=500, body="<html>Internal error</html>", content_type="text/html"),
    Canned(status=503, body='{"error": "temporarily_unavailable"}'),
    Canned(status=429, body='{"error": "slow_down"}', headers=(("Retry-After", "1"),)),
]


@pytest.mark.parametrize("provider", ["microsoft", "generic"])
@pytest.mark.parametrize("outage", OUTAGES, ids=lambda c: str(c.status))
def test_an_outage_of_the_token_endpoint_is_transient_and_no_refusal(
    tokens: TokenServer,
    apps: Apps,
    google_service_account: ServiceAccountKey,
    provider: str,
    outage: Canned,
):
    tokens.canned = outage
    with pytest.raises(TokenError) as raised:
        token_source(config_of(provider, tokens, apps, google_service_account)).token()
    message = str(raised.value)
    assert message.startswith(
        f"imap.oauth2: the token endpoint 127.0.0.1 failed (HTTP {outage.status})"
    )
    assert raised.value.transient and "refused" not in message


def test_an_answer_that_trickles_in_is_given_up_at_the_deadline(
    tokens: TokenServer, apps: Apps, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(endpoint, "TIMEOUT", 1.0)
    answer = '{"access_token": "tok", "token_type": "Bearer", "expires_in": 3600}'
    tokens.canned = Canned(body=answer, trickle=0.2)  # 13 s in all, a byte at a time
    started = time.monotonic()
    with pytest.raises(TokenError) as raised:
        token_source(imap(generic(tokens, apps))).token()
    assert time.monotonic() - started < 4
    assert str(raised.value) == "imap.oauth2: the token endpoint 127.0.0.1 did not answer in 1 s"
    assert raised.value.transient


def test_an_endpoint_that_echoes_the_secret_gets_it_into_no_log(
    tokens: TokenServer,
    apps: Apps,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    # urllib3's DEBUG lines prove the capture works. pytest keeps one capture handler for the
    # session, and an earlier in-process `intake run` gave it the third-party filter
    # (pipeline.logs): take that off here, so that everything libraries log is seen.
    monkeypatch.setattr(caplog.handler, "filters", [])
    caplog.set_level(logging.DEBUG)
    tokens.canned = Canned(400, "<html>Bad request: {form}</html>", "text/html")
    with pytest.raises(TokenError) as raised:
        token_source(imap(microsoft(tokens, apps, client_secret=WRONG))).token()
    assert "gave no usable token answer (JSONDecodeError, HTTP 400)" in str(raised.value)
    assert caplog.records  # what was logged, was caught
    assert WRONG not in caplog.text and "client_secret" not in caplog.text


def test_a_library_record_with_a_traceback_never_reaches_the_log():
    code = textwrap.dedent(
        f"""
        import logging
        from pipeline.logs import setup_logging
        setup_logging()
        try:
            raise ValueError("not JSON: client_secret={WRONG}")
        except ValueError:
            logging.getLogger("somelibrary").exception("bad answer: %s", "{WRONG}")
        logging.getLogger("somelibrary").warning("a warning of its own")
        logging.getLogger("pipeline.x").error("ours", exc_info=True)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert WRONG not in run.stderr
    assert "a warning of its own" in run.stderr and "pipeline.x: ours" in run.stderr


def test_a_key_file_whose_token_uri_is_not_https_is_refused(tokens: TokenServer, tmp_path: Path):
    path = write_service_account_file(
        tmp_path / "key.json", make_rsa_key(), "sa@x.test", "http://oauth2.example.com/token"
    )
    oauth2 = OAuth2Config(provider="google", service_account_file=path)
    with pytest.raises(ConfigError) as raised:
        token_source(imap(oauth2)).token()
    message = str(raised.value)
    assert message.startswith(f"imap.oauth2.service_account_file: {path}: its token_uri ")
    assert "https://" in message and "PRIVATE KEY" not in message
