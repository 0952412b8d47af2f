"""The bench's measurements of the project, each on its own deployment in a running `World`.

In: the world, the messages, limits. Out: one figures dataclass per pass (`Drain`, `GpgCount`,
`Memory`, `Forms`) or a list of latencies, all seconds from `time.monotonic()`.

- `warm_up` + `drain`: `intake run --once` on an empty INBOX first (schema, outbox key, keyring:
  the cost of a first start, kept apart), then, once the backlog is in INBOX, `run --once`
  again until the sink has every referral (a run sends at most the outbox's per-drain cap, so a
  large backlog may take more than one), timed from the start of the first of these runs to
  the exit of the last.
- `gpg_count`: the same drain and the floor's, each through a counting gpg wrapper
  (`count_commands` reads a wrapper's file).
- `daemon`: `intake run` with IDLE on an empty INBOX: one report through, its idle RSS, then
  IDLE latency, then a memory backlog moved into INBOX at once (IDLE wakes it): peak RSS
  (VmHWM) and RSS once the sink has every referral.
- `latencies`: APPEND one report at a time and time it to its referral's acceptance by the
  sink; used for the daemon's IDLE and the floor's (`floor_latencies`) alike.
- `forms`: the daemon polling an export folder every second; an export of N rows dropped in,
  then a report mailed meanwhile: rows/s (drop to the export's removal, which happens once every
  row is committed) and how long that mail took to its referral.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import floor
from bench.backlog import FORM_TABLE, Message, referrals, write_form_export
from bench.processes import Daemon, Exited, run_once
from bench.sink import Arrival, to_any
from bench.world import BenchError, Deployment, World

MAX_RUNS = 10  # `run --once` runs a drain may take before it counts as stuck
QUIET_SECONDS = 5.0  # no new mail for this long, and INBOX empty: the project is done
IDLE_POLL_SECONDS = 300  # IDLE passes: a scheduled poll this rare cannot be what woke it
MAIL_AFTER_EXPORT = 2.0  # the forms pass mails its report this long after dropping the export
ROUND_PAUSE = 0.3  # between two latency rounds, once INBOX is empty
GPG_COMMANDS = (
    "--encrypt",
    "--decrypt",
    "--sign",
    "--list-keys",
    "--list-secret-keys",
    "--import",
    "--export",
    "--export-secret-keys",
    "--delete-key",
    "--delete-keys",
    "--delete-secret-key",
    "--delete-secret-and-public-key",
    "--verify",
    "--list-config",
    "--import-ownertrust",
    "--gen-key",
    "--quick-gen-key",
    "--quick-add-key",
    "--passwd",
    "--edit-key",
    "--list-packets",
    "--version",
)


@dataclass
class Drain:
    backend: str
    seconds: float = 0.0
    first_start: float = 0.0  # `run --once` on an empty INBOX and a new database
    runs: list[Exited] = field(default_factory=list)
    referrals_expected: int = 0
    referrals_delivered: int = 0
    referrals_encrypted: int = 0
    acknowledgements: int = 0
    inbox_left: int = 0

    @property
    def peak_rss_mb(self) -> float:
        return max((run.peak_rss_mb for run in self.runs), default=0.0)


@dataclass(frozen=True)
class GpgCount:
    reports: int
    floor: Counter[str]
    project: Counter[str]
    separate: bool = True  # a pass of its own (else counted in the timed drain passes)


@dataclass(frozen=True)
class Memory:
    messages: int
    large: int
    attachment_bytes: int
    seconds: float
    idle_rss_mb: float
    peak_rss_mb: float
    after_rss_mb: float
    large_delivered: int
    referrals_expected: int
    referrals_delivered: int


@dataclass(frozen=True)
class Forms:
    rows: int
    seconds: float | None  # drop to the export's removal; None: not within the timeout
    export_running_when_mailed: bool
    mail_latency: float | None
    mail_before_export_done: bool  # its referral was accepted before the export was removed
    form_referrals_delivered: int


def warm_up(deployment: Deployment, timeout: float) -> float:
    """`run --once` on an empty INBOX: the seconds of the first start (schema, outbox key,
    keyring, and all a run does with nothing to do); BenchError if it fails."""
    exited = run_once(deployment, timeout, "first-start")
    if exited.returncode:
        logs = ", ".join(map(str, deployment.logs))
        raise BenchError(f"intake run --once exited {exited.returncode}: see {logs}")
    return exited.seconds


def drain(
    world: World, deployment: Deployment, messages: list[Message], backend: str, timeout: float
) -> Drain:
    """`run --once` until every referral of `messages` (already in INBOX) reached the sink."""
    is_referral = to_any(world.service_addresses())
    result = Drain(backend, referrals_expected=referrals(messages))
    world.sink.clear()
    started = time.monotonic()
    while len(result.runs) < MAX_RUNS:
        before = _count(world.sink.snapshot(), is_referral)
        exited = run_once(deployment, timeout, f"run-{len(result.runs) + 1}")
        result.runs.append(exited)
        delivered = _count(world.sink.snapshot(), is_referral)
        if delivered >= result.referrals_expected or exited.returncode & 1 or delivered == before:
            break
    result.seconds = time.monotonic() - started
    arrivals = world.sink.snapshot()
    sent = [arrival for arrival in arrivals if is_referral(arrival)]
    result.referrals_delivered = len(sent)
    result.referrals_encrypted = sum(arrival.encrypted for arrival in sent)
    result.acknowledgements = len(arrivals) - len(sent)
    result.inbox_left = world.inbox_count()
    return result


def gpg_count(world: World, messages: list[Message], timeout: float) -> GpgCount:
    """gpg processes started by the floor and by the project's drain of `messages` (the
    project's first start not counted), each through its own counting wrapper."""
    floor_gpg, floor_file = world.counting_gpg("floor")
    project_gpg, project_file = world.counting_gpg("project")
    deployment = world.deployment("count", gpg_binary=project_gpg)
    try:
        warm_up(deployment, timeout)
        world.append(messages)
        floor.drain(world, messages, binary=str(floor_gpg))
        project_file.write_text("")
        counted = drain(world, deployment, messages, "sqlite", timeout)
    finally:
        deployment.close()
    if counted.referrals_delivered < counted.referrals_expected:
        raise BenchError(f"the counting pass did not deliver every referral: see {deployment.logs}")
    return GpgCount(len(messages), count_commands(floor_file), count_commands(project_file))


def daemon(
    world: World,
    rounds: list[Message],
    normal: list[Message],
    large: list[Message],
    attachment_bytes: int,
    timeout: float,
) -> tuple[list[float], Memory]:
    """IDLE latencies of `rounds[1:]` and the memory figures, from one daemon; `large` are
    the messages with an attachment of `attachment_bytes`, spread through `normal`."""
    backlog = _spread(normal, large)
    world.append(backlog, folder="Backlog")
    deployment = world.deployment("daemon", idle=True, poll_seconds=IDLE_POLL_SECONDS)
    is_referral = to_any(world.service_addresses())
    try:
        with Daemon(deployment) as running:
            running.wait_started()
            latencies(world, rounds[:1], timeout)  # warm-up: IDLE is up, everything loaded
            time.sleep(1.0)
            idle = running.memory_mb()["VmRSS"]
            found = latencies(world, rounds[1:], timeout)
            world.sink.clear()
            started = time.monotonic()
            _move_all(world, "Backlog", "INBOX")
            _wait_done(world, referrals(backlog), started, timeout * max(1, len(backlog) // 10))
            seconds = time.monotonic() - started
            time.sleep(1.0)
            after = running.memory_mb()
    finally:
        deployment.close()
    sent = [arrival for arrival in world.sink.snapshot() if is_referral(arrival)]
    memory = Memory(
        messages=len(backlog),
        large=len(large),
        attachment_bytes=attachment_bytes,
        seconds=seconds,
        idle_rss_mb=idle,
        peak_rss_mb=after["VmHWM"],
        after_rss_mb=after["VmRSS"],
        large_delivered=sum(1 for arrival in sent if large and arrival.size > attachment_bytes),
        referrals_expected=referrals(backlog),
        referrals_delivered=len(sent),
    )
    return found, memory


def floor_latencies(world: World, messages: list[Message], timeout: float) -> list[float]:
    """IDLE latencies of the raw floor loop (`floor.IdleFloor`)."""
    loop = floor.IdleFloor(world)
    loop.start()
    try:
        latencies(world, messages[:1], timeout)
        found = latencies(world, messages[1:], timeout)
    finally:
        loop.stop()
    if loop.errors:
        raise BenchError(f"the floor's IDLE loop failed: {loop.errors[0]!r}")
    return found


def latencies(world: World, messages: list[Message], timeout: float) -> list[float]:
    """APPEND each message alone; seconds from the APPEND to its referral's acceptance."""
    is_referral = to_any(world.service_addresses())
    found: list[float] = []
    with world.dovecot.client(timeout=timeout) as imap:
        for message in messages:
            before = _count(world.sink.snapshot(), is_referral)
            started = time.monotonic()
            imap.append("INBOX", message.raw)
            arrived = world.sink.wait_for(_more_than(before, is_referral), timeout)
            if not arrived:
                raise BenchError(f"no referral within {timeout} s of an APPEND")
            sent = [arrival for arrival in world.sink.snapshot() if is_referral(arrival)]
            found.append(sent[before].at - started)
            _wait_until(lambda: world.inbox_count() == 0, timeout)
            time.sleep(ROUND_PAUSE)
    return found


def forms(
    world: World, rows: int, warm: Message, mail: Message, seed: int, timeout: float
) -> Forms:
    """See the module docstring; `warm` (one referral) goes through first, and `mail` must
    be referred to a service the rows are not."""
    deployment = world.deployment("forms", idle=True, poll_seconds=1, forms=FORM_TABLE)
    mail_to = to_any({world.keyset.emails[name] for name in mail.services} - _form_services(world))
    form_to = to_any(_form_services(world))
    exports = deployment.root / "exports"
    exports.mkdir()
    staged, export = deployment.root / "export.csv", exports / "responses.csv"
    write_form_export(staged, rows, seed)
    try:
        with Daemon(deployment) as daemon:
            daemon.wait_started()
            latencies(world, [warm], timeout)  # IDLE is up, everything loaded
            world.sink.clear()
            started = time.monotonic()
            os.replace(staged, export)
            time.sleep(MAIL_AFTER_EXPORT)
            running = export.exists()
            mailed = time.monotonic()
            world.append([mail])
            got_mail = world.sink.wait_for(_more_than(0, mail_to), timeout)
            mail_done = time.monotonic()
            done = _wait_until(lambda: not export.exists(), timeout)
            export_done = time.monotonic()
    finally:
        deployment.close()
    arrivals = world.sink.snapshot()
    mail_at = next((a.at for a in arrivals if mail_to(a)), None)
    return Forms(
        rows=rows,
        seconds=export_done - started if done else None,
        export_running_when_mailed=running,
        mail_latency=mail_at - mailed if got_mail and mail_at is not None else None,
        mail_before_export_done=got_mail and mail_done < export_done,
        form_referrals_delivered=_count(arrivals, form_to),
    )


def percentile(values: list[float], share: float) -> float:
    """The `share` (0–1) percentile, interpolated between the nearest ranks."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(share * 100) - 1]


def _form_services(world: World) -> set[str]:
    return {world.keyset.emails["advice-centre"].lower()}


def _more_than(n: int, wanted: Callable[[Arrival], bool]) -> Callable[[list[Arrival]], bool]:
    return lambda arrivals: _count(arrivals, wanted) > n


def _count(arrivals: list[Arrival], wanted: Callable[[Arrival], bool]) -> int:
    return sum(1 for arrival in arrivals if wanted(arrival))


def count_commands(count_file: Path) -> Counter[str]:
    """gpg invocations in a wrapper's count file, by command (its first command flag)."""
    found: Counter[str] = Counter()
    for line in count_file.read_text().splitlines():
        flags = line.split()
        found[next((flag for flag in flags if flag in GPG_COMMANDS), "other")] += 1
    return found


def _spread(normal: list[Message], large: list[Message]) -> list[Message]:
    """`normal` with `large` inserted at even intervals."""
    backlog = list(normal)
    step = max(1, len(backlog) // max(1, len(large)))
    for offset, message in enumerate(large):
        backlog.insert(min(len(backlog), offset * (step + 1) + step // 2), message)
    return backlog


def _move_all(world: World, source: str, target: str) -> None:
    with world.dovecot.client(timeout=120) as imap:
        imap.select_folder(source)
        imap.move(imap.search("ALL"), target)


def _wait_done(world: World, expected: int, started: float, timeout: float) -> None:
    """Until the sink has `expected` referrals, or INBOX is empty and no mail came for
    `QUIET_SECONDS` since `started` or the last mail (the project refused some), or
    `timeout` (BenchError)."""
    is_referral = to_any(world.service_addresses())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        arrivals = world.sink.snapshot()
        if _count(arrivals, is_referral) >= expected:
            return
        last = arrivals[-1].at if arrivals else started
        if time.monotonic() - last > QUIET_SECONDS and world.inbox_count() == 0:
            return
        time.sleep(0.2)
    raise BenchError(f"the project did not finish the memory backlog within {timeout} s")


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
