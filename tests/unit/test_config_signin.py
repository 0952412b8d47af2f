"""config.py, signing in (issue 10 §1–§2): no password or token in the clear to another host,
`[imap.oauth2]`/`[smtp.oauth2]` checked per provider, `[smtp] auth = "oauth2"` borrowing
imap's table and mailbox, `ca_file` resolved next to the config and read by `tls_context()`,
and no secret in a repr or an error."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.config import ConfigError, ImapConfig, SmtpConfig, is_loopback, load_config
from tests.servers.tls import TlsFiles

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
GPG = f'[gpg]\nrecords_keys = ["{FPR}"]\n'
PASSWORD = "pw-canary-61c2"
CLIENT_SECRET = "cs-canary-0d7e"

MICROSOFT = f"""[imap.oauth2]
provider = "microsoft"
tenant = "uni.onmicrosoft.com"
client_id = "app-1"
client_secret = "{CLIENT_SECRET}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "intake.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(GPG + text)
    return path


def config_error(action: Callable[[], object]) -> str:
    """The message of the ConfigError that `action()` must raise."""
    with pytest.raises(ConfigError) as caught:
        action()
    return str(caught.value)


def load_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = write(tmp_path, text)
    return path, config_error(lambda: load_config(path))


def imap(host: str, security: str, extra: str = "") -> str:
    return f'[imap]\nhost = "{host}"\nsecurity = "{security}"\nusername = "u@uni.ac.uk"\n{extra}'


# -- nothing secret in the clear ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "what"),
    [
        (imap("mail.uni.ac.uk", "none", f'password = "{PASSWORD}"\n'), "imap", "the password"),
        (imap("192.0.2.7", "none", 'password_env = "X"\n'), "imap", "the password"),
        (imap("mail.uni.ac.uk", "none", 'auth = "oauth2"\n') + MICROSOFT, "imap", "OAuth2"),
        (
            f'[smtp]\nhost = "smtp.uni.ac.uk"\nusername = "u"\npassword = "{PASSWORD}"\n',
            "smtp",
            "the password",
        ),
        (
            imap("mail.uni.ac.uk", "tls", 'auth = "oauth2"\n')
            + MICROSOFT
            + '[smtp]\nhost = "smtp.uni.ac.uk"\nauth = "oauth2"\n',
            "smtp",
            "OAuth2",
        ),
    ],
)
def test_a_secret_over_security_none_to_another_host_is_refused_naming_the_key(
    tmp_path: Path, text: str, key: str, what: str
) -> None:
    path, error = load_error(tmp_path, text)
    assert error.startswith(f"{path}: {key}: ") and f"set {key}.security" in error
    assert what in error and "\n" not in error
    assert PASSWORD not in error and CLIENT_SECRET not in error


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "LocalHost", "::1"])
def test_a_secret_over_security_none_stays_allowed_on_loopback(tmp_path: Path, host: str) -> None:
    text = imap(host, "none", f'password = "{PASSWORD}"\n')
    text += f'[smtp]\nhost = "{host}"\nusername = "u"\npassword = "{PASSWORD}"\n'
    config = load_config(write(tmp_path, text))
    assert config.imap is not None and config.imap.host == host
    assert config.imap.security == config.smtp.security == "none"


def test_smtp_without_sign_in_may_relay_in_the_clear_to_another_host(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[smtp]\nhost = "relay.uni.ac.uk"\n'))
    assert (config.smtp.host, config.smtp.security, config.smtp.signs_in) == (
        "relay.uni.ac.uk",
        "none",
        False,
    )


@given(st.ip_addresses())
def test_is_loopback_agrees_with_ipaddress(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assert is_loopback(str(address)) == address.is_loopback
    if address.version == 6:
        assert is_loopback(f"[{address}]") == address.is_loopback


@given(st.from_regex(r"[a-z][a-z0-9-]{0,15}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True))
def test_a_host_name_other_than_localhost_is_not_loopback(name: str) -> None:
    if name not in ("localhost", "localhost.localdomain"):
        assert not is_loopback(name)


@given(st.ip_addresses(v=4) | st.ip_addresses(v=6), st.sampled_from(["password", "oauth2"]))
def test_security_none_refuses_exactly_the_hosts_that_are_not_loopback(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, auth: str
) -> None:
    fields: dict[str, object] = {"host": str(address), "security": "none", "username": "u"}
    if auth == "oauth2":
        fields |= {"auth": auth, "oauth2": {"provider": "google", "service_account_file": "/k"}}
    else:
        fields["password"] = PASSWORD
    for model in (SmtpConfig, ImapConfig):
        if address.is_loopback:
            assert model.model_validate(fields).host == str(address)
        else:
            with pytest.raises(ValidationError, match=f"{model.section}.security"):
                model.model_validate(fields)


# -- OAuth2 tables ------------------------------------------------------------------------


def oauth2_table(section: str, lines: str) -> str:
    head = imap("outlook.office365.com", "tls", 'auth = "oauth2"\n')
    if section == "smtp":
        head += '[smtp]\nhost = "smtp.office365.com"\nsecurity = "starttls"\nauth = "oauth2"\n'
    return f"{head}[{section}.oauth2]\n{lines}"


OAUTH2_ERRORS = {
    "google without its key file": (
        'provider = "google"\n',
        "provider google needs service_account_file",
    ),
    "microsoft without client_id": (
        f'provider = "microsoft"\ntenant = "t"\nclient_secret = "{CLIENT_SECRET}"\n',
        "provider microsoft needs client_id",
    ),
    "microsoft without tenant": (
        f'provider = "microsoft"\nclient_id = "c"\nclient_secret = "{CLIENT_SECRET}"\n',
        "provider microsoft needs tenant",
    ),
    "microsoft without a secret": (
        'provider = "microsoft"\ntenant = "t"\nclient_id = "c"\n',
        "provider microsoft needs one of client_secret_file, client_secret_env, client_secret or certificate_file",
    ),
    "microsoft with a secret and a certificate": (
        f'provider = "microsoft"\ntenant = "t"\nclient_id = "c"\nclient_secret = "{CLIENT_SECRET}"\ncertificate_file = "app.pem"\n',
        "certificate_file",
    ),
    "two secrets": (
        f'provider = "generic"\ntoken_url = "https://id.example/token"\nclient_id = "c"\nclient_secret = "{CLIENT_SECRET}"\nclient_secret_env = "X"\n',
        "set only one of client_secret_env, client_secret",
    ),
    "generic without token_url": (
        f'provider = "generic"\nclient_id = "c"\nclient_secret = "{CLIENT_SECRET}"\n',
        "provider generic needs token_url",
    ),
    "generic without client_id": (
        f'provider = "generic"\ntoken_url = "https://id.example/token"\nclient_secret = "{CLIENT_SECRET}"\n',
        "provider generic needs client_id",
    ),
    "generic without a secret": (
        'provider = "generic"\ntoken_url = "https://id.example/token"\nclient_id = "c"\n',
        "provider generic needs one of client_secret_file, client_secret_env, client_secret",
    ),
    "google with a client secret": (
        f'provider = "google"\nservice_account_file = "sa.json"\nclient_secret = "{CLIENT_SECRET}"\n',
        "provider google does not use client_secret: remove it",
    ),
    "google with a client and a token_url": (
        'provider = "google"\nservice_account_file = "sa.json"\nclient_id = "c"\ntoken_url = "https://t.example/token"\n',
        "provider google does not use client_id, token_url: remove them",
    ),
    "generic with a certificate and a tenant": (
        f'provider = "generic"\ntoken_url = "https://id.example/token"\nclient_id = "c"\nclient_secret = "{CLIENT_SECRET}"\ncertificate_file = "app.pem"\ntenant = "t"\n',
        "provider generic does not use tenant, certificate_file: remove them",
    ),
    "microsoft with a service account file": (
        MICROSOFT.split("\n", 1)[1] + 'service_account_file = "sa.json"\n',
        "provider microsoft does not use service_account_file: remove it",
    ),
}


@pytest.mark.parametrize("section", ["imap", "smtp"])
@pytest.mark.parametrize("case", list(OAUTH2_ERRORS))
def test_an_incomplete_oauth2_table_is_refused_naming_it(
    tmp_path: Path, section: str, case: str
) -> None:
    lines, expected = OAUTH2_ERRORS[case]
    text = oauth2_table(section, lines)
    if section == "smtp":  # imap's own table is fine
        text = text.replace("[smtp]", MICROSOFT + "[smtp]")
    path, error = load_error(tmp_path, text)
    assert error.startswith(f"{path}: {section}.oauth2: ") and expected in error, error
    assert CLIENT_SECRET not in error and "\n" not in error


GENERIC = 'provider = "generic"\nclient_id = "c"\nclient_secret = "{}"\ntoken_url = "{}"\n'


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example.com/token",
        "ftp://idp.example.com/token",
        "idp.example.com/token",
        "http://127.0.0.1.example.com/token",
        "https://[::1/token",
    ],
)
def test_a_token_url_that_would_send_the_secret_in_the_clear_is_refused_naming_it(
    tmp_path: Path, url: str
) -> None:
    path, error = load_error(tmp_path, oauth2_table("imap", GENERIC.format(CLIENT_SECRET, url)))
    assert error.startswith(f"{path}: imap.oauth2.token_url: not an https:// address"), error
    assert CLIENT_SECRET not in error and "\n" not in error


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.com/token",
        "http://127.0.0.1:8080/token",
        "http://[::1]:8080/token",
        "http://localhost/token",
    ],
)
def test_a_token_url_is_https_or_plain_http_to_loopback(tmp_path: Path, url: str) -> None:
    config = load_config(write(tmp_path, oauth2_table("imap", GENERIC.format(CLIENT_SECRET, url))))
    assert config.imap is not None and config.imap.oauth2 is not None
    assert config.imap.oauth2.token_url == url


def test_an_unknown_provider_is_refused_naming_the_key(tmp_path: Path) -> None:
    path, error = load_error(tmp_path, oauth2_table("imap", 'provider = "yahoo"\n'))
    assert error.startswith(f"{path}: imap.oauth2.provider: ") and "microsoft" in error


def test_an_oauth2_error_is_the_promised_one_liner(tmp_path: Path) -> None:
    path, error = load_error(tmp_path, oauth2_table("imap", 'provider = "google"\n'))
    assert error == (
        f"{path}: imap.oauth2: provider google needs service_account_file (the JSON key)"
    )


def test_imap_oauth2_needs_its_table(tmp_path: Path) -> None:
    path, error = load_error(tmp_path, imap("h.example", "tls", 'auth = "oauth2"\n'))
    assert error.startswith(f"{path}: imap: ") and "[imap.oauth2]" in error


@pytest.mark.parametrize("provider", ["microsoft", "google", "generic"])
def test_each_provider_loads_with_its_keys_and_default_scope(tmp_path: Path, provider: str) -> None:
    lines = {
        "microsoft": MICROSOFT.split("\n", 1)[1],
        "google": 'provider = "google"\nservice_account_file = "keys/sa.json"\n',
        "generic": f'provider = "generic"\ntoken_url = "https://id.example/token"\nclient_id = "c"\nclient_secret = "{CLIENT_SECRET}"\n',
    }[provider]
    config = load_config(write(tmp_path, oauth2_table("imap", lines)))
    assert config.imap is not None and config.imap.oauth2 is not None
    oauth2 = config.imap.oauth2
    assert oauth2.provider == provider and config.imap.credential_key == "imap.oauth2"
    assert (
        oauth2.scopes
        == {
            "microsoft": "https://outlook.office365.com/.default",
            "google": "https://mail.google.com/",
            "generic": None,
        }[provider]
    )
    if provider == "google":
        assert oauth2.service_account_file == tmp_path / "conf" / "keys" / "sa.json"
    else:
        assert oauth2.secret("imap.oauth2") == CLIENT_SECRET


# -- [smtp] auth = "oauth2" borrows from [imap] -------------------------------------------

SMTP_OAUTH2 = (
    '[smtp]\nhost = "smtp.office365.com"\nport = 587\nsecurity = "starttls"\nauth = "oauth2"\n'
)


def test_smtp_oauth2_without_its_table_uses_imaps_table_and_mailbox(tmp_path: Path) -> None:
    text = imap("outlook.office365.com", "tls", 'auth = "oauth2"\n') + MICROSOFT + SMTP_OAUTH2
    config = load_config(write(tmp_path, text))
    assert config.imap is not None
    assert config.smtp.oauth2 == config.imap.oauth2 and config.smtp.oauth2 is not None
    assert config.smtp.username == "u@uni.ac.uk"
    assert config.smtp.credential_key == "imap.oauth2" and config.smtp.signs_in


def test_smtp_oauth2_keeps_its_own_username_and_table(tmp_path: Path) -> None:
    own = '[smtp.oauth2]\nprovider = "google"\nservice_account_file = "sa.json"\n'
    text = (
        imap("outlook.office365.com", "tls", 'auth = "oauth2"\n')
        + MICROSOFT
        + SMTP_OAUTH2
        + 'username = "sender@uni.ac.uk"\n'
        + own
    )
    config = load_config(write(tmp_path, text))
    assert config.smtp.username == "sender@uni.ac.uk"
    assert config.smtp.oauth2 is not None and config.smtp.oauth2.provider == "google"
    text = text.replace(own, "")  # own mailbox, imap's table
    config = load_config(write(tmp_path, text))
    assert config.smtp.username == "sender@uni.ac.uk"
    assert config.smtp.oauth2 is not None and config.smtp.oauth2.provider == "microsoft"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SMTP_OAUTH2, "[smtp.oauth2] or [imap.oauth2]"),
        (imap("imap.example", "tls", f'password = "{PASSWORD}"\n') + SMTP_OAUTH2, "[imap.oauth2]"),
        (
            SMTP_OAUTH2 + '[smtp.oauth2]\nprovider = "google"\nservice_account_file = "sa.json"\n',
            "smtp.username",
        ),
    ],
)
def test_smtp_oauth2_with_nothing_to_borrow_is_refused(
    tmp_path: Path, text: str, expected: str
) -> None:
    _path, error = load_error(tmp_path, text)
    assert 'smtp.auth = "oauth2"' in error and expected in error and PASSWORD not in error


# -- ca_file --------------------------------------------------------------------------------


def test_ca_files_are_resolved_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = imap("mail.uni.ac.uk", "tls", 'ca_file = "certs/ca.pem"\nauth = "oauth2"\n')
    text += MICROSOFT + 'ca_file = "/etc/ssl/token-ca.pem"\n'
    text += '[smtp]\nhost = "smtp.uni.ac.uk"\nsecurity = "tls"\nca_file = "~/ca.pem"\n'
    config = load_config(write(tmp_path, text))
    assert config.imap is not None and config.imap.oauth2 is not None
    assert config.imap.ca_file == tmp_path / "conf" / "certs" / "ca.pem"
    assert config.imap.oauth2.ca_file == Path("/etc/ssl/token-ca.pem")
    assert config.smtp.ca_file == tmp_path / "home" / "ca.pem"


def test_tls_context_trusts_the_ca_file_and_always_verifies(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "ca.pem").write_bytes(tls_files.ca_cert.read_bytes())
    config = load_config(
        write(tmp_path, imap("127.0.0.1", "tls", 'ca_file = "ca.pem"\npassword = "p"\n'))
    )
    assert config.imap is not None
    context = config.imap.tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    subjects = [ca["subject"] for ca in context.get_ca_certs()]
    assert subjects == [((("commonName", "report-intake test CA"),),)]  # ours, nothing else
    system = config.smtp.tls_context()  # no ca_file: the system's CAs, verified all the same
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("directory", "cannot read it"),
        (b"garbage, not a certificate\n", ""),
        (b"", ""),
        ("server key", ""),
    ],
)
def test_an_unusable_ca_file_is_a_config_error_naming_the_key(
    tmp_path: Path, tls_files: TlsFiles, content: bytes | str | None, expected: str
) -> None:
    ca = tmp_path / "conf" / "ca.pem"
    ca.parent.mkdir()
    if content == "directory":
        ca.mkdir()
    elif content == "server key":
        ca.write_bytes(tls_files.server_key.read_bytes())
    elif isinstance(content, bytes):
        ca.write_bytes(content)
    text = imap("mail.uni.ac.uk", "tls", 'ca_file = "ca.pem"\n')
    text += '[smtp]\nhost = "smtp.uni.ac.uk"\nsecurity = "starttls"\nca_file = "ca.pem"\n'
    config = load_config(write(tmp_path, text))  # loading does not read it; connecting does
    assert config.imap is not None
    for section, signin in (("imap", config.imap), ("smtp", config.smtp)):
        error = config_error(signin.tls_context)
        assert error.startswith(f"{section}.ca_file: {ca}: ") and expected in error
        assert "PRIVATE KEY" not in error and "\n" not in error


def test_a_ca_file_without_a_certificate_says_so(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("garbage\n")
    signin = ImapConfig(host="h.example", username="u", ca_file=ca)
    assert config_error(signin.tls_context) == f"imap.ca_file: {ca}: holds no PEM certificate"


# -- secrets stay out of reprs and errors ---------------------------------------------------


def test_no_secret_in_a_repr(tmp_path: Path) -> None:
    text = imap("mail.uni.ac.uk", "tls", 'auth = "oauth2"\n') + MICROSOFT + SMTP_OAUTH2
    text += f'[smtp.oauth2]\nprovider = "generic"\ntoken_url = "https://t.example"\nclient_id = "c"\nclient_secret = "{CLIENT_SECRET}"\n'
    text = text.replace("[smtp]\n", f'[smtp]\nusername = "s"\npassword = "{PASSWORD}"\n', 1)
    config = load_config(write(tmp_path, text))
    assert config.imap is not None and config.smtp.oauth2 is not None
    assert (
        config.smtp.secret() == PASSWORD
        and config.smtp.oauth2.secret("smtp.oauth2") == CLIENT_SECRET
    )
    for shown in (
        repr(config),
        str(config),
        repr(config.imap),
        repr(config.smtp),
        repr(config.smtp.oauth2),
    ):
        assert PASSWORD not in shown and CLIENT_SECRET not in shown


@pytest.mark.parametrize(
    "text",
    [
        imap("mail.uni.ac.uk", "none", f'password = "{PASSWORD}"\n'),
        imap("mail.uni.ac.uk", "tls", f'password = ["{PASSWORD}"]\n'),
        imap("mail.uni.ac.uk", "tls", f'password = "{PASSWORD}"\nport = "{PASSWORD}"\n'),
        oauth2_table(
            "imap", f'provider = "generic"\nclient_id = "c"\nclient_secret = "{CLIENT_SECRET}"\n'
        ),
        oauth2_table(
            "imap",
            f'provider = "generic"\nclient_id = "c"\nclient_secret = {{ v = "{CLIENT_SECRET}" }}\ntoken_url = "https://t"\n',
        ),
        oauth2_table(
            "imap",
            f'provider = "microsoft"\ntenant = "t"\nclient_id = "c"\nclient_secret = "{CLIENT_SECRET}"\nsecret = "{CLIENT_SECRET}"\n',
        ),
    ],
)
def test_no_secret_in_an_error(tmp_path: Path, text: str) -> None:
    _path, error = load_error(tmp_path, text)
    assert PASSWORD not in error and CLIENT_SECRET not in error


def test_an_unreadable_client_secret_names_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "conf" / "client-secret"
    text = oauth2_table(
        "imap",
        'provider = "generic"\ntoken_url = "https://t"\nclient_id = "c"\nclient_secret_file = "client-secret"\n',
    )
    config = load_config(write(tmp_path, text))
    assert config.imap is not None and config.imap.oauth2 is not None
    oauth2 = config.imap.oauth2
    assert config_error(lambda: oauth2.secret("imap.oauth2")) == (
        f"imap.oauth2.client_secret_file: {secret_file}: no such file"
    )
    secret_file.write_text("  \n")
    assert config_error(lambda: oauth2.secret("imap.oauth2")) == (
        "imap.oauth2.client_secret_file: it is empty"
    )
    env = oauth2.model_copy(update={"client_secret_file": None, "client_secret_env": "INTAKE_CS"})
    monkeypatch.delenv("INTAKE_CS", raising=False)
    assert config_error(lambda: env.secret("imap.oauth2")) == (
        "imap.oauth2.client_secret_env: environment variable INTAKE_CS is not set"
    )
    monkeypatch.setenv("INTAKE_CS", f" {CLIENT_SECRET}\n")
    assert env.secret("imap.oauth2") == CLIENT_SECRET
