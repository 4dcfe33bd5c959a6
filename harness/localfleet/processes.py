"""Processes of the local fleet: start one inside a namespace, tell whether it still lives, stop many."""

import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.localfleet import netns


@dataclass(frozen=True)
class ProcessSpec:
    """How to (re)start one process: its namespace, argv, extra environment and log file."""

    key: str
    netns: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    log: str = ""
    address: str = ""


@dataclass(frozen=True)
class Started:
    """A running process: its pid and the kernel's start time of that pid (guards against pid reuse)."""

    pid: int
    start_ticks: int


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, or None when the pid is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(started: Started) -> bool:
    return start_ticks(started.pid) == started.start_ticks


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def spawn(spec: ProcessSpec) -> Started:
    """Start the process in its namespace, detached from the caller's session, logging to spec.log."""
    Path(spec.log).parent.mkdir(parents=True, exist_ok=True)
    with Path(spec.log).open("ab") as log:
        proc = subprocess.Popen(
            netns.enter_argv(spec.netns, spec.argv),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ticks = start_ticks(proc.pid)
    return Started(proc.pid, ticks if ticks is not None else -1)


def reap(pids: Iterable[int]) -> None:
    """Collect exit statuses of our own dead children, so they do not linger as zombies."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue


def wait_gone(pids: Iterable[int], deadline_s: float = 10.0) -> list[int]:
    """Poll until every pid has exited (or the deadline passes); return those still alive."""
    remaining = list(pids)
    deadline = time.monotonic() + deadline_s
    while remaining and time.monotonic() < deadline:
        reap(remaining)
        remaining = [pid for pid in remaining if start_ticks(pid) is not None]
        if remaining:
            time.sleep(0.02)
    return remaining
