"""`intake doctor` on real parts (Dovecot, the SMTP sink, gpg, SQLite): a healthy deployment
passes with exit 0 and sends no mail; each broken part fails its own line, naming the config
key, and the other checks still run; `--json` parses; `--send-test` delivers a referral the
service's key decrypts, on the audit log. The commands run in the test process
(`pipeline.cli.main`), as `intake` would run them."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine
from sqlmodel import Session, select

from pipeline.app import App
from pipeline.doctor.mail import clock_check, greeting_time
from pipeline.intake.imap import connect
from pipeline.models import AuditRow
from pipeline.store import BASELINE, MIGRATIONS
from tests.integration.conftest import OUTBOX_PASSPHRASE, Deployment, Run, email
from tests.servers.dovecot import Dovecot
from tests.servers.net import free_port
from tests.servers.smtp import SmtpSink
from tests.servers.tls import TlsFiles, server_context
from tests.servers.tokens import Client, TokenServer, token_server

__all__ = ["token_server"]  # a fixture used here
APP_SECRET = "S3cret-of-the-doctor-app~5e1b"
NOBODY = 65534  # Debian's nobody

Intake = Callable[..., Run]


def lines(run: Run) -> dict[str, str]:
    """Check name -> its whole line, from doctor's output (the summary line left out)."""
    found = {}
    for line in run.stdout.splitlines()[:-1]:
        rest = line.partition("  ")[2]
        name = rest.split(": ", 1)[0]
        found[name] = line
    return found


def give_to_nobody(folder: Path) -> None:
    """Make `folder` and all in it nobody's, as the daemon's user's own."""
    for path in (folder, *folder.rglob("*")):
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


def statuses(run: Run) -> dict[str, str]:
    return {name: line.split()[0] for name, line in lines(run).items()}


def passphrase_file(deployment: Deployment, mode: int = 0o600) -> Path:
    """Give the outbox passphrase in a file outside data_dir, as in production."""
    path = deployment.root / "outbox-passphrase"
    path.write_text(OUTBOX_PASSPHRASE + "\n")
    path.chmod(mode)
    deployment.passphrase_line = f'outbox_passphrase_file = "{path}"'
    deployment.write()
    return path


def smtp_sign_in(deployment: Deployment, username: str = "relay-user") -> None:
    """[smtp] signs in (any password is good to the sink unless it refuses AUTH)."""
    config = deployment.config_path
    text = config.read_text().replace(
        'from = "Report', f'username = "{username}"\npassword = "relay-secret"\nfrom = "Report', 1
    )
    config.write_text(text)
    config.chmod(0o600)  # it holds a password now


def use_tls(deployment: Deployment, ca_file: Path, extra: str = "") -> None:
    """Write the config with [imap] on imaps and [smtp] on STARTTLS, trusting `ca_file`."""
    deployment.write(extra)
    imap, smtp = deployment.imap, deployment.smtp
    text = deployment.config_path.read_text()
    tls = f'security = "tls"\nca_file = "{ca_file}"'
    text = text.replace(
        f'port = {imap.port}\nsecurity = "none"', f"port = {imap.imaps_port}\n{tls}"
    )
    starttls = f'security = "starttls"\nca_file = "{ca_file}"'
    deployment.config_path.write_text(
        text.replace(f"port = {smtp.port}\n", f"port = {smtp.port}\n{starttls}\n")
    )


@pytest.fixture
def healthy(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """A deployment whose daemon has started once (database, outbox key), with its outbox
    passphrase in a private file and a message in INBOX for the clock check."""
    passphrase_file(deployment)
    monkeypatch.setenv("TEST_IMAP_PASSWORD", deployment.imap.password)
    App.open(deployment.config()).close()
    deployment.imap.append(email("Something happened."))
    return deployment


def test_a_healthy_deployment_passes_and_sends_no_mail(healthy: Deployment, intake: Intake) -> None:
    smtp_sign_in(healthy)

    run = intake("doctor")

    found = statuses(run)
    services = [f"key of {name}" for name in healthy.keys.services]
    expected = ["config", "secret imap.password_env", "secret smtp.password"]
    expected += ["secret gpg.outbox_passphrase_file", "data_dir", "database"]
    expected += [f"records key {healthy.keys.records_fpr}"]
    expected += ["outbox key", *services, "rules", "imap", "imap folder INBOX"]
    expected += ["imap capabilities", "clock", "smtp"]
    assert run.returncode == 0, run.stdout
    assert [name for name in expected if found.get(name) != "PASS"] == [], run.stdout
    assert [name for name, status in found.items() if status != "PASS"] in ([], ["disk space"])
    assert run.stdout.splitlines()[-1].startswith("doctor: ready (")
    assert "relay-user (password)" in lines(run)["smtp"]
    assert "no mail sent" in lines(run)["smtp"]
    assert healthy.smtp.logins == ["relay-user"]  # signed in: EHLO and AUTH happened
    assert healthy.smtp.messages == []
    assert "(timed by a message in INBOX)" in lines(run)["clock"]
    for secret in (OUTBOX_PASSPHRASE, "relay-secret"):
        assert secret not in run.stdout + run.stderr


def test_json_is_one_object_for_monitoring(healthy: Deployment, intake: Intake) -> None:
    healthy.smtp.stop()

    run = intake("doctor", "--json")

    document = json.loads(run.stdout)
    by_name = {check["name"]: check for check in document["checks"]}
    assert run.returncode == 1
    assert document["ok"] is False
    assert document["summary"]["FAIL"] == 1
    assert set(document["checks"][0]) == {"name", "status", "detail", "fix"}
    assert by_name["smtp"]["status"] == "FAIL"
    assert "smtp.host" in by_name["smtp"]["fix"]
    assert by_name["imap"]["status"] == "PASS"


def test_a_deployment_never_started_has_no_database(deployment: Deployment, intake: Intake) -> None:
    passphrase_file(deployment)
    data_dir = deployment.data_dir

    run = intake("doctor")
    data_dir.mkdir(mode=0o700)
    made = intake("doctor")

    found = lines(run)
    assert run.returncode == 1
    assert found["database"] == (  # neither the daemon nor db upgrade makes another's folder
        f"FAIL  database: sqlite:///{data_dir}/intake.db: the folder {data_dir} does not exist "
        f"-> create it for the daemon's user (install -d -m 700 -o USER {data_dir}), or correct "
        "data_dir"
    )
    assert found["outbox key"].startswith("WARN  outbox key: NOT USABLE: none yet")
    assert found["data_dir"].startswith("WARN  data_dir:")
    assert statuses(run)["imap"] == "PASS"  # the other checks still ran
    assert lines(made)["database"] == (
        f"FAIL  database: sqlite:///{data_dir}/intake.db: no database yet -> start the daemon "
        "(it creates it), or run intake db upgrade as the daemon's user"
    )
    assert list(data_dir.iterdir()) == []  # doctor made nothing


def test_a_database_url_in_a_missing_folder_says_to_create_it(
    deployment: Deployment, intake: Intake
) -> None:
    passphrase_file(deployment)
    folder = deployment.root / "db"
    deployment.database_url = f"sqlite:///{folder}/intake.db"
    deployment.write()

    run = intake("doctor")

    assert lines(run)["database"] == (
        f"FAIL  database: sqlite:///{folder}/intake.db: the folder {folder} does not exist -> "
        f"create it for the daemon's user (install -d -m 700 -o USER {folder}), or correct "
        "database.url"
    )
    assert not folder.exists()


def test_an_outbox_passphrase_systemd_passes_is_checked_inside_the_unit_only(
    healthy: Deployment, intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = healthy.root / "credentials"
    credentials.mkdir(mode=0o700)
    (healthy.root / "outbox-passphrase").rename(credentials / "outbox-passphrase")
    healthy.passphrase_line = (
        'outbox_passphrase_file = "${CREDENTIALS_DIRECTORY}/outbox-passphrase"'
    )
    healthy.write()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)

    shell = lines(intake("doctor"))["secret gpg.outbox_passphrase_file"]
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    unit = intake("doctor")

    assert shell.startswith(
        "SKIP  secret gpg.outbox_passphrase_file: gpg.outbox_passphrase_file: "
        "$CREDENTIALS_DIRECTORY is not set; systemd sets it for a unit with "
        "LoadCredential=outbox-passphrase:/path/to/file -> to check it, run doctor as the daemon "
        "runs, with the unit's credentials: systemd-run --pipe --wait -p User=USER -p "
        "LoadCredential=NAME:FILE intake doctor"
    ), shell
    assert lines(unit)["secret gpg.outbox_passphrase_file"] == (
        "PASS  secret gpg.outbox_passphrase_file: "
        f"{credentials}/outbox-passphrase: readable by its owner only"
    )
    assert unit.returncode == 0, unit.stdout


def test_the_maildir_and_the_metrics_folder_are_checked(
    healthy: Deployment, intake: Intake
) -> None:
    maildir, metrics = healthy.root / "maildir", healthy.root / "metrics"
    healthy.write(f'[maildir]\npath = "{maildir}"\n[metrics]\ntextfile = "{metrics}/intake.prom"\n')

    missing = lines(intake("doctor"))
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.host").write_bytes(email("Something happened."))
    metrics.mkdir()
    there = intake("doctor")

    assert missing["maildir"] == (
        f"FAIL  maildir: {maildir}: no such folder -> point maildir.path at the Maildir the MTA "
        "delivers to (cur, new and tmp in it)"
    )
    assert missing["metrics"] == (
        f"FAIL  metrics: {metrics}: no such folder -> create it (node_exporter's "
        "--collector.textfile.directory), or correct metrics.textfile"
    )
    assert lines(there)["maildir"] == f"PASS  maildir: {maildir}: a Maildir, 1 message(s) waiting"
    assert lines(there)["metrics"].startswith(f"PASS  metrics: {metrics}/intake.prom: the daemon's")
    assert there.returncode == 0, there.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: data_dir is given to another user")
def test_folders_the_daemons_user_cannot_write_fail_when_doctor_runs_as_root(
    healthy: Deployment, intake: Intake
) -> None:
    maildir, metrics = healthy.root / "maildir", healthy.root / "metrics"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    metrics.mkdir(mode=0o755)  # root's: the daemon's user may not write in it
    healthy.write(f'[maildir]\npath = "{maildir}"\n[metrics]\ntextfile = "{metrics}/intake.prom"\n')
    give_to_nobody(healthy.data_dir)

    run = lines(intake("doctor"))

    assert run["metrics"] == (
        f"FAIL  metrics: {metrics}: the daemon's user nobody cannot write in it -> let nobody "
        f"write in {metrics} (and name it in the unit's ReadWritePaths=), or correct "
        "metrics.textfile"
    )
    assert run["maildir"].startswith(
        f"FAIL  maildir: {maildir}: the daemon's user nobody cannot read and remove messages"
    )
    os.chown(metrics, NOBODY, -1)
    assert lines(intake("doctor"))["metrics"].startswith("PASS  metrics: ")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: data_dir is given to another user")
def test_a_file_root_left_in_the_daemons_data_dir_fails(
    healthy: Deployment, intake: Intake
) -> None:
    give_to_nobody(healthy.data_dir)
    (healthy.data_dir / "intake.db.migrate-lock").touch()  # as root's `intake status` once did

    run = intake("doctor")

    assert lines(run)["data_dir"] == (
        f"FAIL  data_dir: 1 file(s) in {healthy.data_dir} belong to another user than its owner "
        "nobody (intake.db.migrate-lock): the daemon may fail on them -> chown -R nobody: "
        f"{healthy.data_dir}"
    )


def test_a_database_behind_the_code_is_named_with_its_revision(
    healthy: Deployment, intake: Intake
) -> None:
    database = healthy.data_dir / "intake.db"
    database.unlink()
    engine = create_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        settings = AlembicConfig()
        settings.set_main_option("script_location", str(MIGRATIONS))
        settings.attributes["connection"] = connection
        command.upgrade(settings, BASELINE)
    engine.dispose()

    run = intake("doctor")

    line = lines(run)["database"]
    assert run.returncode == 1
    assert line.startswith("FAIL  database:")
    assert f"schema at revision {BASELINE}, this version's newest is" in line
    assert "-> run intake db upgrade" in line


def test_secret_files_that_others_can_read_or_that_are_missing_fail(
    healthy: Deployment, intake: Intake
) -> None:
    passphrase = passphrase_file(healthy, mode=0o644)
    config = healthy.config_path
    missing = healthy.root / "imap-password"
    config.write_text(
        config.read_text().replace(
            'password_env = "TEST_IMAP_PASSWORD"', f'password_file = "{missing}"'
        )
    )

    run = intake("doctor")

    found = lines(run)
    assert run.returncode == 1
    assert found["secret gpg.outbox_passphrase_file"] == (
        f"FAIL  secret gpg.outbox_passphrase_file: gpg.outbox_passphrase_file: {passphrase} is "
        f"readable by group or others (mode 644); run: chmod 600 {passphrase} -> correct "
        "gpg.outbox_passphrase_file"
    )
    assert found["secret imap.password_file"] == (
        f"FAIL  secret imap.password_file: {missing}: no such file -> create it (mode 600) or "
        "correct imap.password_file"
    )
    assert statuses(run)["imap"] == "FAIL"
    assert "imap.password_file" in found["imap"]
    assert statuses(run)["imap folders"] == "SKIP"
    assert OUTBOX_PASSPHRASE not in run.stdout


def test_imap_and_smtp_down(healthy: Deployment, intake: Intake) -> None:
    config = healthy.config_path
    config.write_text(
        config.read_text().replace(f"port = {healthy.imap.port}", f"port = {free_port()}")
    )
    healthy.smtp.stop()

    run = intake("doctor")

    found = lines(run)
    assert run.returncode == 1
    assert found["imap"].startswith("FAIL  imap: imap (127.0.0.1:")
    assert "cannot connect (Connection refused) -> check imap.host and imap.port" in found["imap"]
    assert statuses(run)["imap folders"] == "SKIP"
    assert statuses(run)["clock"] == "SKIP"
    assert found["smtp"].startswith(f"FAIL  smtp: 127.0.0.1:{healthy.smtp.port}: SMTP connection")
    assert "-> check smtp.host, smtp.port and smtp.security" in found["smtp"]
    assert statuses(run)["rules"] == "PASS"


def test_a_wrong_imap_password_and_a_refused_smtp_sign_in(
    healthy: Deployment, intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp_sign_in(healthy)
    healthy.smtp.refuse("535 5.7.8 Authentication credentials invalid", at="AUTH")
    monkeypatch.setenv("TEST_IMAP_PASSWORD", "not-the-password")

    run = intake("doctor")

    found = lines(run)
    assert run.returncode == 1
    assert found["imap"].startswith(f"FAIL  imap: imap (127.0.0.1:{healthy.imap.port}): login")
    assert found["imap"].endswith("-> check imap.username / imap.password_env")
    assert found["smtp"] == (
        f"FAIL  smtp: 127.0.0.1:{healthy.smtp.port}: SMTP 535 5.7.8 at AUTH -> check "
        "smtp.username and smtp.password"
    )
    assert "not-the-password" not in run.stdout + run.stderr
    assert healthy.smtp.messages == []


def test_missing_folders_a_rules_error_and_a_missing_form_folder(
    healthy: Deployment, intake: Intake
) -> None:
    healthy.write(
        extra='\n[[forms]]\nid = "report-form"\npath = "exports/*.csv"\n'
        '[forms.columns]\ndescription = "What happened?"\n',
        imap_extra='anonymous_folders = ["Anonymous"]\nprocessed_folder = "Kept"\n',
    )
    services = healthy.rules_dir / "services.yaml"
    services.write_text(services.read_text().replace("email:", "e-mail:", 1))

    run = intake("doctor")

    found = lines(run)
    assert run.returncode == 1
    assert found["imap folder Anonymous"] == (
        'FAIL  imap folder Anonymous: no folder "Anonymous" in the mailbox of intake '
        "(imap.anonymous_folders) -> create it, or correct imap.anonymous_folders"
    )
    assert statuses(run)["imap folder INBOX"] == "PASS"
    assert found["imap folder Kept"].startswith('WARN  imap folder Kept: no folder "Kept" yet')
    assert found["rules"].startswith(f"FAIL  rules: {services}:")
    assert f"-> intake check-rules --config {healthy.config_path} lists them" in found["rules"]
    assert found["form report-form"] == (
        f"FAIL  form report-form: forms.path: {healthy.root / 'exports'}: no such folder -> "
        "create the folder the exports are saved to, or correct forms.path"
    )
    assert statuses(run)["service keys"] == "SKIP"


def test_an_expired_service_key_fails_and_one_expiring_soon_warns(
    healthy: Deployment, intake: Intake
) -> None:
    keys_dir = healthy.own_keys()
    expired, armor = healthy.keys.make_key("old", "old@example.ac.uk", dt.date(2024, 1, 1))
    (keys_dir / "advice-centre.asc").write_text(armor)
    soon, armor = healthy.keys.make_key("soon", "soon@example.ac.uk", "5d")
    (keys_dir / "student-services.asc").write_text(armor)
    services = healthy.rules_dir / "services.yaml"
    text = services.read_text()
    text = text.replace(healthy.keys.services["advice-centre"], expired)
    services.write_text(text.replace(healthy.keys.services["student-services"], soon))

    run = intake("doctor")

    found = lines(run)
    assert run.returncode == 1
    assert found["key of advice-centre"].startswith(
        f"FAIL  key of advice-centre: {expired} old <old@example.ac.uk>: NOT USABLE: the key "
        "has expired -> ask the service for its current key and `intake keys import FILE` it"
    )
    assert found["key of student-services"].startswith(
        f"WARN  key of student-services: {soon} soon <soon@example.ac.uk>: usable, encrypts until"
    )
    assert "(alerts.key_expiry_days = 30)" in found["key of student-services"]
    assert statuses(run)["rules"] == "PASS"  # the rules are fine: the key lines say it


def test_the_clock_is_compared_with_the_servers(healthy: Deployment) -> None:
    os.environ["TEST_IMAP_PASSWORD"] = healthy.imap.password
    imap = healthy.config().imap
    assert imap is not None
    client = connect(imap)
    try:
        started = time.time()
        same = clock_check(client, ["INBOX"], started)
        ahead = clock_check(client, ["INBOX"], started, now=lambda: time.time() + 600)
        nothing = clock_check(client, ["Processed"], started)
    finally:
        client.logout()
        del os.environ["TEST_IMAP_PASSWORD"]

    assert same.status == "PASS", same
    assert ahead.status == "FAIL"
    seconds = int(ahead.detail.split("the server's clock is ")[1].split(" s ")[0])
    assert 595 <= seconds <= 605, ahead.detail
    assert "s behind this machine's (timed by a message in INBOX)" in ahead.detail
    assert "timedatectl" in ahead.fix
    assert nothing.status == "SKIP"
    assert "no message in the polled folders to time" in nothing.detail


def test_send_test_delivers_a_referral_the_service_decrypts(
    healthy: Deployment, intake: Intake
) -> None:
    run = intake("doctor", "--send-test", "advice-centre")

    assert run.returncode == 0, run.stdout
    assert run.stdout.startswith("PASS  send-test advice-centre: sent to advice@su.example.ac.uk")
    [received] = healthy.smtp.messages
    assert received.rcpt_tos == ["advice@su.example.ac.uk"]
    assert received.message.get_content_type() == "multipart/encrypted"
    assert received.message["X-Report-Intake"] == "test-referral"
    inner = healthy.decrypted(received)
    assert inner is not None
    assert b"This is a test referral from report-intake. It holds no report." in inner
    encrypted = received.message.get_payload()[1].get_payload(decode=True)  # type: ignore[index,union-attr]
    subkey = healthy.keys.encryption_subkeys(healthy.keys.services["advice-centre"])[-1]
    assert healthy.keys.recipients(encrypted) == [subkey[-16:]]
    with Session(create_engine(f"sqlite:///{healthy.data_dir / 'intake.db'}")) as session:
        audit = [(r.action, r.detail) for r in session.exec(select(AuditRow))]
    assert ("command", "intake doctor --send-test advice-centre") in audit
    assert any(a == "test-referral" and d.startswith("advice-centre: sent") for a, d in audit)


def test_send_test_to_an_unknown_service_sends_nothing(healthy: Deployment, intake: Intake) -> None:
    run = intake("doctor", "--send-test", "nobody")

    assert run.returncode == 1
    assert "no service 'nobody' in services.yaml (known: advice-centre, student-services)" in (
        run.stdout
    )
    assert healthy.smtp.messages == []


def test_tls_is_named_and_an_unknown_ca_fails_naming_ca_file(
    healthy: Deployment,
    intake: Intake,
    tls_files: TlsFiles,
    smtp_sink_factory: Callable[..., SmtpSink],
) -> None:
    with Dovecot(tls=tls_files) as imap:
        healthy.imap = imap
        healthy.smtp = smtp_sink_factory(tls_context=server_context(tls_files))
        use_tls(healthy, tls_files.ca_cert)
        trusted = intake("doctor")
        use_tls(healthy, tls_files.other_ca_cert)
        distrusted = intake("doctor")

    assert trusted.returncode == 0, trusted.stdout
    assert lines(trusted)["imap"].startswith(
        f"PASS  imap: imap (127.0.0.1:{imap.imaps_port}): TLSv1.3 (tls), certificate verified"
    )
    assert lines(trusted)["smtp"].startswith(
        f"PASS  smtp: 127.0.0.1:{healthy.smtp.port}: TLSv1.3 (starttls), certificate verified"
    )
    assert distrusted.returncode == 1
    assert "certificate" in lines(distrusted)["imap"]
    assert "imap.ca_file" in lines(distrusted)["imap"]
    assert "certificate" in lines(distrusted)["smtp"]
    assert "smtp.ca_file" in lines(distrusted)["smtp"]


def test_a_server_that_never_answers_fails_within_its_timeout(
    healthy: Deployment, intake: Intake
) -> None:
    with socket.create_server((healthy.imap.host, 0)) as silent:  # accepts, never greets
        port = silent.getsockname()[1]
        text = healthy.config_path.read_text()
        text = text.replace(f"port = {healthy.imap.port}", f"port = {port}")
        healthy.config_path.write_text(
            text.replace("timeout_seconds = 10", "timeout_seconds = 1", 1)
        )
        started = time.monotonic()
        run = intake("doctor")
        took = time.monotonic() - started

    assert run.returncode == 1
    assert lines(run)["imap"] == (
        f"FAIL  imap: imap (127.0.0.1:{port}): no answer within 1 s -> check imap.host, "
        "imap.port and imap.timeout_seconds"
    )
    assert statuses(run)["smtp"] == "PASS"  # the checks after it still ran
    assert took < 8


def test_missing_capabilities_warn_and_exit_0(
    healthy: Deployment, intake: Intake, dovecot_factory: Callable[..., Dovecot]
) -> None:
    healthy.imap = dovecot_factory(capabilities_without={"UIDPLUS", "IDLE"})
    healthy.write()

    run = intake("doctor")

    line = lines(run)["imap capabilities"]
    assert run.returncode == 0, run.stdout
    assert line.startswith("WARN  imap capabilities: no UIDPLUS: nothing can be expunged safely")
    assert "; no IDLE: new mail waits for the next poll (schedule.poll_seconds)" in line
    assert line.endswith("-> set imap.idle = false, and keep schedule.poll_seconds short")
    assert "1 warning(s)" in run.stdout.splitlines()[-1]


def test_oauth2_sign_in_is_checked_as_the_daemon_signs_in(
    healthy: Deployment,
    intake: Intake,
    tls_files: TlsFiles,
    token_server: TokenServer,
    smtp_sink_factory: Callable[..., SmtpSink],
) -> None:
    secret = healthy.root / "client-secret"
    secret.write_text(f"{APP_SECRET}\n")
    secret.chmod(0o600)
    token_server.add_client(Client("doctor-app", "intake", secret=APP_SECRET))
    oauth2 = (
        f'\n[imap.oauth2]\nprovider = "generic"\nclient_id = "doctor-app"\n'
        f'client_secret_file = "{secret}"\ntoken_url = "{token_server.token_url}"\n'
        f'ca_file = "{tls_files.ca_cert}"\n'
    )
    introspection = token_server.introspection_url
    with Dovecot(tls=tls_files, oauth2_introspection_url=introspection) as imap:
        healthy.imap = imap
        check = token_server.check
        healthy.smtp = smtp_sink_factory(tls_context=server_context(tls_files), xoauth2_check=check)
        use_tls(healthy, tls_files.ca_cert, extra=oauth2)
        text = healthy.config_path.read_text()
        text = text.replace('password_env = "TEST_IMAP_PASSWORD"\n', 'auth = "oauth2"\n')
        healthy.config_path.write_text(
            text.replace('security = "starttls"', 'security = "starttls"\nauth = "oauth2"')
        )
        run = intake("doctor")

    found = lines(run)
    assert run.returncode == 0, run.stdout
    assert found["secret imap.oauth2.client_secret_file"].startswith(
        f"PASS  secret imap.oauth2.client_secret_file: {secret}: readable by its owner only"
    )
    assert "secret imap.password_env" not in found
    assert "signed in as intake (oauth2)" in found["imap"]
    assert "signed in as intake (oauth2)" in found["smtp"]
    assert healthy.smtp.messages == []
    assert APP_SECRET not in run.stdout + run.stderr


def test_a_time_in_the_greeting_is_read() -> None:
    greeting = (
        b"[CAPABILITY IMAP4rev1] imap.example.ac.uk IMAP4rev1 at Tue, 1 Dec 2026 10:00:05 +0100"
    )

    assert greeting_time(greeting) == dt.datetime(2026, 12, 1, 9, 0, 5, tzinfo=dt.UTC).timestamp()
    assert greeting_time(b"Dovecot (Debian) ready.") is None


def test_run_as_another_user_than_the_daemon_it_leaves_the_gpg_homedir_alone(
    healthy: Deployment, intake: Intake
) -> None:
    home = healthy.data_dir / "gnupg"
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    give_to_nobody(healthy.data_dir)
    before = sorted((path.name, path.stat().st_mtime_ns) for path in home.iterdir())

    run = intake("doctor")

    found = lines(run)
    assert run.returncode == 0, run.stdout
    assert found["data_dir"].startswith(f"WARN  data_dir: {healthy.data_dir} belongs to nobody")
    assert found["outbox key"] == (
        f"WARN  outbox key: NOT USABLE: not looked at: gpg.homedir belongs to nobody ({home}); "
        "run as that user -> run doctor as the daemon's user (sudo -u USER intake doctor ...)"
    )
    assert sorted((path.name, path.stat().st_mtime_ns) for path in home.iterdir()) == before
