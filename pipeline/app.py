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
from pipeline.intake import PollResult, Source, SourceError, describe
from pipeline.intake.forms import FormSource
from pipeline.intake.imap import ImapSource
from pipeline.intake.maildir import MaildirSource
from pipeline.logs import log_context
from pipeline.outbox import DrainResult, drain, release_held, reseal_outbox
from pipeline.render import Renderer
from pipeline.render_check import check_template
from pipeline.rules import Problem, RuleError, RuleSet, lint, load_ruleset, missing_templates
from pipeline.sources import record_poll, record_routing
from pipeline.store import DatabaseError, make_engine, source_lease
from pipeline.template_samples import samples, template_kinds

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


def template_problems(renderer: Renderer, ruleset: RuleSet) -> list[str]:
    """Every mistake of every template in the renderer's snapshot, each template rendered as
    what it is used as (`template_samples`); `template-file:line: message` each."""
    by_kind = samples()
    problems: list[str] = []
    for name, kinds in sorted(template_kinds(ruleset, renderer.names).items()):
        problems += check_template(renderer, name, [by_kind[kind] for kind in sorted(kinds)])
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


@dataclass(frozen=True)
class Routing:
    """Rules and the templates they were checked with (a snapshot), to be used together."""

    rules: RuleSet
    renderer: Renderer
    warnings: list[Problem]  # `rules.checks.lint`: printed by check-rules, logged by the daemon


class RoutingError(StartupError):
    """The rules or the templates cannot be used; the message lists every problem. `kind` is
    "template" when only templates are at fault (one is broken or missing), else "rules"."""

    def __init__(self, problems: list[str], kind: str, warnings: list[Problem]) -> None:
        super().__init__("\n".join(problems))
        self.kind = kind
        self.warnings = warnings


def load_routing(config: Config, keys: dict[str, KeyInfo], *, strict_keys: bool = True) -> Routing:
    """The rules folder and the templates, checked together and against the keys; or
    RoutingError. The `Routing` holds the very templates that were checked.

    With `strict_keys` an unusable service key is a problem too (check-rules); without it the
    daemon starts and holds that service's referrals.
    """
    try:
        ruleset = load_ruleset(config.rules.dir)
    except RuleError as exc:
        raise RoutingError([str(exc)], "rules", []) from None
    renderer = Renderer(config.templates.dir)
    problems = key_problems(config, keys)
    if strict_keys:
        problems += [str(problem) for problem in service_key_problems(ruleset, keys)]
    templates = [str(problem) for problem in missing_templates(ruleset, renderer.names)]
    templates += template_problems(renderer, ruleset)
    forms_give_categories = any("category" in form.columns for form in config.forms)
    warnings = lint(ruleset, forms_give_categories=forms_give_categories)
    if problems or templates:
        raise RoutingError(problems + templates, "rules" if problems else "template", warnings)
    return Routing(ruleset, renderer, warnings)


def load_rules(config: Config, keys: dict[str, KeyInfo], *, strict_keys: bool = True) -> RuleSet:
    """The rules of `load_routing`, for commands that render nothing."""
    return load_routing(config, keys, strict_keys=strict_keys).rules


def log_warnings(routing: Routing) -> None:
    """The daemon logs what check-rules would warn about, each time it takes rules in."""
    for warning in routing.warnings:
        log.warning("%s", warning)


def scan_keys(config: Config) -> dict[str, KeyInfo]:
    """The keys in keys_dir, read in a throwaway homedir (for checks that must write nothing)."""
    with tempfile.TemporaryDirectory(prefix="intake-keys-") as home:
        crypto = Crypto(Path(home) / "gnupg", config.gpg.binary)
        try:
            crypto.sync_keys_dir(config.gpg.keys_dir)
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
    """Data sealed to an outbox key without passphrase (before issue 8) is re-sealed (in
    process, with the outbox passphrase), then the old key is deleted; the homedir then holds no
    other secret key. Run under the homedir lock; a restart finishes an interrupted upgrade
    (both keys open the rows until the old one is gone)."""
    legacy = crypto.legacy_outbox_keys()
    if legacy:
        count = reseal_outbox(engine, crypto)
        for fpr in legacy:
            crypto.delete_secret_key(fpr)
        log.warning(
            "outbox key upgraded: %d outbox row(s) re-sealed with the outbox passphrase; "
            "the old key without passphrase (%s) is deleted",
            count,
            ", ".join(legacy),
        )
    crypto.check_secret_keys()


def _stamp(*folders: Path) -> tuple[tuple[str, int, int], ...]:
    """What the rules and templates folders hold now: names, sizes and mtimes."""
    files = sorted(p for folder in folders for p in folder.glob("*") if p.is_file())
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


KeysStamp = tuple[bool, tuple[tuple[str, int, int], ...]]


def _keys_stamp(keys_dir: Path) -> KeysStamp:
    """Whether the keys folder is there and what it holds (taken before a sync reads it)."""
    return keys_dir.is_dir(), _stamp(keys_dir)


@dataclass
class App:
    config: Config
    engine: Engine
    crypto: Crypto
    ingest: Ingest
    transport: Transport
    sources: list[Source] = field(default_factory=list)
    rules_stamp: tuple[tuple[str, int, int], ...] = ()
    keys_stamp: KeysStamp | None = None

    @classmethod
    def open(cls, config: Config, transport: Transport | None = None) -> App:
        ensure_private_dir(config.data_dir)
        passphrase = outbox_passphrase(config)
        crypto = Crypto(config.gpg_home, config.gpg.binary, passphrase)
        engine: Engine | None = None
        try:
            with crypto.setup_lock():  # instances starting together on one homedir take turns
                keys_stamp = _keys_stamp(config.gpg.keys_dir)
                crypto.sync_keys_dir(config.gpg.keys_dir)
                crypto.check_outbox_passphrase()
            stamp = _stamp(config.rules.dir, config.templates.dir)
            routing = load_routing(config, crypto.keys(), strict_keys=False)
            engine = make_engine(config.database_url)  # nothing is written before this point
            record_routing(engine, None)
            with crypto.setup_lock():
                upgrade_outbox_key(crypto, engine)
        except (CryptoError, StartupError) as exc:
            if engine is not None:
                engine.dispose()
            crypto.close()
            raise StartupError(str(exc)) from None
        except DatabaseError as exc:
            crypto.close()
            raise StartupError(f"{config.source}: database.url: {exc}") from None
        ingest = Ingest(config, engine, crypto, routing.rules, routing.renderer)
        log_warnings(routing)
        ingest.limiter.use_secret(derive_secret(passphrase, "ack-limit"))
        ingest.fingerprint_key = derive_secret(passphrase, "fingerprint")
        transport = transport or SmtpTransport(config.smtp)
        app = cls(config, engine, crypto, ingest, transport, _sources(config), stamp, keys_stamp)
        app.check_keys()
        return app

    @property
    def rules(self) -> RuleSet:
        return self.ingest.rules

    def poll(self) -> list[PollResult]:
        """Poll every source once; a source that cannot be reached is an error, not 'empty':
        it is recorded in `source_status` and alerted (see `pipeline.sources`). What is logged
        meanwhile names the source (`source` in JSON log lines)."""
        self.reload_rules()
        results = []
        for source in self.sources:
            with log_context(source=source.name):
                results.append(self._poll(source))
        return results

    def _poll(self, source: Source) -> PollResult:
        with source_lease(self.engine, source.name) as mine:
            if not mine:
                log.debug("poll %s: another instance is polling it", source.name)
                return PollResult()
            result = PollResult()
            try:
                result = source.poll(self.ingest)
            except SourceError as exc:
                result.fail(exc.cause, str(exc))
            except Exception as exc:
                result.fail("error", f"{source.name}: {describe(exc)}")
            record_poll(self.engine, self.config, source.name, result)
        for error in result.errors:
            log.error("poll: %s", error)
        for notice in set(result.notices):
            log.warning("%s", notice)
            raise_alert(self.engine, self.config, daily_key(notice[:80]), notice, notice)
        log.info("poll %s: %s", source.name, result.counts or "nothing new")
        return result

    def reload_rules(self) -> None:
        """Take edited rules or templates into use; a broken edit keeps the last good ones."""
        self.sync_keys()
        stamp = _stamp(self.config.rules.dir, self.config.templates.dir)
        if stamp == self.rules_stamp:
            return
        self.rules_stamp = stamp
        try:
            routing = load_routing(self.config, self.crypto.keys(), strict_keys=False)
        except RoutingError as exc:
            log.error("rules and templates not reloaded:\n%s", exc)
            self._alert_not_reloaded(exc)
            record_routing(self.engine, exc.kind, str(exc))
            return
        record_routing(self.engine, None)
        self.ingest.rules, self.ingest.renderer = routing.rules, routing.renderer
        log_warnings(routing)
        log.info("rules and templates reloaded from %s", self.config.rules.dir)

    def _alert_not_reloaded(self, error: RoutingError) -> None:
        """One alert a day per distinct set of problems (kind "rules" or "template")."""
        what = "templates have" if error.kind == "template" else "rule files have"
        subject = f"{what} errors: the last good rules and templates stay in force"
        text = (
            f"{error}\n\nReports are still routed and acknowledged with the rules and templates "
            "in force before this change. Fix the lines above (intake check-rules lists them); "
            "the fixed files are taken into use at the next poll."
        )
        key = daily_key(error.kind, hashlib.sha256(str(error).encode()).hexdigest()[:16])
        raise_alert(self.engine, self.config, key, subject, text, kind=error.kind)

    def drain(self) -> DrainResult:
        self.ingest.limiter.prune()  # the rate limit's rows live for its window only
        try:
            release_held(self.config, self.engine, self.crypto, self.rules.services)
        except Exception as exc:  # held referrals wait; the rest of the outbox must not
            log.error("releasing held referrals failed: %s", describe(exc))
        result = drain(self.config, self.engine, self.crypto, self.transport)
        for error in result.errors:
            log.error("outbox: %s", error)
        return result

    def sync_keys(self) -> None:
        """Make the keyring what `[gpg] keys_dir` holds now (a removed file's key deleted, a
        changed one re-imported), under the homedir lock; cheap when keys_dir is unchanged.
        After a change of keys_dir the records keys and expiry are checked (alerts) and the
        rules re-checked against the keys; a keys folder that cannot be read leaves the keyring
        as it was and alerts."""
        self.crypto.forget_keys()  # listed once per poll: another instance may import too
        keys_dir = self.config.gpg.keys_dir
        stamp = _keys_stamp(keys_dir)
        if stamp == self.keys_stamp:
            return
        self.keys_stamp = stamp
        try:
            with self.crypto.setup_lock():
                changes = self.crypto.sync_keys_dir(keys_dir)
        except CryptoError as exc:
            key = daily_key("keys", hashlib.sha256(str(exc).encode()).hexdigest()[:16])
            subject = "the keys folder cannot be read: the keys stay as they were"
            self._key_alert(key, subject, str(exc))
            return
        if changes:  # another instance on this homedir may have made them already
            log.info("keys from %s: %s", keys_dir, changes)
        self.rules_stamp = ()  # rules refused for a missing key load once it is back
        # Service keys are checked as referrals are made (held, alerted): the rules that pin
        # them may be changing with the keys and are reloaded next.
        self._check_records_and_expiry(self.crypto.keys())

    def check_keys(self) -> None:
        """Alert (once a day each) about unusable records and service keys and keys about to
        expire (the encryption subkey gpg will use counts)."""
        keys = self.crypto.keys()
        for problem in service_key_problems(self.rules, keys):
            service = problem.message.split("'")[1]
            subject = f"referrals to {service} are held: its key cannot be used"
            self._key_alert(daily_key("key", service), subject, str(problem))
        self._check_records_and_expiry(keys)

    def _check_records_and_expiry(self, keys: dict[str, KeyInfo]) -> None:
        """The key checks that need no rules reloaded: records keys, keys about to expire."""
        records = key_problems(self.config, keys)
        if records:
            subject = "a records key cannot be used: new reports wait in their source"
            self._key_alert(daily_key("key", "records"), subject, "\n".join(records))
        window = self.config.alerts.key_expiry_days
        pinned = {s.fingerprint: s.id for s in self.rules.services.values()}
        pinned |= {f.upper(): "records" for f in self.config.gpg.records_keys}
        for fpr, days in expiring_keys(keys, pinned, window):
            subject = f"the {pinned[fpr]} key {fpr} expires in {days} day(s)"
            log.warning("%s", subject)
            text = (
                f"{subject} (gpg encrypts to its subkey {keys[fpr].subkey}). Put an extended or "
                f"new key into {self.config.gpg.keys_dir}; it is taken in without a restart."
            )
            self._key_alert(daily_key("expiry", fpr), subject, text)

    def _key_alert(self, key: str, subject: str, text: str) -> None:
        raise_alert(self.engine, self.config, key, subject, text, kind="key")

    def close(self) -> None:
        self.engine.dispose()
        self.crypto.close()


def expiring_keys(
    keys: dict[str, KeyInfo], pinned: dict[str, str], window_days: int
) -> list[tuple[str, int]]:
    """Pinned, still usable keys that stop encrypting within `window_days` (the primary key or
    the encryption subkeys expire): (fingerprint, days left)."""
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


def source_names(config: Config) -> list[str]:
    """The names of the configured sources, as polls and `intake status` call them."""
    return [source.name for source in _sources(config)]
