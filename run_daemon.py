#!/usr/bin/env python3
"""Run the report-intake daemon.

python run_daemon.py --config intake.toml          run until SIGTERM/SIGINT
python run_daemon.py --config intake.toml --once   run every job once; exit 0 if all went well
python run_daemon.py --demo                        a self-contained demo run (no servers needed)

With --once the exit status says what needs an admin: 1 could not start, 2 a source could not
be read, 4 mail could not be handed to the SMTP server, 8 a report was quarantined or routed to
no service; they add up (see pipeline/daemon.py). Run until stopped, it exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.app import StartupError
from pipeline.config import ConfigError, load_config
from pipeline.crypto import CryptoError
from pipeline.daemon import EXIT_HELP, Exit, serve
from pipeline.logs import setup_logging


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Run the report-intake daemon.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="the TOML config file")
    parser.add_argument("--once", action="store_true", help="run every job once and exit")
    parser.add_argument("--demo", action="store_true", help="run once on a generated demo setup")
    parser.add_argument("--demo-dir", default="demo-var", help="folder for the demo (demo-var)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    setup_logging(args.verbose)
    if args.demo:
        from pipeline.demo import run_demo

        return run_demo(Path(args.demo_dir))
    if not args.config:
        parser.error("--config is required (or --demo)")
    try:
        return serve(load_config(args.config), once=args.once, verbose=args.verbose)
    except (ConfigError, StartupError, CryptoError) as exc:
        print(exc, file=sys.stderr)
        return Exit.START


if __name__ == "__main__":
    sys.exit(main())
