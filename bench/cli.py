"""`python -m bench`: the benchmark of issue 11, floor and project in one run.

In: the command line (`--quick`, `--reports N`, `--json PATH|-`, `--postgres URL`, ...).
Out: a table on standard output and, with `--json`, the same figures as JSON (to a file, or
to standard output instead of the table with `--json -`). Exit status 0 when every pass ran
and the project delivered everything it owed, 1 otherwise (the figures are still printed).

The passes, in order: the backlog drain (floor, then the project on SQLite, then on
PostgreSQL when a server answers), the gpg count (a separate pass; with `--quick`, counted in
the drain passes instead), IDLE latency of the floor, the daemon (IDLE latency, then memory),
the form export. bench/passes.py says how each is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import floor, passes
from bench.backlog import (
    Message,
    large_message,
    make_backlog,
    single_referral,
    to_both_services,
)
from bench.output import figures_json, table
from bench.world import DEFAULT_POSTGRES, REPO, PostgresDatabase, World, postgres_admin


@dataclass(frozen=True)
class Scale:
    reports: int
    count_reports: int  # 0: count gpg processes in the drain passes, not in a pass of their own
    memory_messages: int
    memory_large: int
    large_bytes: int
    idle_rounds: int
    form_rows: int


FULL = Scale(1000, 100, 100, 10, 25 * 1024 * 1024, 30, 5000)
QUICK = Scale(10, 0, 6, 2, 1024 * 1024, 3, 50)
LONG = 3600.0  # seconds one `intake run --once` may take
SHORT = 120.0  # one IDLE round; the memory backlog, per 10 messages
MIN_ROWS_PER_SECOND = 5.0  # slower than this and the forms pass gives up on the export


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark report-intake against the floor of its work (issue 11).",
    )
    parser.add_argument("--quick", action="store_true", help="a small run (~1 min; the test)")
    parser.add_argument("--reports", type=int, help="reports in the backlog (default 1000)")
    parser.add_argument("--form-rows", type=int, help="rows in the form export (default 5000)")
    parser.add_argument("--idle-rounds", type=int, help="IDLE latency rounds (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="the backlog's seed (default 1)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON ('-': stdout)")
    parser.add_argument("--keep", action="store_true", help="keep the bench's folder and logs")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--postgres",
        metavar="URL",
        help=f"PostgreSQL server to use (must answer); default: {DEFAULT_POSTGRES} if it answers",
    )
    where.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL pass")
    args = parser.parse_args(argv)
    for name in ("reports", "form_rows", "idle_rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def scale_of(args: argparse.Namespace) -> Scale:
    base = QUICK if args.quick else FULL
    reports = args.reports or base.reports
    return Scale(
        reports=reports,
        count_reports=min(reports, base.count_reports),
        memory_messages=base.memory_messages,
        memory_large=base.memory_large,
        large_bytes=base.large_bytes,
        idle_rounds=args.idle_rounds or base.idle_rounds,
        form_rows=args.form_rows or base.form_rows,
    )


def postgres_url(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(the admin URL to use, or None; why not, or None)."""
    if args.no_postgres:
        return None, "skipped: --no-postgres"
    why = postgres_admin(args.postgres or DEFAULT_POSTGRES)
    if why and args.postgres:
        raise SystemExit(f"bench: --postgres: {why}")
    return (None, f"skipped: {why}") if why else (args.postgres or DEFAULT_POSTGRES, None)


def run(world: World, scale: Scale, seed: int, postgres: str | None) -> dict[str, Any]:
    """Every pass; the raw figures by name (bench/output.py names them), and each pass's
    own seconds under "pass_seconds"."""
    found: dict[str, Any] = {"pass_seconds": {}}

    def timed(name: str, job: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return job()
        finally:
            found["pass_seconds"][name] = round(time.monotonic() - started, 1)

    backlog = make_backlog(scale.reports, seed)
    found["backlog"] = backlog
    timed("drain", lambda: drains(world, backlog, scale, postgres, found))
    if scale.count_reports:
        counted = make_backlog(scale.count_reports, seed, first=scale.reports)
        found["gpg"] = timed("gpg_count", lambda: passes.gpg_count(world, counted, LONG))
    rounds = single_referral(scale.idle_rounds + 1, seed, first=2 * scale.reports)
    found["idle_floor"] = timed("idle_floor", lambda: passes.floor_latencies(world, rounds, SHORT))
    normal, large = memory_backlog(scale, seed)
    found["idle_project"], found["memory"] = timed(
        "daemon", lambda: passes.daemon(world, rounds, normal, large, scale.large_bytes, SHORT)
    )
    export_timeout = SHORT + scale.form_rows / MIN_ROWS_PER_SECOND
    warm = single_referral(1, seed, first=3 * scale.reports)[0]
    mail = to_both_services(3 * scale.reports + 1, seed)
    found["forms"] = timed(
        "forms", lambda: passes.forms(world, scale.form_rows, warm, mail, seed, export_timeout)
    )
    return found


def drains(
    world: World, backlog: list[Message], scale: Scale, postgres: str | None, found: dict[str, Any]
) -> None:
    """The floor, then the project on SQLite (and PostgreSQL), on the same backlog. Without a
    separate counting pass, the floor and the project count their gpg processes here, all of
    them through counting wrappers."""
    names = () if scale.count_reports else ("floor", "sqlite", "postgres")
    wrappers = {name: world.counting_gpg(name) for name in names}
    database = PostgresDatabase(postgres) if postgres else None
    deployments = {"sqlite": world.deployment("sqlite", gpg_binary=_binary(wrappers, "sqlite"))}
    if database:
        deployments["postgres"] = world.deployment(
            "postgres", database_url=database.url, gpg_binary=_binary(wrappers, "postgres")
        )
    floor_gpg = str(_binary(wrappers, "floor") or "gpg")
    try:
        starts = {name: passes.warm_up(d, LONG) for name, d in deployments.items()}
        for _script, count_file in wrappers.values():
            count_file.write_text("")
        for name, deployment in deployments.items():
            world.append(backlog)
            if name == "sqlite":
                found["floor"] = floor.drain(world, backlog, floor_gpg)
            found[name] = passes.drain(world, deployment, backlog, name, LONG)
            found[name].first_start = starts[name]
    finally:
        for deployment in deployments.values():
            deployment.close()
        if database:
            database.drop()
    if wrappers:
        found["gpg"] = passes.GpgCount(
            len(backlog),
            passes.count_commands(wrappers["floor"][1]),
            passes.count_commands(wrappers["sqlite"][1]),
            separate=False,
        )


def memory_backlog(scale: Scale, seed: int) -> tuple[list[Message], list[Message]]:
    """The memory pass's ordinary reports and its reports with a large attachment."""
    first = 4 * scale.reports
    normal = make_backlog(scale.memory_messages - scale.memory_large, seed + 1, first=first)
    large = [
        large_message(first + scale.memory_messages + i, seed, scale.large_bytes)
        for i in range(scale.memory_large)
    ]
    return normal, large


def _binary(wrappers: dict[str, tuple[Path, Path]], name: str) -> Path | None:
    return wrappers[name][0] if name in wrappers else None


def environment(args: argparse.Namespace, scale: Scale) -> dict[str, Any]:
    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    gpg_version = subprocess.run(["gpg", "--version"], capture_output=True, text=True).stdout
    return {
        "quick": args.quick,
        "seed": args.seed,
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "gpg": gpg_version.splitlines()[0] if gpg_version else None,
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "scale": asdict(scale),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = scale_of(args)
    postgres, postgres_note = postgres_url(args)
    about = environment(args, scale)
    with World(keep=args.keep) as world:
        raw = run(world, scale, args.seed, postgres)
    about["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    figures = figures_json(about, raw, postgres_note)
    text = json.dumps(figures, indent=2)
    if args.json == "-":
        print(text)
    else:
        print(table(figures))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as out:
                out.write(text + "\n")
    return 0 if figures["complete"] else 1
