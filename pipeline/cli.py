"""The `intake` command (also `python -m pipeline`): admins' checks, dry runs and status.

intake check-rules --config FILE [--strict] exit 0, or 1 with `file:line: message` lines
                                            (warnings: exit 0 unless --strict)
intake route --config FILE --dry-run --json MESSAGE.eml
intake route --config FILE --dry-run --json --form FORM_ID EXPORT_FILE
intake status --config FILE [--json]
intake run --config FILE [--once]           the daemon (same as run_daemon.py); with --once the
                                            exit status is a sum of 1, 2, 4, 8 (intake run -h)
intake retry --config FILE [--reference R] [--send]   held referrals and dead letters again
intake purge --config FILE [--dry-run]      remove records past their retention period
intake quarantine list --config FILE [--json]   quarantined inputs (reference, source, reason)
intake quarantine release --config FILE REFERENCE... --gnupghome DIR   take them in again
                                            (also unrouted reports, once the rules refer them)
intake show --config FILE REFERENCE --gnupghome DIR   one stored report, decrypted, to stdout
intake db upgrade --config FILE             the schema to the newest revision (the daemon does
                                            this at start too)
intake db current --config FILE             the database's schema revision and the newest;
                                            exit 0 when they are the same, else 1
intake doctor --config FILE [--json]        check the deployment: one PASS/WARN/SKIP/FAIL line
                                            a check; exit 1 when one failed (WARN: exit 0)
intake doctor --config FILE --send-test SERVICE   send the service an encrypted test referral
intake keys --config FILE [--json]          the records, outbox and service keys, usable or not
intake keys import --config FILE KEYFILE [--yes]   a service's public key into gpg.keys_dir
intake --version

Without --config, the config is $INTAKE_CONFIG, else /etc/report-intake/intake.toml. A usage
error is one line and exit status 2; a config or database that cannot be used, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shlex
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from pipeline import audit, doctor, keys, quarantine, version
from pipeline.anonymity import apply_anonymity
from pipeline.app import (
    App,
    RoutingError,
    StartupError,
    load_routing,
    load_rules,
    scan_keys,
    source_names,
)
from pipeline.audit import current_user
from pipeline.config import Config, ConfigError, load_config
from pipeline.crypto import CryptoError
from pipeline.daemon import EXIT_HELP, instance_lock, run_once, serve
from pipeline.intake.exports import ExportError
from pipeline.intake.forms import FormSource, RowError, known_categories, row_report
from pipeline.logs import setup_logging
from pipeline.outbox import release_held, requeue
from pipeline.parse import ParseError, parse_email
from pipeline.retention import archives_due, due_for_purge, purge, purge_archives
from pipeline.rules import RuleSet, evaluate
from pipeline.status import read_status
from pipeline.store import (
    DatabaseError,
    cannot_open,
    database_url,
    make_engine,
    open_current,
    open_engine,
    schema_revision,
    shown,
    upgrade,
)


def cmd_check_rules(config: Config, args: argparse.Namespace) -> int:
    """Like a linter: one `file:line: message` a line on standard output, warnings as
    `file:line: warning: message`. Exit 1 on any error, or with --strict on any warning."""
    try:
        routing = load_routing(config, scan_keys(config))
    except RoutingError as exc:
        print(exc)
        for warning in exc.warnings:
            print(warning)
        return 1
    for warning in routing.warnings:
        print(warning)
    if routing.warnings and args.strict:
        return 1
    noted = f"; {len(routing.warnings)} warning(s) above" if routing.warnings else ""
    print(f"{config.rules.dir}: rules, services, keys and templates are consistent{noted}")
    return 0


def print_decision(decision: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(decision))
        return
    for key, value in decision.items():
        print(f"{key}: {value}")


def route_export(config: Config, ruleset: RuleSet, args: argparse.Namespace) -> int:
    """One decision per response of a form export, one JSON object a line."""
    form = next((f for f in config.forms if f.id == args.form), None)
    if form is None:
        known = ", ".join(f.id for f in config.forms) or "none"
        print(
            f"{config.source}: forms: no form with id {args.form!r} (known: {known})",
            file=sys.stderr,
        )
        return 1
    try:
        export = FormSource(form, config.data_dir).read(Path(args.message))
    except ExportError as exc:
        print(exc, file=sys.stderr)
        return 1
    status = 0
    for row in export.rows:
        try:
            report = row_report(form, export, row, datetime.now(UTC), known_categories(ruleset))
        except RowError as exc:
            reason = f"{export.path.name}:{row.row}: {exc}"
            print_decision({"quarantined": True, "reason": reason}, args.json)
            status = 1
            continue
        print_decision(evaluate(ruleset, report).to_json_dict(), args.json)
    return status


def cmd_route(config: Config, args: argparse.Namespace) -> int:
    """Print the decision for one message or export; writes nothing and sends nothing."""
    ruleset = load_rules(config, scan_keys(config), strict_keys=False)
    if args.form:
        return route_export(config, ruleset, args)
    try:
        raw = Path(args.message).read_bytes()
    except OSError as exc:
        print(f"{args.message}: cannot be read ({exc.strerror})", file=sys.stderr)
        return 1
    try:
        report = parse_email(raw, datetime.now(UTC), limits=config.limits)
    except ParseError as exc:
        print(json.dumps({"quarantined": True, "reason": exc.reason}))
        return 1
    intake = config.intake
    marker = intake.anonymous_subject_marker
    apply_anonymity(report, raw, intake.anonymous_addresses, marker, limits=config.limits)
    print_decision(evaluate(ruleset, report).to_json_dict(), args.json)
    return 0


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    """Counts, what needs an admin, recent alerts, the inputs ledger and the sources' health
    (`pipeline.status`); never content. Whoever runs it: it creates and upgrades nothing."""
    engine = open_current(config.database_url)
    try:
        status = read_status(engine, source_names(config))
    finally:
        engine.dispose()
    print(status.to_json() if args.json else "\n".join(status.lines()))
    return 0


def cmd_retry(config: Config, args: argparse.Namespace) -> int:
    """Send held referrals whose key is fixed now, and put dead letters back in the queue. With
    --send, then run every job once, under the instance lock: beside a daemon on the same SQLite
    database it is refused before anything changes (the daemon sends them)."""
    setup_logging()
    advice = "it sends the mail: run intake retry without --send (nothing was changed)"
    with instance_lock(config, advice) if args.send else nullcontext():
        app = App.open(config)
        try:
            released = release_held(config, app.engine, app.crypto, app.rules.services)
            requeued = requeue(app.engine, args.reference)
            print(f"released {len(released)} held referral(s); requeued {requeued} failed mail")
            return run_once(app) if args.send else 0
        finally:
            app.close()


def cmd_purge(config: Config, args: argparse.Namespace) -> int:
    """Remove encrypted records past their retention period ([retention] in the config)."""
    engine = open_current(config.database_url)
    try:
        due = due_for_purge(engine, config.retention)
        for item in due:
            verb = "would purge" if args.dry_run else "purging"
            print(f"{verb} {item.reference} ({item.state} since {item.updated_at:%Y-%m-%d})")
        folders = [
            (FormSource(form, config.data_dir).archive_dir, form.path) for form in config.forms
        ]
        archives = archives_due(folders, config.retention)
        for path in archives:
            print(f"{'would purge' if args.dry_run else 'purging'} form archive {path.name}")
        if not args.dry_run:
            purge(engine, due, actor=current_user())
            purge_archives(engine, archives, actor=current_user())
        done = "due" if args.dry_run else "purged"
        print(f"{len(due)} report(s) and {len(archives)} form archive(s) {done}")
        return 0
    finally:
        engine.dispose()


def audit_command(config: Config, args: argparse.Namespace) -> None:
    """One audit line for an admin command that changes something or reads a report (a
    release: one a reference), written before it runs: the attempt is on record whatever
    comes of it (a release also records its outcome, action `release`)."""
    releasing = args.command == "quarantine" and args.action == "release"
    changing = args.command in {"retry", "purge"} and not getattr(args, "dry_run", False)
    reading = args.command == "show"
    if not (releasing or changing or reading):
        return
    engine = make_engine(config.database_url)
    with Session(engine) as session:
        command = f"intake {args.command}" + (" release" if releasing else "")
        references = [args.reference] if reading else [getattr(args, "reference", None)]
        for reference in args.references if releasing else references:
            audit.record(session, "command", reference, command, current_user())
        session.commit()
    engine.dispose()


def cmd_quarantine(config: Config, args: argparse.Namespace) -> int:
    """`list`: quarantined inputs, no content. `release`: a records keyholder takes them in
    again under the current config (`pipeline.quarantine`); 1 when one stays quarantined."""
    if args.action == "list":
        return quarantine.list_command(config, args.json)
    setup_logging()
    return quarantine.release_command(config, args.references, args.gnupghome)


def cmd_show(config: Config, args: argparse.Namespace) -> int:
    """One stored report, decrypted with a records keyholder's key, on standard output."""
    return quarantine.show_command(config, args.reference, args.gnupghome)


def cmd_db(config: Config, args: argparse.Namespace) -> int:
    """`upgrade`: the schema to the newest revision, as the daemon does at start (under the same
    lock). `current`: the database's revision and the newest; 0 when they are the same."""
    engine = open_engine(config.database_url)
    try:
        if args.action == "upgrade":
            before, head = upgrade(engine)
            done = {None: f"created at {head}", head: f"is current ({head})"}
            print(f"database schema {done.get(before, f'upgraded from {before} to {head}')}")
            return 0
        current, head = schema_revision(engine)
    finally:
        engine.dispose()
    print(f"database: {shown(engine.url)}")
    print(f"revision: {current or 'none (no schema yet, or one from before migrations)'}")
    print(f"head: {head}")
    print("current: yes" if current == head else "current: no (intake db upgrade, or start it)")
    return 0 if current == head else 1


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    return serve(config, once=args.once, verbose=args.verbose)


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "check-rules": cmd_check_rules,
    "route": cmd_route,
    "status": cmd_status,
    "run": cmd_run,
    "retry": cmd_retry,
    "purge": cmd_purge,
    "quarantine": cmd_quarantine,
    "show": cmd_show,
    "db": cmd_db,
    "doctor": doctor.command,
    "keys": keys.command,
}


DEFAULT_CONFIG = "/etc/report-intake/intake.toml"


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on standard error, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_config(parser: argparse.ArgumentParser) -> None:
    """The --config option every command takes (`read_config` finds the file without it)."""
    where = f"default: $INTAKE_CONFIG, else {DEFAULT_CONFIG}"
    parser.add_argument("--config", help=f"the TOML config file ({where})")


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = Parser(prog="intake", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = sub.add_parser(name)
        if name not in ("quarantine", "db", "keys"):  # their own commands take --config
            add_config(command)
    db = sub.choices["db"].add_subparsers(dest="action", required=True)
    add_config(db.add_parser("upgrade", help="the schema to the newest revision"))
    add_config(db.add_parser("current", help="exit 0 when the schema is the newest, else 1"))
    sub.choices["check-rules"].add_argument(
        "--strict", action="store_true", help="warnings are errors too (exit 1)"
    )
    route = sub.choices["route"]
    route.add_argument("--dry-run", action="store_true", required=True, help="write nothing")
    route.add_argument("--json", action="store_true", help="one JSON object")
    route.add_argument("--form", help="read MESSAGE as an export of this [[forms]] id")
    route.add_argument("message", help="an RFC 5322 message file (.eml), or an export with --form")
    sub.choices["status"].add_argument("--json", action="store_true")
    sub.choices["run"].epilog = EXIT_HELP
    sub.choices["run"].formatter_class = argparse.RawDescriptionHelpFormatter
    sub.choices["run"].add_argument("--once", action="store_true", help="run every job once")
    sub.choices["run"].add_argument("--verbose", action="store_true")
    sub.choices["purge"].add_argument("--dry-run", action="store_true", help="list, change nothing")
    retry = sub.choices["retry"]
    retry.add_argument("--reference", help="only this report's dead letters (R-YYYY-NNNNNN)")
    retry.add_argument("--send", action="store_true", help="then run every job once")
    add_quarantine_parsers(sub)
    doctor.add_arguments(sub.choices["doctor"])
    keys.add_arguments(sub.choices["keys"], add_config)
    return parser


def add_quarantine_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`quarantine list|release` and `show`."""
    keyholder = "a records keyholder's GnuPG home, holding a secret key of gpg.records_keys"
    actions = sub.choices["quarantine"].add_subparsers(dest="action", required=True)
    for action in ("list", "release"):
        add_config(actions.add_parser(action))
    actions.choices["list"].add_argument("--json", action="store_true")
    release = actions.choices["release"]
    release.add_argument("references", nargs="+", metavar="REFERENCE")
    release.add_argument("--gnupghome", required=True, type=Path, help=keyholder)
    show = sub.choices["show"]
    show.add_argument("reference", metavar="REFERENCE")
    show.add_argument("--gnupghome", required=True, type=Path, help=keyholder)


def read_config(given: str | None) -> Config:
    """The config at `given` (--config), else at $INTAKE_CONFIG, else at DEFAULT_CONFIG;
    ConfigError in one line when it is not there or cannot be read, saying where the path
    came from."""
    from_env = os.environ.get("INTAKE_CONFIG")
    path = Path(given or from_env or DEFAULT_CONFIG).absolute()
    origin = ""
    if not given:
        origin = " (from INTAKE_CONFIG)" if from_env else " (give --config FILE or INTAKE_CONFIG)"
    try:
        return load_config(path)
    except ConfigError as exc:
        raise ConfigError(f"{exc}{origin}") from None


def database_key(config: Config) -> str:
    """The config key that gives the database: database.url, or data_dir for the default."""
    return "database.url" if config.database.url else "data_dir"


def changes_data(args: argparse.Namespace, config: Config) -> bool:
    """Whether the command writes to data_dir or the database (`show` and `doctor --send-test`:
    audit lines), which only the daemon's user may do. `show` writes its audit line only, so on
    PostgreSQL it is the database's permissions that decide; a SQLite database is in data_dir.
    A release takes the input in again through the daemon's gpg homedir, in data_dir."""
    action = getattr(args, "action", None)
    return (
        args.command in {"run", "retry"}
        or (args.command == "show" and config.database_url.startswith("sqlite"))
        or (args.command == "purge" and not args.dry_run)
        or (args.command, action) in {("db", "upgrade"), ("quarantine", "release")}
        or (args.command == "doctor" and args.send_test is not None)
    )


def other_user(config: Config, args: argparse.Namespace, argv: Sequence[str]) -> str | None:
    """Why this command may not run as this user, in one line saying how to run it, or None:
    a command that `changes_data` runs as data_dir's owner only (root too is another user: a
    file root made there, or a database root created or upgraded, locks the daemon out). A
    data_dir not made yet would be made by this command: the owner of the nearest folder that
    is there counts, unless root owns it (/var/lib or /tmp say nothing of the daemon's user)."""
    folder = config.data_dir.absolute()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    owner = existing.stat().st_uid
    if (
        not changes_data(args, config)
        or not existing.is_dir()
        or owner == os.geteuid()
        or (owner == 0 and existing != folder)
    ):
        return None
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = f"#{owner}"  # as sudo -u takes a uid
    given = [*argv, *([] if args.config else ["--config", str(config.source)])]
    command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
    where = f"data_dir {folder}" if existing == folder else f"{existing}, where data_dir goes,"
    return (
        f"{config.source}: {where} belongs to {name}, and intake {command} changes "
        f"what it holds: run it as {name}, or what it makes as {current_user()} locks the daemon "
        f"out: sudo -u {shlex.quote(name)} {shlex.join(['intake', *given])}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The `intake` command; its exit status. Output cut short by a reader that went away
    (`intake status | head`) ends it quietly, with status 141 as SIGPIPE would."""
    try:
        try:
            return dispatch(list(sys.argv[1:] if argv is None else argv))
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more at exit
        return 141


def dispatch(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = read_config(args.config)
        refusal = other_user(config, args, argv)
        if refusal:
            print(refusal, file=sys.stderr)
            return 1
        audit_command(config, args)
        return COMMANDS[args.command](config, args)
    except (ConfigError, StartupError, CryptoError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except DatabaseError as exc:  # an unknown dialect, a folder or database not there
        print(f"{config.source}: {database_key(config)}: {exc}", file=sys.stderr)
        return 1
    except OperationalError as exc:  # the database went away while in use
        url = database_url(config.database_url)
        print(f"{config.source}: {database_key(config)}: {cannot_open(url, exc)}", file=sys.stderr)
        return 1
