"""`intake doctor`: a deployment's config in, one line per check out (or one JSON object), and
exit 0 only when nothing failed. For before go-live and after every change.

Checks, in order: the config; every secret it names (`local`); data_dir and its disk space;
the database (reachable, schema current); every key (`routing`: records, outbox, services'
pinned keys, expiring ones warned about); rules and templates as `check-rules` checks them;
each form's export folder; the Maildir; the metrics textfile's folder; IMAP (TLS, sign-in,
folders, capabilities, clock) and SMTP (TLS, sign-in, EHLO; no mail is sent) (`mail`). Each
runs with a time limit (the server timeouts of the config for the servers) and a failing or
hanging check never stops the others.

A line is `STATUS  name: what was found -> what to do (naming the config key)`. PASS and SKIP
(not checked, and why) are fine; WARN works but deserves a look (e.g. a key expiring within
alerts.key_expiry_days, a missing IMAP capability) and does not fail: exit 0; any FAIL exits
1. `--json` prints {"ok", "summary", "checks": [{name, status, detail, fix}]} for monitoring.
`--send-test SERVICE` instead sends that service an encrypted test referral (`send_test`).
Nothing is written (but the send-test's audit lines), and no secret or report content shown.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.config import Config
from pipeline.doctor import local, mail, routing
from pipeline.doctor.result import Check, bounded, exit_status, lines, to_json
from pipeline.doctor.send_test import send_test

LOCAL_SECONDS = 60.0  # the limit of a check that talks to no server
DATABASE_SECONDS = 30.0


@dataclass(frozen=True)
class Probe:
    """One check (or group of lines) to run: its name, its time limit and what to do when it
    runs out of time."""

    name: str
    run: Callable[[Config], list[Check]]
    seconds: Callable[[Config], float]
    fix: str


def _local(_: Config) -> float:
    return LOCAL_SECONDS


PROBES = [
    Probe("config", local.check_config, _local, "check the config file"),
    Probe("secrets", local.check_secrets, _local, "check the *_file and *_env keys"),
    Probe("data_dir", local.check_data_dir, _local, "check data_dir"),
    Probe("disk space", local.check_disk, _local, "check data_dir's file system"),
    Probe(
        "database",
        local.check_database,
        lambda _: DATABASE_SECONDS,
        "check database.url; is the database server up?",
    ),
    Probe("keys", routing.check_keys, _local, "check gpg.keys_dir and gpg.homedir"),
    Probe("rules", routing.check_rules, _local, "check rules.dir and templates.dir"),
    Probe("forms", local.check_forms, _local, "check forms.path (a network mount?)"),
    Probe("maildir", local.check_maildir, _local, "check maildir.path (a network mount?)"),
    Probe("metrics", local.check_metrics, _local, "check metrics.textfile"),
    Probe(
        "imap",
        mail.check_imap,
        lambda config: 4 * config.imap.timeout_seconds if config.imap else LOCAL_SECONDS,
        "check imap.host, imap.port and imap.timeout_seconds",
    ),
    Probe(
        "smtp",
        mail.check_smtp,
        lambda config: 3 * config.smtp.timeout_seconds,
        "check smtp.host, smtp.port and smtp.timeout_seconds",
    ),
]


def run_checks(config: Config) -> list[Check]:
    """Every check, in order, each within its time limit."""
    checks: list[Check] = []
    for probe in PROBES:
        run = functools.partial(probe.run, config)
        checks += bounded(probe.name, run, probe.seconds(config), probe.fix)
    return checks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Check a deployment before go-live and after every change: config and secrets, "
        "data_dir, database, keys, rules and templates, form folders, IMAP and SMTP, the clock."
    )
    parser.epilog = (
        "Exit 0 when no check failed (WARN and SKIP do not fail), else 1. Plain doctor sends "
        "no mail and changes nothing."
    )
    parser.add_argument("--json", action="store_true", help="one JSON object, for monitoring")
    parser.add_argument(
        "--send-test",
        metavar="SERVICE",
        help="send this service (an id in services.yaml) an encrypted test referral instead",
    )


def command(config: Config, args: argparse.Namespace) -> int:
    checks = [send_test(config, args.send_test)] if args.send_test else run_checks(config)
    print(to_json(checks) if args.json else "\n".join(lines(checks)))
    return exit_status(checks)
