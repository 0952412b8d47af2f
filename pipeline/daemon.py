"""Daemon: an `App` in, APScheduler jobs (poll the sources, drain the outbox, check keys daily,
purge what retention says is due daily) out.

`run_once` runs every job once and returns an exit status (0 when nothing failed);
`run_forever` runs the jobs on their intervals until SIGTERM or SIGINT, then lets the job in
flight finish and stops.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from types import FrameType

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.blocking import BlockingScheduler

from pipeline.app import App
from pipeline.intake import describe
from pipeline.intake.idle import IdleWatcher
from pipeline.retention import purge_due

log = logging.getLogger(__name__)


def guarded(job: Callable[[], bool], name: str) -> bool:
    """Run a job; an unexpected error is logged by class and message we own, no traceback
    (a traceback's values could carry report content), and the daemon goes on."""
    try:
        return job()
    except Exception as exc:
        log.error("%s failed: %s", name, describe(exc))
        return False


def poll_job(app: App) -> bool:
    return guarded(lambda: not any(result.errors for result in app.poll()), "poll")


def drain_job(app: App) -> bool:
    return guarded(lambda: not app.drain().errors, "outbox")


def key_job(app: App) -> bool:
    """The daily check of keys: unusable service keys, keys about to expire."""

    def check() -> bool:
        app.check_keys()
        return True

    return guarded(check, "key check")


def purge_job(app: App) -> bool:
    """The daily retention purge (records past their period), then the database gives erased
    space back (SQLite WAL checkpoint, PostgreSQL VACUUM)."""

    def run() -> bool:
        purged = purge_due(app.engine, app.config.retention)
        if purged:
            log.info("retention: %d report(s) purged", purged)
        return True

    return guarded(run, "retention purge")


def run_once(app: App) -> int:
    """Poll every source, then send what is due. 0 when both went without an error."""
    ok = poll_job(app)
    ok = drain_job(app) and ok
    return 0 if ok else 1


class Wakeups:
    """IDLE's "new mail" while a poll runs is not lost: the poll runs again. A poll that took
    something in wakes the outbox at once, so a report does not wait for `outbox_seconds`."""

    def __init__(self, scheduler: BlockingScheduler, app: App) -> None:
        self.scheduler = scheduler
        self.app = app
        self.pending = threading.Event()

    def new_mail(self) -> None:
        self.pending.set()
        self._run_now("poll")

    def poll(self) -> bool:
        return guarded(self._poll_until_quiet, "poll")

    def _poll_until_quiet(self) -> bool:
        ok = True
        self.pending.set()
        while self.pending.is_set():
            self.pending.clear()
            results = self.app.poll()
            ok = ok and not any(result.errors for result in results)
            if any(result.counts.get("stored") for result in results):
                self._run_now("outbox")
        return ok

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
