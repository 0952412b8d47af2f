"""Wiring: a validated `Config` in, an `App` with every stage connected out.

`App.open` refuses to start (raising `StartupError` with one `file:line: message` per problem)
when the rules, templates and records keys do not fit together: the checks `intake
check-rules` prints. A service whose key is missing, expired or revoked does not stop the
daemon: its referrals are held (and an admin alerted) until the key is fixed; `check-rules`
reports it as a problem. The daemon does not start without the outbox passphrase (read from
outside data_dir) or when it does not open the outbox key; an outbox key from before
passphrases is replaced at start (`upgrade_outbox_key`). `check-rules` and `route --dry-run`
need no passphrase.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from pipeline.alerts import daily_key, raise_alert
from pipeline.config import Config, ConfigError
from pipeline.crypto import Crypto, CryptoError, KeyInfo, derive_secret, ensure_private_dir
from pipeline.deliver import SmtpTransport, Transport
from pipeline.ingest import Ingest
from pipeline.intake import PollResult, Source, describe
from pipeline.intake.forms import FormSource
from pipeline.intake.imap import ImapSource
from pipeline.intake.maildir import MaildirSource
from pipeline.outbox import DrainResult, drain, release_held, reseal_outbox
from pipeline.render import Renderer, RenderError, template_names
from pipeline.rules import Problem, RuleError, RuleSet, check_references, load_ruleset
from pipeline.store import make_engine, source_lease

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The deployment is not consistent; the message lists every problem, one per line."""


def key_problems(config: Config, keys: dict[str, KeyInfo]) -> list[str]:
    """Records keys that are missing or unusable, named by config key."""
    problems = []
    for fpr in config.gpg.records_keys:
        info = keys.get(fpr.upper())
        if info is None:
            problems.append(
                f"{config.source}: gpg.records_keys: no public key {fpr} in {config.gpg.keys_dir}"
            )
        elif info.problem:
            problems.append(f"{config.source}: gpg.records_keys: key {fpr}: {info.problem}")
    return problems


def template_problems(renderer: Renderer, names: set[str]) -> list[str]:
    problems = []
    for name in sorted(names):
        try:
            renderer.check(name)
        except RenderError as exc:
            problems.append(str(exc))
    return problems


def service_key_problems(ruleset: RuleSet, keys: dict[str, KeyInfo]) -> list[Problem]:
    """Services whose pinned key cannot be used now, at the line that pins it."""
    problems = []
    for service in ruleset.services.values():
        info = keys.get(service.fingerprint)
        reason = (
            "no public key with this fingerprint in the keys folder"
            if info is None
            else info.problem
        )
        if reason:
            line = service.lines.get("fingerprint", service.line)
            message = f"service '{service.id}' key {service.fingerprint}: {reason}"
            problems.append(Problem(service.file, line, message))
    return problems


def load_rules(config: Config, keys: dict[str, KeyInfo], *, strict_keys: bool = True) -> RuleSet:
    """The rules folder, checked against the templates and the keys; or StartupError.

    With `strict_keys` an unusable service key is a problem too (check-rules); without it the
    daemon starts and holds that service's referrals.
    """
    try:
        ruleset = load_ruleset(config.rules.dir)
    except RuleError as exc:
        raise StartupError(str(exc)) from None
    pinned = {service.fingerprint for service in ruleset.services.values()}
    available = template_names(config.templates.dir)
    problems: list[Problem | str] = list(check_references(ruleset, available, pinned))
    renderer = Renderer(config.templates.dir)
    problems += template_problems(renderer, ruleset.template_names() & available)
    problems += key_problems(config, keys)
    if strict_keys:
        problems += service_key_problems(ruleset, keys)
    if problems:
        raise StartupError("\n".join(str(p) for p in problems))
    return ruleset


def scan_keys(config: Config) -> dict[str, KeyInfo]:
    """The keys in keys_dir, read in a throwaway homedir (for checks that must write nothing)."""
    with tempfile.TemporaryDirectory(prefix="intake-keys-") as home:
        crypto = Crypto(Path(home) / "gnupg", config.gpg.binary)
        try:
            crypto.import_keys_dir(config.gpg.keys_dir)
            return crypto.keys()
        finally:
            crypto.close()


def outbox_passphrase(config: Config) -> str:
    """The outbox key's passphrase, or StartupError naming the keys that give it."""
    try:
        passphrase = config.gpg.read_outbox_passphrase(
            data_dir=config.data_dir, homedir=config.gpg_home
        )
    except ConfigError as exc:
        raise StartupError(f"{config.source}: {exc}") from None
    if passphrase is None:
        raise StartupError(
            f"{config.source}: gpg.outbox_passphrase_file: not set. The outbox key (it seals "
            "queued acknowledgements and held referrals) needs a passphrase kept outside "
            "data_dir: set gpg.outbox_passphrase_file or gpg.outbox_passphrase_env"
        )
    inline = config.gpg.outbox_passphrase is not None
    if inline and config.source.resolve().is_relative_to(config.data_dir.resolve()):
        raise StartupError(
            f"{config.source}: gpg.outbox_passphrase: this config file is inside data_dir, so "
            "a copy of the data folder would hold the passphrase; use gpg.outbox_passphrase_file"
        )
    return passphrase


def upgrade_outbox_key(crypto: Crypto, engine: Engine) -> None:
    """Data sealed to an outbox key without passphrase (before issue 8) is re-sealed to the
    protected one, then the old key is deleted; the homedir then holds no other secret key.
    Run under the homedir lock; a restart finishes an interrupted upgrade (both keys open the
    rows until the old one is gone)."""
    legacy = crypto.legacy_outbox_keys()
    if legacy:
        count = reseal_outbox(engine, crypto)
        for fpr in legacy:
            crypto.delete_secret_key(fpr)
        log.warning(
            "outbox key upgraded: %d outbox row(s) re-sealed to the passphrase-protected key; "
            "the old key without passphrase (%s) is deleted",
            count,
            ", ".join(legacy),
        )
    crypto.check_secret_keys()


def _stamp(*folders: Path) -> tuple[tuple[str, int, int], ...]:
    """What the rules and templates folders hold now: names, sizes and mtimes."""
    files = sorted(p for folder in folders for p in folder.glob("*") if p.is_file())
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


@dataclass
class App:
    config: Config
    engine: Engine
    crypto: Crypto
    ingest: Ingest
    transport: Transport
    sources: list[Source] = field(default_factory=list)
    rules_stamp: tuple[tuple[str, int, int], ...] = ()

    @classmethod
    def open(cls, config: Config, transport: Transport | None = None) -> App:
        ensure_private_dir(config.data_dir)
        passphrase = outbox_passphrase(config)
        crypto = Crypto(config.gpg_home, config.gpg.binary, passphrase)
        engine: Engine | None = None
        try:
            with crypto.setup_lock():  # instances starting together on one homedir take turns
                crypto.import_keys_dir(config.gpg.keys_dir)
                crypto.check_outbox_passphrase()
            stamp = _stamp(config.rules.dir, config.templates.dir)
            ruleset = load_rules(config, crypto.keys(), strict_keys=False)
            engine = make_engine(config.database_url)  # nothing is written before this point
            with crypto.setup_lock():
                upgrade_outbox_key(crypto, engine)
        except (CryptoError, StartupError) as exc:
            if engine is not None:
                engine.dispose()
            crypto.close()
            raise StartupError(str(exc)) from None
        ingest = Ingest(config, engine, crypto, ruleset, Renderer(config.templates.dir))
        ingest.limiter.use_secret(derive_secret(passphrase, "ack-limit"))
        ingest.fingerprint_key = derive_secret(passphrase, "fingerprint")
        transport = transport or SmtpTransport(config.smtp)
        app = cls(config, engine, crypto, ingest, transport, _sources(config), stamp)
        app.check_keys()
        return app

    @property
    def rules(self) -> RuleSet:
        return self.ingest.rules

    def poll(self) -> list[PollResult]:
        """Poll every source once; a source that cannot be reached is an error, not 'empty'."""
        self.reload_rules()
        return [self._poll(source) for source in self.sources]

    def _poll(self, source: Source) -> PollResult:
        with source_lease(self.engine, source.name) as mine:
            if not mine:
                log.debug("poll %s: another instance is polling it", source.name)
                return PollResult()
            try:
                result = source.poll(self.ingest)
            except Exception as exc:
                result = PollResult(errors=[f"{source.name}: {describe(exc)}"])
        for error in result.errors:
            log.error("poll: %s", error)
        for notice in set(result.notices):
            log.warning("%s", notice)
            raise_alert(self.engine, self.config, daily_key(notice[:80]), notice, notice)
        log.info("poll %s: %s", source.name, result.counts or "nothing new")
        return result

    def reload_rules(self) -> None:
        """Take edited rules or templates into use; a broken edit keeps the last good ones."""
        stamp = _stamp(self.config.rules.dir, self.config.templates.dir)
        if stamp == self.rules_stamp:
            return
        self.rules_stamp = stamp
        try:
            ruleset = load_rules(self.config, self.crypto.keys(), strict_keys=False)
        except StartupError as exc:
            key = "rules:" + hashlib.sha256(str(exc).encode()).hexdigest()[:16]
            subject = "rule files have errors: the last good rules stay in force"
            raise_alert(self.engine, self.config, key, subject, str(exc))
            log.error("rules not reloaded:\n%s", exc)
            return
        self.ingest.rules = ruleset
        self.ingest.renderer = Renderer(self.config.templates.dir)
        log.info("rules reloaded from %s", self.config.rules.dir)

    def drain(self) -> DrainResult:
        self.ingest.limiter.prune()  # the rate limit's rows live for its window only
        release_held(self.config, self.engine, self.crypto, self.rules.services)
        result = drain(self.config, self.engine, self.crypto, self.transport)
        for error in result.errors:
            log.error("outbox: %s", error)
        return result

    def check_keys(self) -> None:
        """Alert (once a day each) about unusable service keys and keys about to expire."""
        keys = self.crypto.keys()
        for problem in service_key_problems(self.rules, keys):
            service = problem.message.split("'")[1]
            subject = f"referrals to {service} are held: its key cannot be used"
            raise_alert(self.engine, self.config, daily_key("key", service), subject, str(problem))
        window = self.config.alerts.key_expiry_days
        pinned = {s.fingerprint: s.id for s in self.rules.services.values()}
        pinned |= {f.upper(): "records" for f in self.config.gpg.records_keys}
        for fpr, days in expiring_keys(keys, pinned, window):
            subject = f"the {pinned[fpr]} key {fpr} expires in {days} day(s)"
            log.warning("%s", subject)
            text = f"{subject}. Import an extended or new key into {self.config.gpg.keys_dir}."
            raise_alert(self.engine, self.config, daily_key("expiry", fpr), subject, text)

    def close(self) -> None:
        self.engine.dispose()
        self.crypto.close()


def expiring_keys(
    keys: dict[str, KeyInfo], pinned: dict[str, str], window_days: int
) -> list[tuple[str, int]]:
    """Pinned, still usable keys that expire within `window_days`: (fingerprint, days left)."""
    now = time.time()
    found = []
    for fpr in pinned:
        info = keys.get(fpr)
        if info and info.problem is None and info.expires is not None:
            days = int((info.expires - now) // 86400)
            if days < window_days:
                found.append((fpr, days))
    return found


def _sources(config: Config) -> list[Source]:
    sources: list[Source] = []
    if config.imap:
        try:
            sources.append(ImapSource(config.imap))
        except ConfigError as exc:
            raise ConfigError(f"{config.source}: {exc}") from None
    if config.maildir:
        maildir = config.maildir
        sources.append(MaildirSource(maildir.path, anonymous=maildir.anonymous))
    sources += [FormSource(form, config.data_dir) for form in config.forms]
    return sources
