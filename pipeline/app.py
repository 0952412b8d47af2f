"""Wiring: a validated `Config` in, an `App` with every stage connected out.

`App.open` refuses to start (raising `StartupError` with one `file:line: message` per problem)
when the rules, services, keys and templates do not fit together: the same checks that
`intake check-rules` prints.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from pipeline.config import Config
from pipeline.crypto import Crypto, CryptoError, KeyInfo, ensure_private_dir
from pipeline.deliver import SmtpTransport, Transport
from pipeline.ingest import Ingest
from pipeline.intake import PollResult, Source
from pipeline.intake.forms import FormSource
from pipeline.intake.imap import ImapSource
from pipeline.intake.maildir import MaildirSource
from pipeline.outbox import DrainResult, drain
from pipeline.render import Renderer, RenderError, template_names
from pipeline.rules import Problem, RuleError, RuleSet, check_references, load_ruleset
from pipeline.store import make_engine

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


def load_rules(config: Config, keys: dict[str, KeyInfo]) -> RuleSet:
    """The rules folder, checked against the templates and the usable keys; or StartupError."""
    try:
        ruleset = load_ruleset(config.rules.dir)
    except RuleError as exc:
        raise StartupError(str(exc)) from None
    usable = {fpr for fpr, info in keys.items() if info.problem is None}
    available = template_names(config.templates.dir)
    problems: list[Problem | str] = list(check_references(ruleset, available, usable))
    renderer = Renderer(config.templates.dir)
    problems += template_problems(renderer, ruleset.template_names() & available)
    problems += key_problems(config, keys)
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


@dataclass
class App:
    config: Config
    engine: Engine
    crypto: Crypto
    ingest: Ingest
    transport: Transport
    sources: list[Source] = field(default_factory=list)

    @classmethod
    def open(cls, config: Config, transport: Transport | None = None) -> App:
        ensure_private_dir(config.data_dir)
        crypto = Crypto(config.gpg_home, config.gpg.binary)
        try:
            crypto.import_keys_dir(config.gpg.keys_dir)
            crypto.check_secret_keys()
        except CryptoError as exc:
            raise StartupError(str(exc)) from None
        ruleset = load_rules(config, crypto.keys())
        engine = make_engine(config.database_url)
        ingest = Ingest(config, engine, crypto, ruleset, Renderer(config.templates.dir))
        return cls(
            config,
            engine,
            crypto,
            ingest,
            transport or SmtpTransport(config.smtp),
            _sources(config),
        )

    def poll(self) -> list[PollResult]:
        """Poll every source once; a source that cannot be reached is an error, not 'empty'."""
        results = []
        for source in self.sources:
            try:
                result = source.poll(self.ingest)
            except Exception as exc:
                result = PollResult(errors=[f"{source.name}: {type(exc).__name__}: {exc}"])
            for error in result.errors:
                log.error("poll: %s", error)
            log.info("poll %s: %s", source.name, result.counts or "nothing new")
            results.append(result)
        return results

    def drain(self) -> DrainResult:
        result = drain(self.engine, self.crypto, self.transport, self.config.smtp.from_)
        for error in result.errors:
            log.error("outbox: %s", error)
        return result

    def close(self) -> None:
        self.engine.dispose()
        self.crypto.close()


def _sources(config: Config) -> list[Source]:
    sources: list[Source] = []
    if config.imap:
        sources.append(ImapSource(config.imap))
    if config.maildir:
        sources.append(MaildirSource(config.maildir.path))
    sources += [FormSource(form, config.data_dir) for form in config.forms]
    return sources
