"""The project's processes as the bench runs them: a deployment in, exit status, time and memory
out.

`run_once(deployment)` runs `intake run --once` and waits for it with `os.wait4`, which gives
that process's own peak resident set (ru_maxrss; gpg children are not in it: they are separate,
small processes). `Daemon(deployment)` runs `intake run` until `stop()` (SIGTERM, SIGKILL after
`STOP_SECONDS`) and reads its current and peak resident set from /proc (VmRSS, VmHWM). Both
write the process's log (which never holds report content) to a file in the deployment.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.world import BenchError, Deployment

STOP_SECONDS = 60.0
_STATUS_KB = re.compile(r"^(VmRSS|VmHWM):\s+(\d+) kB$", re.MULTILINE)


@dataclass(frozen=True)
class Exited:
    returncode: int
    seconds: float
    peak_rss_mb: float


def run_once(deployment: Deployment, timeout: float, name: str = "once") -> Exited:
    """`intake run --once`; killed (and BenchError) past `timeout` seconds."""
    log = deployment.log_file(name)
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            deployment.argv("run", "--once"),
            env=deployment.env(),
            cwd=deployment.root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode < 0:
        raise BenchError(
            f"intake run --once was killed after {seconds:.0f} s (signal {-proc.returncode}); "
            f"its log: {log}\n{tail(log)}"
        )
    return Exited(proc.returncode, seconds, usage.ru_maxrss / 1024)


class Daemon:
    """`intake run` (the scheduler, IDLE as configured) until `stop()`."""

    def __init__(self, deployment: Deployment, name: str = "daemon") -> None:
        self.log = deployment.log_file(name)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                deployment.argv("run"),
                env=deployment.env(),
                cwd=deployment.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    def wait_started(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while "daemon started" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise BenchError(f"intake run exited {self.proc.returncode}:\n{tail(self.log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"intake run did not start within {timeout} s:\n{tail(self.log)}")
            time.sleep(0.05)

    def memory_mb(self) -> dict[str, float]:
        """{"VmRSS": now, "VmHWM": peak} of the daemon process, in MB (2**20 bytes)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return {key: int(kb) / 1024 for key, kb in _STATUS_KB.findall(status)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
