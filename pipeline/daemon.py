"""Daemon: an `App` in, APScheduler jobs (poll the sources, drain the outbox, check keys daily,
purge what retention says is due daily) out.

`run_once` polls every source once, then sends what is due, and returns an exit status: the sum
of the `Exit` bits for what needs an admin after this run (`intake run --once` and
`run_daemon.py --once` exit with it):

  0  all went well
  1  could not start: the config, rules, templates or keys are refused (nothing was done)
  2  a source could not be read (server, login, password file, folder, export layout, an item)
  4  mail could not be handed to the SMTP server in this run (a temporary or permanent failure,
     or the queue is held)
  8  a report was quarantined, or routed to no service (unrouted), in this run

e.g. 6: a source failed and mail is waiting. `intake status` says what and why.
`run_forever` runs the jobs on their intervals until SIGTERM or SIGINT, then lets the job in
flight finish, stops and exits 0.
"""

from __future__ import annotations

import enum
import logging
import signal
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from types import FrameType
from typing import TypeVar

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.blocking import BlockingScheduler

from pipeline.app import App
from pipeline.intake import PollResult, describe
from pipeline.intake.idle import IdleWatcher
from pipeline.outbox import DrainResult
from pipeline.retention import purge_due

log = logging.getLogger(__name__)

T = TypeVar("T")


class Exit(enum.IntFlag):
    """`run --once` exit bits (see the module docstring); they add up."""

    OK = 0
    START = 1
    SOURCE = 2
    MAIL = 4
    REPORTS = 8


EXIT_HELP = """exit status with --once (the bits add up: 6 = 2 + 4):
  0  all went well
  1  could not start: config, rules, templates or keys refused
  2  a source could not be read (see intake status)
  4  mail could not be handed to the SMTP server in this run
  8  a report was quarantined or routed to no service in this run"""


def guarded(job: Callable[[], T], name: str) -> T | None:
    """Run a job; an unexpected error is logged by class and message we own, no traceback
    (a traceback's values could carry report content), the job gives None and the daemon goes
    on."""
    try:
        return job()
    except Exception as exc:
        log.error("%s failed: %s", name, describe(exc))
        return None


def poll_exit(results: list[PollResult] | None) -> Exit:
    """SOURCE when a source failed (or the poll itself did), REPORTS when a report was
    quarantined or unrouted."""
    if results is None:
        return Exit.SOURCE
    status = Exit.SOURCE if any(result.errors for result in results) else Exit.OK
    unsettled = ("quarantined", "unrouted")
    if any(result.counts.get(outcome) for result in results for outcome in unsettled):
        status |= Exit.REPORTS
    return status


def drain_exit(result: DrainResult | None) -> Exit:
    """MAIL when some mail was not handed to the SMTP server: a failure, a retry, a held queue,
    an error (or the drain itself failed)."""
    if result is None:
        return Exit.MAIL
    unsent = result.failed or result.retrying or result.held or result.errors
    return Exit.MAIL if unsent else Exit.OK


def poll_job(app: App) -> list[PollResult] | None:
    return guarded(app.poll, "poll")


def drain_job(app: App) -> DrainResult | None:
    return guarded(app.drain, "outbox")


def key_job(app: App) -> None:
    """The daily check of keys: unusable service keys, keys about to expire."""
    guarded(app.check_keys, "key check")


def purge_job(app: App) -> bool:
    """The daily retention purge (records past their period), then the database gives erased
    space back (SQLite WAL checkpoint, PostgreSQL VACUUM). True when it went without error."""

    def run() -> bool:
        purged = purge_due(app.engine, app.config.retention)
        if purged:
            log.info("retention: %d report(s) purged", purged)
        return True

    return bool(guarded(run, "retention purge"))


def run_once(app: App) -> int:
    """Poll every source, then send what is due; the `Exit` bits of what needs an admin."""
    status = poll_exit(poll_job(app))
    status |= drain_exit(drain_job(app))
    return int(status)


class Wakeups:
    """IDLE's "new mail" while a poll runs is not lost: the poll runs again (at most
    `ROUNDS` times in one job run, then the job is scheduled again, so mail that never stops
    coming cannot hold the job forever). A poll that took something in wakes the outbox at
    once, so a report does not wait for `outbox_seconds`."""

    ROUNDS = 10

    def __init__(self, scheduler: BlockingScheduler, app: App) -> None:
        self.scheduler = scheduler
        self.app = app
        self.pending = threading.Event()

    def new_mail(self) -> None:
        self.pending.set()
        self._run_now("poll")

    def poll(self) -> None:
        guarded(self._poll_until_quiet, "poll")

    def _poll_until_quiet(self) -> None:
        self.pending.set()
        for _ in range(self.ROUNDS):
            if not self.pending.is_set():
                return
            self.pending.clear()
            results = self.app.poll()
            if any(r.counts.get("stored") or r.counts.get("unrouted") for r in results):
                self._run_now("outbox")
        if self.pending.is_set():
            self._run_now("poll")

    def _run_now(self, job_id: str) -> None:
        with suppress(JobLookupError):  # shutting down: the jobs are gone
            self.scheduler.modify_job(job_id, next_run_time=datetime.now(UTC))


def run_forever(app: App) -> int:
    schedule = app.config.schedule
    scheduler = BlockingScheduler(timezone="UTC")
    wakeups = Wakeups(scheduler, app)
    options = {
        "max_instances": 1,
        "coalesce": True,
        "misfire_grace_time": None,
        "next_run_time": datetime.now(UTC),  # run both jobs at start, then on their interval
    }
    scheduler.add_job(wakeups.poll, "interval", seconds=schedule.poll_seconds, id="poll", **options)
    scheduler.add_job(
        drain_job, "interval", [app], seconds=schedule.outbox_seconds, id="outbox", **options
    )
    scheduler.add_job(key_job, "interval", [app], hours=24, max_instances=1, coalesce=True)
    scheduler.add_job(purge_job, "interval", [app], hours=24, id="purge", **options)
    watcher = _idle_watcher(app, wakeups.new_mail)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping after the job in flight", signal.Signals(signum).name)
        # Not from inside the handler: it may have interrupted the scheduler's own loop.
        threading.Thread(target=scheduler.shutdown, kwargs={"wait": False}).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "daemon started: poll every %ss, outbox every %ss",
        schedule.poll_seconds,
        schedule.outbox_seconds,
    )
    if watcher:
        watcher.start()
    try:
        scheduler.start()
    finally:
        if watcher:
            watcher.stop()
    log.info("daemon stopped")
    return 0


def _idle_watcher(app: App, wake_poller: Callable[[], None]) -> IdleWatcher | None:
    imap = app.config.imap
    return IdleWatcher(imap, wake_poller) if imap and imap.idle else None
