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
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from pipeline import audit, quarantine
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
from pipeline.daemon import EXIT_HELP, run_forever, run_once
from pipeline.intake.exports import ExportError
from pipeline.intake.forms import FormSource, RowError, known_categories, row_report
from pipeline.outbox import release_held, requeue
from pipeline.parse import ParseError, parse_email
from pipeline.retention import due_for_purge, purge
from pipeline.rules import RuleSet, evaluate
from pipeline.status import read_status
from pipeline.store import make_engine

OWN_LOGGERS = ("pipeline", "__main__")


def _own_or_warning(record: logging.LogRecord) -> bool:
    """Let through our own records at any level, and others' from WARNING up: libraries log
    protocol data at DEBUG and INFO (imapclient's commands and literals, gnupg's status lines,
    aiosmtpd's and SQLAlchemy's traffic), which can carry message content."""
    own = record.name in OWN_LOGGERS or record.name.startswith("pipeline.")
    return own or record.levelno >= logging.WARNING


def setup_logging(verbose: bool = False) -> None:
    """Log to standard error; `verbose` opens our own DEBUG lines, never third-party ones."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_own_or_warning)
    if verbose:
        logging.getLogger(__name__).debug("debug logging on: our own lines only")


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
    (`pipeline.status`); never content."""
    engine = make_engine(config.database_url)
    try:
        status = read_status(engine, source_names(config))
    finally:
        engine.dispose()
    print(status.to_json() if args.json else "\n".join(status.lines()))
    return 0


def cmd_retry(config: Config, args: argparse.Namespace) -> int:
    """Send held referrals whose key is fixed now, and put dead letters back in the queue."""
    setup_logging()
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
    engine = make_engine(config.database_url)
    try:
        due = due_for_purge(engine, config.retention)
        for item in due:
            verb = "would purge" if args.dry_run else "purging"
            print(f"{verb} {item.reference} ({item.state} since {item.updated_at:%Y-%m-%d})")
        if not args.dry_run:
            purge(engine, due, actor=current_user())
        print(f"{len(due)} report(s) {'due' if args.dry_run else 'purged'}")
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


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    app = App.open(config)
    try:
        return run_once(app) if args.once else run_forever(app)
    finally:
        app.close()


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "check-rules": cmd_check_rules,
    "route": cmd_route,
    "status": cmd_status,
    "run": cmd_run,
    "retry": cmd_retry,
    "purge": cmd_purge,
    "quarantine": cmd_quarantine,
    "show": cmd_show,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intake", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = sub.add_parser(name)
        if name != "quarantine":  # its own commands (list, release) take --config
            command.add_argument("--config", required=True, help="the TOML config file")
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
    return parser


def add_quarantine_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`quarantine list|release` and `show`."""
    keyholder = "a records keyholder's GnuPG home, holding a secret key of gpg.records_keys"
    actions = sub.choices["quarantine"].add_subparsers(dest="action", required=True)
    for action in ("list", "release"):
        actions.add_parser(action).add_argument("--config", required=True, help="the TOML config")
    actions.choices["list"].add_argument("--json", action="store_true")
    release = actions.choices["release"]
    release.add_argument("references", nargs="+", metavar="REFERENCE")
    release.add_argument("--gnupghome", required=True, type=Path, help=keyholder)
    show = sub.choices["show"]
    show.add_argument("reference", metavar="REFERENCE")
    show.add_argument("--gnupghome", required=True, type=Path, help=keyholder)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        audit_command(config, args)
        return COMMANDS[args.command](config, args)
    except (ConfigError, StartupError, CryptoError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except OperationalError as exc:  # e.g. `status` before the daemon made the database
        url = make_url(config.database_url).render_as_string(hide_password=True)
        cause = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        print(
            f"{config.source}: database.url: cannot open {url}: {cause} (has the daemon run "
            "yet? is data_dir right? is the database server up?)",
            file=sys.stderr,
        )
        return 1
