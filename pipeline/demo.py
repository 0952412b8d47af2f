"""The demo: a throwaway deployment in a folder, run once, with no outside server.

In: a folder name. Out: that folder holding a config, demo keys, the outbox passphrase (a file
beside the data folder, mode 0600, as in production), a Maildir of sample reports and the
SQLite database after one run; on the terminal, what the daemon did with each sample and
what an SMTP sink (started here, on loopback) received. The run holds the instance lock, as
`intake run` does; a folder a daemon still runs on is neither rebuilt nor run (one line says so).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path

import gnupg
import yaml
from sqlmodel import Session, select

from pipeline.app import App, StartupError
from pipeline.config import ConfigError, load_config
from pipeline.daemon import Exit, instance_lock, run_once
from pipeline.models import OutboxRow, ReportRow

MARKER = ".intake-demo"
LOCK_ADVICE = "stop it first, or choose another --demo-dir"
REPO = Path(__file__).resolve().parent.parent
KEYS = {
    "records": "records@example.ac.uk",
    "advice-centre": "advice@su.example.ac.uk",
    "student-services": "support@example.ac.uk",
}
SAMPLES = {
    "1-named": (
        "From: Sam Student <sam.student@example.ac.uk>\nTo: report@example.ac.uk\n"
        "Subject: Something happened at the society social\nMessage-ID: <demo-1@example.ac.uk>\n\n"
        "At the social on Friday someone groped me at the bar and would not leave me alone.\n"
    ),
    "2-anonymous": (
        "From: A Person <a.person@example.org>\nTo: anonymous@example.ac.uk\n"
        "Subject: Racist abuse in halls\nMessage-ID: <demo-2@example.org>\n\n"
        "People on my corridor keep making racist comments about me and my friends.\n"
    ),
    "3-urgent": (
        "From: Alex <alex@example.ac.uk>\nTo: report@example.ac.uk\n"
        "Subject: [anonymous] please help\nMessage-ID: <demo-3@example.ac.uk>\n\n"
        "My ex keeps turning up at my flat and I feel in danger.\n"
    ),
    "4-broken": "\x00\x01 this is not an email at all",
}


@dataclass
class Sink:
    """An SMTP server on loopback that keeps what it receives in memory."""

    received: list[tuple[list[str], bytes]] = field(default_factory=list)

    async def handle_DATA(self, _server: object, _session: object, envelope: object) -> str:
        self.received.append((list(envelope.rcpt_tos), bytes(envelope.content)))  # type: ignore[attr-defined]
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prepare_folder(folder: Path) -> None:
    if folder.exists():
        if not (folder / MARKER).exists():
            raise SystemExit(f"{folder} exists and is not a demo folder; choose another --demo-dir")
        _check_no_daemon(folder / "intake.toml")
        for home in (folder / "keyholders", folder / "var" / "gnupg"):
            _kill_agent(home)
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700, parents=True)
    (folder / MARKER).touch()


def _check_no_daemon(config_file: Path) -> None:
    """StartupError when a daemon runs on the demo deployment at `config_file` (it holds the
    instance lock); a config that does not load (a demo cut short) has no daemon."""
    try:
        config = load_config(config_file)
    except ConfigError:
        return
    with instance_lock(config, LOCK_ADVICE):
        pass


def _kill_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def _make_keys(folder: Path) -> tuple[gnupg.GPG, dict[str, str]]:
    """Demo key holders' keyring (secret keys: this stands for the services' own machines)."""
    home = folder / "keyholders"
    home.mkdir(mode=0o700)
    gpg = gnupg.GPG(gnupghome=str(home))
    keys_dir = folder / "rules" / "keys"
    keys_dir.mkdir(parents=True)
    fingerprints = {}
    for name, email in KEYS.items():
        spec = gpg.gen_key_input(
            key_type="EDDSA",
            key_curve="ed25519",
            subkey_type="ECDH",
            subkey_curve="cv25519",
            name_real=f"Demo {name}",
            name_email=email,
            no_protection=True,
        )
        fpr = str(gpg.gen_key(spec).fingerprint)
        (keys_dir / f"{name}.asc").write_text(gpg.export_keys(fpr))
        fingerprints[name] = fpr
    return gpg, fingerprints


SERVICE_NAMES = {
    "advice-centre": "The Advice and Support Centre (Students' Union)",
    "student-services": "Student Services Wellbeing Team",
}


def write_rules(rules: Path, emails: dict[str, str], fingerprints: dict[str, str]) -> None:
    """The shipped routing rules plus a services.yaml for the two example services."""
    shutil.copy(REPO / "rules" / "routing.yaml", rules / "routing.yaml")
    services = [
        {"id": sid, "name": name, "email": emails[sid], "fingerprint": fingerprints[sid]}
        for sid, name in SERVICE_NAMES.items()
    ]
    text = yaml.safe_dump({"services": services}, sort_keys=False, allow_unicode=True)
    (rules / "services.yaml").write_text(text)


def _write_passphrase(folder: Path) -> Path:
    """A random outbox passphrase in a file only its owner reads, outside the data folder."""
    path = folder / "outbox-passphrase"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(24) + "\n")
    return path


def _write_config(folder: Path, fingerprint: str, smtp_port: int) -> Path:
    config = folder / "intake.toml"
    passphrase = _write_passphrase(folder)
    config.write_text(
        f"""data_dir = "var"
[maildir]
path = "maildir"
[smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "Report and Support <report@example.ac.uk>"
[intake]
anonymous_addresses = ["anonymous@example.ac.uk"]
intake_addresses = ["report@example.ac.uk"]
[gpg]
records_keys = ["{fingerprint}"]
keys_dir = "rules/keys"
outbox_passphrase_file = "{passphrase.name}"
[rules]
dir = "rules"
[templates]
dir = "{REPO / "templates"}"
"""
    )
    return config


def _drop_samples(folder: Path) -> None:
    new = folder / "maildir" / "new"
    for sub in ("new", "cur", "tmp"):
        (folder / "maildir" / sub).mkdir(parents=True, exist_ok=True)
    for name, text in SAMPLES.items():
        (new / f"{name}.eml").write_bytes(text.encode())


def _print_results(app: App, sink: Sink, keyholders: gnupg.GPG) -> None:
    with Session(app.engine) as session:
        print("\nReports (the database holds metadata only):")
        for report in session.exec(select(ReportRow)):
            print(
                f"  {report.reference}  {report.state:<11} category={report.category} "
                f"anonymous={report.anonymous} urgent={report.urgent} {report.reason or ''}"
            )
        sent = len(session.exec(select(OutboxRow)).all())
    print(f"\nMail sent through the SMTP sink ({len(sink.received)} of {sent} queued):")
    for recipients, data in sink.received:
        msg = message_from_bytes(data, policy=policy.default)
        kind = msg.get_content_type()
        print(f"  to {', '.join(recipients)}: {msg['Subject']} [{kind}]")
        if kind == "multipart/encrypted":
            inner = keyholders.decrypt(msg.get_payload()[1].get_payload())  # type: ignore[index,union-attr]
            first = str(inner).split("\n\n", 1)[-1].strip().splitlines()[0]
            print(f"      decrypted by the service's key: {first}")


def run_demo(folder: Path) -> int:
    """Build the demo deployment in `folder`, run the daemon once, print what happened; the
    run's exit status, less the quarantine bit the sample that is no email sets by design.
    SystemExit with one line when it cannot (a daemon runs on the folder)."""
    try:
        return _run_demo(folder.resolve())
    except StartupError as exc:
        raise SystemExit(str(exc)) from None


def _run_demo(folder: Path) -> int:
    try:  # a production install has no demo: its SMTP sink is the [demo] extra
        from aiosmtpd.controller import Controller
    except ImportError:
        raise SystemExit("the demo needs aiosmtpd: pip install 'report-intake[demo]'") from None
    _prepare_folder(folder)
    keyholders, fingerprints = _make_keys(folder)
    write_rules(folder / "rules", KEYS, fingerprints)
    _drop_samples(folder)
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=_free_port())
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller.start()
    try:
        config = load_config(_write_config(folder, fingerprints["records"], controller.port))
        print(f"Demo deployment in {folder}: {len(SAMPLES)} sample reports in its Maildir.")
        with instance_lock(config, LOCK_ADVICE):
            app = App.open(config)
            try:
                status = run_once(app)
                _print_results(app, sink, keyholders)
            finally:
                app.close()
    finally:
        controller.stop()
        _kill_agent(folder / "keyholders")
    print(f"\nSee the state: intake status --config {folder / 'intake.toml'}")
    if status & Exit.REPORTS:  # the sample that is no email is quarantined, as it should be
        print(f"(`run --once` exits {status} here: 8 says a report was quarantined, by design)")
    return status & ~Exit.REPORTS
