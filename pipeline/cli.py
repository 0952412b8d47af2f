"""The `intake` command (also `python -m pipeline`): admins' checks, dry runs and status.

intake check-rules --config FILE            exit 0, or 1 with `file:line: message` lines
intake route --config FILE --dry-run --json MESSAGE.eml
intake route --config FILE --dry-run --json --form FORM_ID EXPORT_FILE
intake status --config FILE [--json]
intake run --config FILE [--once]           the daemon (same as run_daemon.py)
intake retry --config FILE [--reference R] [--send]   held referrals and dead letters again
intake purge --config FILE [--dry-run]      remove records past their retention period
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session

from pipeline import audit
from pipeline.anonymity import apply_anonymity
from pipeline.app import App, StartupError, load_rules, scan_keys
from pipeline.audit import current_user
from pipeline.config import Config, ConfigError, load_config
from pipeline.crypto import CryptoError
from pipeline.daemon import run_forever, run_once
from pipeline.intake.exports import ExportError
from pipeline.intake.forms import FormSource, RowError, known_categories, row_report
from pipeline.outbox import release_held, requeue
from pipeline.parse import ParseError, parse_email
from pipeline.retention import due_for_purge, purge
from pipeline.rules import RuleSet, evaluate
from pipeline.store import make_engine, needs_attention, recent_alerts, status_counts

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


def cmd_check_rules(config: Config, _args: argparse.Namespace) -> int:
    """Like a linter: problems on standard output, one `file:line: message` a line."""
    try:
        load_rules(config, scan_keys(config))
    except StartupError as exc:
        print(exc)
        return 1
    print(f"{config.rules.dir}: rules, services, keys and templates are consistent")
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
    raw = Path(args.message).read_bytes()
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
    engine = make_engine(config.database_url)
    counts = status_counts(engine)
    problems, alerts = needs_attention(engine), recent_alerts(engine)
    engine.dispose()
    if args.json:
        print(json.dumps(counts))
        return 0
    for group, states in counts.items():
        print(f"{group}: " + ", ".join(f"{state} {n}" for state, n in states.items()))
    for line in problems:
        print(f"  needs attention: {line}")
    for line in alerts:
        print(f"  alert: {line}")
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
    """One audit line for an admin command that changes something."""
    if args.command not in {"retry", "purge"} or getattr(args, "dry_run", False):
        return
    engine = make_engine(config.database_url)
    with Session(engine) as session:
        reference = getattr(args, "reference", None)
        audit.record(session, "command", reference, f"intake {args.command}", current_user())
        session.commit()
    engine.dispose()


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
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intake", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = sub.add_parser(name)
        command.add_argument("--config", required=True, help="the TOML config file")
    route = sub.choices["route"]
    route.add_argument("--dry-run", action="store_true", required=True, help="write nothing")
    route.add_argument("--json", action="store_true", help="one JSON object")
    route.add_argument("--form", help="read MESSAGE as an export of this [[forms]] id")
    route.add_argument("message", help="an RFC 5322 message file (.eml), or an export with --form")
    sub.choices["status"].add_argument("--json", action="store_true")
    sub.choices["run"].add_argument("--once", action="store_true", help="run every job once")
    sub.choices["run"].add_argument("--verbose", action="store_true")
    sub.choices["purge"].add_argument("--dry-run", action="store_true", help="list, change nothing")
    retry = sub.choices["retry"]
    retry.add_argument("--reference", help="only this report's dead letters (R-YYYY-NNNNNN)")
    retry.add_argument("--send", action="store_true", help="then run every job once")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        audit_command(config, args)
        return COMMANDS[args.command](config, args)
    except (ConfigError, StartupError, CryptoError) as exc:
        print(exc, file=sys.stderr)
        return 1
