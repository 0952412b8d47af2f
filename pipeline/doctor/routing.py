"""Doctor checks of what routes and protects reports: a loaded `Config` in, `Check`s out.

Rules and templates are checked as `intake check-rules` checks them (`app.load_routing`, the
service keys left to the key checks). Every key the deployment uses (`keys.key_table`: records,
outbox, services' pinned keys) is one line: usable or not (and why), and a key whose encryption
subkey expires within `alerts.key_expiry_days` is a warning. The outbox key is opened with the
configured passphrase (the gpg-agent that starts on the daemon's homedir is stopped after). A
user id is shown escaped (`KeyEntry.user`): it is the key's own text, and can hold escapes.
"""

from __future__ import annotations

from pipeline.app import RoutingError, StartupError, load_routing, outbox_passphrase, scan_keys
from pipeline.config import Config
from pipeline.crypto import CryptoError
from pipeline.doctor.result import FAIL, PASS, SKIP, WARN, Check
from pipeline.keys import NO_OUTBOX_KEY, KeyEntry, key_table

IMPORT = "intake keys import FILE"
FIXES = {
    "outbox": "check that gpg.outbox_passphrase_file (or _env) holds the passphrase the key "
    "was made with",
    "records": "put the records key (renewed, if it expired) into gpg.keys_dir, or correct "
    "gpg.records_keys",
    "service": f"ask the service for its current key and `{IMPORT}` it; pin its fingerprint in "
    "services.yaml",
}


def check_rules(config: Config) -> list[Check]:
    check_rules = f"intake check-rules --config {config.source}"
    try:
        routing = load_routing(config, scan_keys(config), strict_keys=False)
    except RoutingError as exc:
        problems = str(exc).splitlines()
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return [Check("rules", FAIL, problems[0] + more, f"{check_rules} lists them; fix each")]
    except CryptoError as exc:
        return [Check("rules", FAIL, str(exc), "correct gpg.keys_dir")]
    rules = routing.rules
    found = f"{config.rules.dir}: {len(rules.services)} service(s), {len(rules.rules)} rule(s)"
    found += f", templates in {config.templates.dir} render"
    if routing.warnings:
        detail = f"{found}; {len(routing.warnings)} warning(s), e.g. {routing.warnings[0]}"
        return [Check("rules", WARN, detail, f"{check_rules} lists them")]
    return [Check("rules", PASS, found)]


def _name(entry: KeyEntry) -> str:
    if entry.role == "service":
        return f"key of {', '.join(entry.used_by)}"
    if entry.role == "outbox":
        return "outbox key"
    return f"{entry.role} key {entry.fingerprint}"  # records keys, keys pinned by nothing


def _fix(config: Config, entry: KeyEntry) -> str:
    if entry.problem and entry.problem.startswith(NO_OUTBOX_KEY):
        return "start the daemon once: it makes the outbox key"
    if not entry.looked_at:
        return "run doctor as the daemon's user (sudo -u USER intake doctor ...)"
    if not entry.pinned:
        return f"remove its file from {config.gpg.keys_dir}, or pin it in services.yaml"
    return FIXES[entry.role]


def key_check(config: Config, entry: KeyEntry) -> Check:
    """One key: FAIL when it cannot encrypt (WARN for a key nobody uses, or an outbox key the
    daemon has not made yet), WARN when it stops within alerts.key_expiry_days."""
    fingerprint = "" if entry.fingerprint in _name(entry) else entry.fingerprint
    named = " ".join([fingerprint, entry.user]).strip()  # the user id printable
    detail = f"{named}: {entry.state()}" if named else entry.state()
    if entry.problem:
        minor = not entry.pinned or not entry.looked_at
        return Check(_name(entry), WARN if minor else FAIL, detail, _fix(config, entry))
    window = config.alerts.key_expiry_days
    days = entry.days_left()
    if days is not None and days < window and entry.pinned:
        detail += f" (alerts.key_expiry_days = {window})"
        return Check(_name(entry), WARN, detail, _fix(config, entry))
    return Check(_name(entry), PASS, detail)


def _unopened(check: Check) -> Check:
    detail = f"{check.detail}; not opened: the outbox passphrase cannot be read"
    return Check(check.name, WARN, detail, "see the secret gpg.outbox_passphrase line")


def check_keys(config: Config) -> list[Check]:
    try:
        passphrase: str | None = outbox_passphrase(config)
    except StartupError:
        passphrase = None  # the secrets check says why; the outbox key is listed unopened
    try:
        table = key_table(config, passphrase)
    except CryptoError as exc:
        return [Check("keys", FAIL, str(exc), "correct gpg.keys_dir")]
    checks = [key_check(config, entry) for entry in table.entries]
    if passphrase is None:  # the outbox key was listed, not opened
        checks = [
            _unopened(c) if c.name == "outbox key" and c.status == PASS else c for c in checks
        ]
    if table.rules_error:
        detail = f"services.yaml could not be read ({table.rules_error})"
        checks.append(Check("service keys", SKIP, detail, "see the rules line"))
    return checks
