"""`intake keys` lists the records, outbox and service keys, each with its state and the expiry
of its encryption subkey; `intake keys import` shows a key (its fingerprint last), then writes
it, public only, into keys_dir as `<FINGERPRINT>.asc`, and refuses a secret key, several keys, a
key that cannot encrypt, and (without --yes) an answer from something that is not a terminal.
A user id is shown escaped by `keys import`, `intake keys` and `intake doctor` (as it is in
--json); neither `intake keys` nor `intake doctor` leaves a gpg-agent on the daemon's homedir.
Real gpg keys; the commands run in the test process, the terminal test in a pseudo-terminal.
(A renewed key's import is in test_keys_dir, with the daemon that takes it in.)"""

from __future__ import annotations

import datetime as dt
import grp
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.app import App
from tests.integration.conftest import Deployment, Run
from tests.servers.gpg import KeySet

Intake = Callable[..., Run]
NOBODY = 65534  # Debian's nobody, standing for the daemon's user


@pytest.fixture
def keys_dir(deployment: Deployment) -> Path:
    """The deployment's own keys folder: imports must not reach the session's."""
    return deployment.own_keys()


def by_fingerprint(run: Run) -> dict[str, str]:
    return {line.split()[1]: line for line in run.stdout.splitlines() if len(line.split()) > 1}


def test_keys_lists_every_key_its_state_and_who_uses_it(
    deployment: Deployment, keys_dir: Path, intake: Intake
) -> None:
    expired, armor = deployment.keys.make_key("old", "old@example.ac.uk", dt.date(2024, 1, 1))
    (keys_dir / "advice-centre.asc").write_text(armor)
    ending, armor = deployment.keys.make_key("ending", "ending@example.ac.uk", "30d")
    (keys_dir / "student-services.asc").write_text(armor)
    services = deployment.rules_dir / "services.yaml"
    text = services.read_text().replace(deployment.keys.services["advice-centre"], expired)
    services.write_text(text.replace(deployment.keys.services["student-services"], ending))
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime("%Y-%m-%d")

    run = intake("keys")
    listed = intake("keys", "--json")

    lines = by_fingerprint(run)
    records = deployment.keys.records_fpr
    assert run.returncode == 0
    assert run.stdout.splitlines()[1].startswith("outbox   " + "-" * 40 + "  (no user id)  ")
    assert "NOT USABLE: none yet: the daemon makes it at its first start" in run.stdout
    assert lines[records] == (
        f"records  {records}  records <records@example.ac.uk>  usable, does not expire"
    )
    assert lines[expired] == (
        f"service  {expired}  old <old@example.ac.uk>  for advice-centre  NOT USABLE: the key "
        "has expired"
    )
    assert lines[ending].startswith(
        f"service  {ending}  ending <ending@example.ac.uk>  for student-services  usable, "
        f"encrypts until {until} (in "
    )
    keys = {key["fingerprint"]: key for key in json.loads(listed.stdout)["keys"]}
    assert keys[ending]["expires"] == until
    assert keys[ending]["used_by"] == ["student-services"]
    assert keys[ending]["encryption_subkey"] == deployment.keys.encryption_subkeys(ending)[0]
    assert keys[expired]["usable"] is False
    assert keys[expired]["problem"] == "the key has expired"
    roles = [key["role"] for key in json.loads(listed.stdout)["keys"]]
    assert roles == ["records", "outbox", "service", "service"]  # the old files were replaced


def test_the_outbox_key_is_listed_once_the_daemon_made_it(
    deployment: Deployment, intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", deployment.imap.password)
    App.open(deployment.config()).close()

    run = intake("keys", "--json")

    [outbox] = [key for key in json.loads(run.stdout)["keys"] if key["role"] == "outbox"]
    assert outbox["usable"] is True
    assert outbox["user_ids"] == [
        "report-intake outbox (passphrase) <outbox@report-intake.invalid>"
    ]
    assert len(outbox["fingerprint"]) == 40


def test_import_writes_the_public_key_named_by_its_fingerprint(
    deployment: Deployment, keys_dir: Path, intake: Intake
) -> None:
    fingerprint, armor = deployment.keys.make_key("new", "new@example.ac.uk")
    keyfile = deployment.root / "from-the-service.asc"
    keyfile.write_text(armor)

    run = intake("keys", "import", str(keyfile), "--yes")

    written = keys_dir / f"{fingerprint}.asc"
    assert run.returncode == 0, run.stderr
    assert "user id:            new <new@example.ac.uk>\n" in run.stdout
    assert f"file:               {fingerprint}.asc\n" in run.stdout
    assert f"no service pins it yet: add `fingerprint: {fingerprint}` to services.yaml" in (
        run.stdout
    )
    assert run.stdout.strip().endswith(
        f"fingerprint:        {fingerprint}\n"
        f"wrote {written}; the daemon takes it in at its next poll"
    )
    text = written.read_text()
    assert text.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE" not in text
    assert [entry.name for entry in keys_dir.iterdir() if entry.name.startswith(".")] == []
    listed = by_fingerprint(intake("keys"))
    assert listed[fingerprint].startswith(f"unused   {fingerprint}  new <new@example.ac.uk>")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: gives files to another user")
def test_import_keeps_the_owner_group_and_mode_the_daemon_reads_keys_through(
    deployment: Deployment, keys_dir: Path, intake: Intake
) -> None:
    """keys_dir is root's and the daemon's group's (0750, 0640), imports run as root under
    umask 077: a replaced file keeps its mode, owner and group; a new one gets 0644 and the
    folder's group (before: 0600 root:root, and the daemon refused the whole folder)."""
    daemon_group = grp.getgrnam("nogroup").gr_gid
    _, armor = deployment.keys.make_key("renewed", "renewed@example.ac.uk")
    held = keys_dir / "partner.asc"
    held.write_text(armor)
    (deployment.root / "renewed.asc").write_text(armor)
    os.chown(keys_dir, 0, daemon_group)
    keys_dir.chmod(0o750)
    os.chown(held, NOBODY, daemon_group)
    held.chmod(0o640)
    new, armor = deployment.keys.make_key("new", "new@example.ac.uk")
    (deployment.root / "new.asc").write_text(armor)

    umask = os.umask(0o077)
    try:
        runs = [
            intake("keys", "import", str(deployment.root / n), "--yes")
            for n in ("renewed.asc", "new.asc")
        ]
    finally:
        os.umask(umask)

    assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
    assert "replaces partner.asc" in runs[0].stdout
    replaced, written = held.stat(), (keys_dir / f"{new}.asc").stat()
    assert (replaced.st_uid, replaced.st_gid, stat.S_IMODE(replaced.st_mode)) == (
        NOBODY,
        daemon_group,
        0o640,
    )
    assert (written.st_uid, written.st_gid, stat.S_IMODE(written.st_mode)) == (
        0,
        daemon_group,
        0o644,
    )


def test_import_refuses_a_secret_key_several_keys_and_a_key_that_cannot_encrypt(
    deployment: Deployment, keys_dir: Path, intake: Intake
) -> None:
    keys = deployment.keys
    first, armor = keys.make_key("one", "one@example.ac.uk")
    _, other = keys.make_key("two", "two@example.ac.uk")
    sign_only, sign_only_armor = keys.make_key_with_subkeys("sign", "sign@example.ac.uk", [])
    files = {
        "secret.asc": keys.gpg.export_keys(first, secret=True, expect_passphrase=False),
        "two.asc": armor + other,
        "sign-only.asc": sign_only_armor,
        "nothing.asc": "not a key\n",
    }
    before = sorted(keys_dir.iterdir())

    refused = {}
    for name, text in files.items():
        (deployment.root / name).write_text(text)
        refused[name] = intake("keys", "import", str(deployment.root / name), "--yes")

    assert {name: run.returncode for name, run in refused.items()} == dict.fromkeys(files, 1)
    assert (
        "secret.asc: holds a secret key; give the public key only" in refused["secret.asc"].stderr
    )
    assert "two.asc: holds 2 keys (" in refused["two.asc"].stderr
    assert f"sign-only.asc: key {sign_only} cannot be used to encrypt: the key has no " in (
        refused["sign-only.asc"].stderr
    )
    assert "nothing.asc: no OpenPGP public key could be read" in refused["nothing.asc"].stderr
    assert sorted(keys_dir.iterdir()) == before


def test_import_asks_on_a_terminal_and_refuses_without_one(
    deployment: Deployment, keys_dir: Path, intake: Intake
) -> None:
    yes, armor = deployment.keys.make_key("yes", "yes@example.ac.uk")
    (deployment.root / "yes.asc").write_text(armor)
    no, armor = deployment.keys.make_key("no", "no@example.ac.uk")
    (deployment.root / "no.asc").write_text(armor)

    piped = intake("keys", "import", str(deployment.root / "yes.asc"))
    answers = {name: on_a_terminal(deployment, f"{name}.asc", name) for name in ("yes", "no")}

    assert piped.returncode == 1
    assert "not imported: standard input is not a terminal" in piped.stderr
    assert answers["yes"].returncode == 0, answers["yes"].stderr
    assert f"Write {keys_dir / f'{yes}.asc'}? [y/N]" in answers["yes"].stdout
    assert (keys_dir / f"{yes}.asc").is_file()
    assert answers["no"].returncode == 1
    assert "not imported" in answers["no"].stdout
    assert not (keys_dir / f"{no}.asc").exists()


def on_a_terminal(deployment: Deployment, keyfile: str, answer: str) -> Run:
    """`intake keys import KEYFILE` with a pseudo-terminal as standard input, answering."""
    argv = [sys.executable, "-m", "pipeline", "keys", "import", "--config"]
    argv += [str(deployment.config_path), str(deployment.root / keyfile)]
    leader, follower = os.openpty()
    try:
        os.write(leader, f"{answer}\n".encode())
        done = subprocess.run(
            argv,
            stdin=follower,
            capture_output=True,
            text=True,
            env=deployment.env(),
            cwd=deployment.root,
            timeout=60,
        )
    finally:
        os.close(follower)
        os.close(leader)
    return Run(done.returncode, done.stdout, done.stderr)


# A user id forging what the admin compares: it clears the screen, shows a fake fingerprint in
# red, and reverses the rest (U+202E) so that "evil@" reads as a university address.
FORGED = "Evil \x1b[2J\x1b[31mFINGERPRINT 0000\x1b[0m \u202eku.ca.elpmaxe@live\u202c\x9b"
SHOWN = r"Evil \x1b[2J\x1b[31mFINGERPRINT 0000\x1b[0m \u202eku.ca.elpmaxe@live\u202c\x9b"


def key_with_user_id(keys: KeySet, uid: str) -> tuple[str, str]:
    """A key with an encryption subkey whose user id is `uid`, escapes and all (gpg takes it
    from the command line as it is); its fingerprint and public armour."""
    argv = ["gpg", "--homedir", str(keys.home), "--batch", "--pinentry-mode", "loopback"]
    argv += ["--passphrase", "", "--status-fd", "1", "--quick-gen-key", uid, "ed25519", "sign"]
    made = subprocess.run([*argv, "0"], capture_output=True, text=True, check=True)
    fingerprint = made.stdout.split("KEY_CREATED P ")[1].split()[0]
    return fingerprint, keys.add_encryption_subkey(fingerprint, "2y")


def test_user_ids_are_shown_escaped_and_the_fingerprint_last(
    deployment: Deployment, keys_dir: Path, intake: Intake
) -> None:
    fingerprint, armor = key_with_user_id(deployment.keys, f"{FORGED} <evil@example.ac.uk>")
    (deployment.root / "evil.asc").write_text(armor)

    imported = intake("keys", "import", str(deployment.root / "evil.asc"), "--yes")
    listed = intake("keys")
    as_json = intake("keys", "--json")
    doctor = intake("doctor")

    assert imported.returncode == 0, imported.stderr
    assert f"user id:            {SHOWN} <evil@example.ac.uk>\n" in imported.stdout
    assert imported.stdout.splitlines()[-2] == f"fingerprint:        {fingerprint}"
    assert f"unused   {fingerprint}  {SHOWN} <evil@example.ac.uk>  usable" in listed.stdout
    assert f"unused key {fingerprint}: {SHOWN} <evil@example.ac.uk>: usable" in doctor.stdout
    for run in (imported, listed, as_json, doctor):
        assert "\x1b" not in run.stdout and "\u202e" not in run.stdout and "\x9b" not in run.stdout
    keys = {key["fingerprint"]: key for key in json.loads(as_json.stdout)["keys"]}
    assert keys[fingerprint]["user_ids"] == [f"{FORGED} <evil@example.ac.uk>"]  # as it is


def agent_running(home: Path) -> bool:
    """Whether a gpg-agent serves `home` (asked without starting one)."""
    argv = ["gpg-connect-agent", "--homedir", str(home), "--no-autostart", "GETINFO pid", "/bye"]
    asked = subprocess.run(argv, capture_output=True, text=True, check=False)
    return asked.stdout.startswith("D ")


def test_keys_and_doctor_leave_no_gpg_agent_on_the_daemons_homedir(
    deployment: Deployment, intake: Intake
) -> None:
    App.open(deployment.config()).close()  # the outbox key is made; the daemon stops its agent
    home = deployment.config().gpg_home
    assert not agent_running(home)

    listed = intake("keys")
    after_keys = agent_running(home)
    doctor = intake("doctor")
    after_doctor = agent_running(home)

    assert "outbox   " in listed.stdout and "outbox key: " in doctor.stdout  # both looked at it
    assert (after_keys, after_doctor) == (False, False)
