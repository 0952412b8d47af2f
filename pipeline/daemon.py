"""Daemon: an `App` in, APScheduler jobs (poll the sources, drain the outbox, check keys daily,
purge what retention says is due daily) out.

`run_once` polls every source until none has more waiting, then drains the outbox (again while
a drain stopped at its `MAX_ROWS`), and returns an exit status: the sum
of the `Exit` bits for what needs an admin after this run (`intake run --once` and
`run_daemon.py --once` exit with it):

  0  all went well
  1  could not start: the config, rules, templates or keys are refused (nothing was done)
  2  a source could not be read (server, login, password file, folder, export layout, an item)
  4  mail could not be handed to the SMTP server in this run (a temporary or permanent failure,
     or the queue is held)
  8  a report was quarantined, or routed to no service (unrouted), in this run

e.g. 6: a source failed and mail is waiting. `intake status` says what and why. On a terminal
`run_once` shows the poll's progress (`pipeline.logs.Progress`).

`run_forever` runs the jobs on their intervals until SIGTERM or SIGINT: on the signal it logs
"stopping" and sends STOPPING=1 at once, lets the jobs in flight finish (saying every
`STOP_NOTICE` seconds which it waits for), then logs "daemon stopped" and exits 0. Under systemd
(`Type=notify`, deploy/report-intake.service) it sends READY=1 once the scheduler runs and
WATCHDOG=1 from a scheduler job (`pipeline.notify`), but only while the daemon is healthy
(`Liveness`): the poll and outbox jobs show signs of life (a poll starting, each input a source
hands over, each mail handed to the SMTP server or refused), and while one of them runs with no
sign of life for `STALL_SECONDS` the pings are withheld, so systemd restarts the daemon. After
each poll, outbox and purge job the `[metrics] textfile` is rewritten (`pipeline.metrics`).

`serve` is `intake run` and `run_daemon.py`: under glibc it has freed buffers of 128 KiB or more
go back to the system (`return_large_buffers`), applies `[logging]`, takes the instance lock
(SQLite is for one instance: a second daemon on the same database refuses to start; PostgreSQL
takes several, which coordinate with advisory locks), opens the `App` and runs. Every other
command that polls or sends (`intake retry --send`, the demo) takes the same lock.
"""

from __future__ import annotations

import ctypes
import enum
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from types import FrameType
from typing import TypeVar

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_SCHEDULER_START,
    JobExecutionEvent,
)
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.blocking import BlockingScheduler

from pipeline.app import App, StartupError, source_names
from pipeline.config import Config
from pipeline.crypto import ensure_private_dir
from pipeline.deliver import Transport, one_connection
from pipeline.intake import PollResult, describe
from pipeline.intake.forms import REMAINING, FormSource
from pipeline.intake.idle import IdleWatcher
from pipeline.logs import Progress, setup_logging, terminal
from pipeline.metrics import write_metrics
from pipeline.notify import Notifier
from pipeline.outbox import DrainResult
from pipeline.retention import archives_due, purge_archives, purge_due
from pipeline.store import DatabaseError, database_url, sqlite_path

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long the poll or outbox job may run with no sign of life before the daemon counts as hung.
# Between two signs of life lies one input or one mail: a few network steps, each bounded by
# `timeout_seconds` (30 s by default), and its encryption, or one IMAP fetch of at most
# `imap.GROUP_BYTES` (or one larger message); a backlog of any size beats all along.
STALL_SECONDS = 600.0
STOP_NOTICE = 30.0  # while stopping, how often it says which jobs it waits for
LOCK_ADVICE = (
    "SQLite is for one instance: stop that one, or set database.url to a PostgreSQL database to "
    "run several"
)


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


def metrics_job(app: App) -> None:
    """Rewrite the `[metrics] textfile`, when one is set (after each job)."""
    path = app.config.metrics.textfile
    if path is not None:
        guarded(lambda: write_metrics(app.engine, path, source_names(app.config)), "metrics")


def poll_job(app: App) -> list[PollResult] | None:
    results = guarded(app.poll, "poll")
    metrics_job(app)
    return results


def drain_job(app: App) -> DrainResult | None:
    result = guarded(app.drain, "outbox")
    metrics_job(app)
    return result


def key_job(app: App) -> None:
    """The daily check of keys: unusable service keys, keys about to expire."""
    guarded(app.check_keys, "key check")


def purge_job(app: App) -> bool:
    """The retention purge (records and mail past their period, then form archives), then the
    database gives erased space back (SQLite WAL checkpoint, PostgreSQL VACUUM). True when it
    went without error."""

    def run() -> bool:
        purged = purge_due(app.engine, app.config)
        if purged:
            log.info("retention: %d report(s) purged", purged)
        folders = [(s.archive_dir, s.form.path) for s in app.sources if isinstance(s, FormSource)]
        archives = purge_archives(app.engine, archives_due(folders, app.config.retention))
        if archives:
            log.info("retention: %d form archive(s) purged", archives)
        return True

    done = bool(guarded(run, "retention purge"))
    metrics_job(app)
    return done


def more_waiting(results: list[PollResult]) -> bool:
    """Whether a source left work for the next poll at once (a form export goes in slices)."""
    return any(result.counts.get(REMAINING) for result in results)


ONCE_ROUNDS = 2000  # polls one `run --once` makes at most (a 5 s slice each: about 3 hours)


def poll_all(app: App) -> list[PollResult] | None:
    """Poll every source, again while one has more waiting (at most `ONCE_ROUNDS` times: an
    export rewritten at every poll must not hold `run --once` forever): every round's results,
    or None when a poll failed."""
    results: list[PollResult] = []
    for _ in range(ONCE_ROUNDS):
        found = poll_job(app)
        if found is None:
            return None
        results += found
        if not more_waiting(found):
            break
    return results


def drain_all(app: App) -> DrainResult | None:
    """Drain, again while a drain stopped at its `MAX_ROWS` (at most `ONCE_ROUNDS` times): the
    figures of all of them, or None when one failed."""
    result = drain_job(app)
    for _ in range(ONCE_ROUNDS):
        if result is None or not result.full:
            break
        later = drain_job(app)
        if later is None:
            return None
        result.add(later)
    return result


def run_once(app: App) -> int:
    """Poll every source until none has more waiting, then send what is due; the `Exit` bits
    of what needs an admin. On a terminal the poll shows its progress."""
    console = terminal()
    progress = Progress(console) if console else None
    app.ingest.progress = progress
    try:
        status = poll_exit(poll_all(app))
    finally:
        app.ingest.progress = None
        if progress:
            progress.done()
    status |= drain_exit(drain_all(app))
    return int(status)


class Liveness:
    """Which jobs run, and when each last showed a sign of life (its start, `beat`). A watched
    job (poll, outbox) silent for longer than `STALL_SECONDS` is stalled: the daemon is not
    healthy and WATCHDOG=1 is withheld. Jobs that are not watched (the purge, which may VACUUM a
    large database, and the key check) count only for `wait_idle`, the end of the stop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.changed = threading.Condition()
        self.running: dict[str, float] = {}  # job: its last sign of life
        self.watched: set[str] = set()
        self.reported: set[str] = set()  # stalled jobs already logged (until their next beat)

    def tracked(self, name: str, job: Callable[[], object], *, watched: bool) -> Callable[[], None]:
        """`job` as a scheduler job that is known to run while it runs."""
        if watched:
            self.watched.add(name)

        def run() -> None:
            with self.changed:
                self.running[name] = self.clock()
            try:
                job()
            finally:
                with self.changed:
                    del self.running[name]
                    self.reported.discard(name)
                    self.changed.notify_all()

        return run

    def beat(self, name: str) -> None:
        """The job `name` made progress (when it runs)."""
        with self.changed:
            if name in self.running:
                self.running[name] = self.clock()
                self.reported.discard(name)

    def stalled(self) -> dict[str, float]:
        """The watched jobs silent for longer than `STALL_SECONDS`: for how many seconds."""
        now = self.clock()
        with self.changed:
            silent = {name: now - last for name, last in self.running.items()}
        return {
            name: seconds
            for name, seconds in silent.items()
            if name in self.watched and seconds > STALL_SECONDS
        }

    def healthy(self) -> bool:
        """True unless a watched job is stalled; a job newly stalled is logged (once)."""
        stalled = self.stalled()
        with self.changed:
            new = {name: seconds for name, seconds in stalled.items() if name not in self.reported}
            self.reported.update(new)
        for name, seconds in new.items():
            log.error(
                "watchdog: the %s job has shown no sign of life for %.0f s: WATCHDOG=1 withheld, "
                "so systemd restarts the daemon",
                name,
                seconds,
            )
        return not stalled

    def wait_idle(self) -> None:
        """Until no job runs, saying every `STOP_NOTICE` seconds which it waits for."""
        with self.changed:
            while self.running:
                if not self.changed.wait(STOP_NOTICE) and self.running:
                    log.info("stopping: waiting for the %s job(s)", ", ".join(self.running))


class PollProgress:
    """`Ingest.progress` in the daemon: every input a source announces or hands over, and every
    `Ingest.alive` (an `expect` of none), is a sign of life of the poll job."""

    def __init__(self, liveness: Liveness) -> None:
        self.liveness = liveness

    def expect(self, count: int) -> None:
        self.liveness.beat("poll")

    def taken(self) -> None:
        self.liveness.beat("poll")


@dataclass
class LiveTransport:
    """The App's transport in the daemon: every mail handed over (or refused) is a sign of life
    of the outbox job."""

    inner: Transport
    liveness: Liveness

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        try:
            self.inner.send(sender, recipient, message)
        finally:
            self.liveness.beat("outbox")

    def kept_open(self) -> AbstractContextManager[None]:
        """The inner transport's one connection for a drain (`deliver.one_connection`)."""
        return one_connection(self.inner)


class Wakeups:
    """IDLE's "new mail", or a source with more waiting (`more_waiting`: the next slice of a
    form export), while a poll runs is not lost: the poll runs again (at most `ROUNDS` times in
    one job run, then the job is scheduled again, so mail that never stops coming cannot hold
    the job forever). A poll that took something in wakes the outbox at once, so a report does
    not wait for `outbox_seconds`."""

    ROUNDS = 10

    def __init__(self, scheduler: BlockingScheduler, app: App, liveness: Liveness) -> None:
        self.scheduler = scheduler
        self.app = app
        self.liveness = liveness
        self.pending = threading.Event()

    def new_mail(self) -> None:
        self.pending.set()
        self._run_now("poll")

    def poll(self) -> None:
        guarded(self._poll_until_quiet, "poll")
        metrics_job(self.app)

    def _poll_until_quiet(self) -> None:
        self.pending.set()
        for _ in range(self.ROUNDS):
            if not self.pending.is_set():
                return
            self.pending.clear()
            self.liveness.beat("poll")
            results = self.app.poll()
            if any(r.counts.get("stored") or r.counts.get("unrouted") for r in results):
                self._run_now("outbox")
            if more_waiting(results):  # the next slice of a form export, mail polled between
                self.pending.set()

    def job_done(self, event: JobExecutionEvent) -> None:
        """After a poll job, with its instance released (a job asking to run again while it
        runs is skipped by the scheduler, and its next run put off by a whole interval): the
        poll runs again at once when something is still pending."""
        if event.job_id == "poll" and self.pending.is_set():
            self._run_now("poll")

    def _run_now(self, job_id: str) -> None:
        with suppress(JobLookupError):  # shutting down: the jobs are gone
            self.scheduler.modify_job(job_id, next_run_time=datetime.now(UTC))


def run_forever(app: App) -> int:
    schedule = app.config.schedule
    scheduler = BlockingScheduler(timezone="UTC")
    liveness = Liveness()
    app.ingest.progress = PollProgress(liveness)
    app.transport = LiveTransport(app.transport, liveness)
    wakeups = Wakeups(scheduler, app, liveness)
    notifier = Notifier()
    options = {
        "max_instances": 1,
        "coalesce": True,
        "misfire_grace_time": None,
        "next_run_time": datetime.now(UTC),  # run the jobs at start, then on their interval
    }
    poll = liveness.tracked("poll", wakeups.poll, watched=True)
    drain = liveness.tracked("outbox", partial(drain_job, app), watched=True)
    keys = liveness.tracked("key check", partial(key_job, app), watched=False)
    purge = liveness.tracked("purge", partial(purge_job, app), watched=False)
    scheduler.add_job(poll, "interval", seconds=schedule.poll_seconds, id="poll", **options)
    scheduler.add_job(drain, "interval", seconds=schedule.outbox_seconds, id="outbox", **options)
    scheduler.add_job(keys, "interval", hours=24, max_instances=1, coalesce=True)
    scheduler.add_job(purge, "interval", hours=schedule.purge_hours, id="purge", **options)
    if notifier.watchdog_seconds:

        def watchdog() -> None:
            if liveness.healthy():
                notifier.watchdog()

        seconds = notifier.watchdog_seconds
        scheduler.add_job(watchdog, "interval", seconds=seconds, id="watchdog", **options)
    watcher = _idle_watcher(app, wakeups.new_mail)
    started = (
        f"daemon started: poll every {schedule.poll_seconds}s, "
        f"outbox every {schedule.outbox_seconds}s, purge every {schedule.purge_hours:g}h"
    )
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():
            log.info("signal %s: already stopping, after the job(s) in flight", name)
            return
        stopping.set()
        log.info("signal %s: stopping after the job(s) in flight", name)
        notifier.stopping("stopping after the job(s) in flight")
        # Not from inside the handler: it may have interrupted the scheduler's own loop.
        threading.Thread(target=scheduler.shutdown, kwargs={"wait": False}).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler.add_listener(lambda _event: notifier.ready(started), EVENT_SCHEDULER_START)
    scheduler.add_listener(wakeups.job_done, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    log.info("%s", started)
    if watcher:
        watcher.start()
    try:
        scheduler.start()  # returns once stopped: jobs may still run
    finally:
        if watcher:
            watcher.stop()
    liveness.wait_idle()
    log.info("daemon stopped")
    return 0


def _idle_watcher(app: App, wake_poller: Callable[[], None]) -> IdleWatcher | None:
    imap = app.config.imap
    return IdleWatcher(imap, wake_poller) if imap and imap.idle else None


@contextmanager
def instance_lock(config: Config, advice: str = LOCK_ADVICE) -> Iterator[None]:
    """While it is held no other daemon, and no other command that polls or sends, runs on this
    SQLite database: an exclusive flock on `<database>.lock` beside it (with the holder's pid in
    it), or StartupError saying which process holds it, then `advice` (what to do instead).
    PostgreSQL takes several instances: nothing to lock."""
    try:
        database = sqlite_path(database_url(config.database_url))
    except DatabaseError as exc:
        raise StartupError(f"{config.source}: database.url: {exc}") from None
    if database is None:
        yield
        return
    if database.parent == config.data_dir:
        ensure_private_dir(config.data_dir)  # the first start makes it (App.open would)
    lock = database.with_name(database.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StartupError(
            f"{config.source}: database.url: cannot lock {lock}: {exc.strerror}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StartupError(
                f"{config.source}: another daemon (pid {holder}) runs on the SQLite database "
                f"{database} (it holds {lock}); {advice}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


#: glibc's `M_MMAP_THRESHOLD` (malloc.h), and the size from which a buffer is its own mapping.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def return_large_buffers() -> None:
    """Have malloc give every buffer of 128 KiB or more back to the system once it is freed
    (glibc; elsewhere nothing changes). By default glibc raises that bar to the size of the
    last such buffer freed, up to 32 MiB: after one large message, the next one's buffers (its
    attachment, the pieces it is decoded and encrypted in) came from the heap, and the holes
    they left stayed in the process's memory."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc, or no C library to ask
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def serve(config: Config, *, once: bool = False, verbose: bool = False) -> int:
    """`intake run` and `run_daemon.py`: logging as `[logging]` says (`verbose`: our DEBUG
    lines too), the instance lock, the App, then one run (the `Exit` bits) or run until
    stopped (0). StartupError when it cannot start."""
    return_large_buffers()
    setup_logging(verbose, config.logging)
    with instance_lock(config):
        app = App.open(config)
        try:
            return run_once(app) if once else run_forever(app)
        finally:
            app.close()
