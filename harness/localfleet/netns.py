"""Linux network namespaces: create, enter, list the processes inside, delete.

Every namespace of a fleet is named with the fleet's prefix, so the processes a fleet started are
exactly those living in its namespaces: `fleet down` needs no list of pids to find them all.
"""

import os
import signal
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.errors import FleetDrillError

NETNS_DIR = Path("/run/netns")


class NetworkError(FleetDrillError):
    """A namespace, link or route operation failed."""


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one `ip` command (in netns when given); raise NetworkError quoting ip's stderr."""
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


def ip_batch(commands: Iterable[str], netns: str | None = None) -> None:
    """Run many `ip` commands in one process (much faster than one process each)."""
    script = "\n".join(commands) + "\n"
    argv = ["ip", *(("-n", netns) if netns else ()), "-batch", "-"]
    done = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise NetworkError(f"ip -batch{' in ' + netns if netns else ''}: {done.stderr.strip()}")


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str) -> None:
    """A new namespace with its loopback up (idempotent)."""
    if not exists(name):
        ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def delete(name: str) -> None:
    if exists(name):
        ip("netns", "delete", name, check=False)


def names(prefix: str) -> list[str]:
    """Namespaces whose names start with prefix."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def enter_argv(name: str, argv: Sequence[str]) -> list[str]:
    """argv that runs a program inside the namespace (nsenter execs it: the pid is the program's)."""
    return ["nsenter", f"--net={NETNS_DIR / name}", "--", *argv]


def sysctl(name: str, key: str, value: str) -> None:
    subprocess.run(enter_argv(name, ["sysctl", "-qw", f"{key}={value}"]), check=True, timeout=30)


def pids(names_: Iterable[str]) -> list[int]:
    """Every process whose network namespace is one of the named ones."""
    inodes = set()
    for name in names_:
        try:
            inodes.add((NETNS_DIR / name).stat().st_ino)
        except FileNotFoundError:
            continue
    if not inodes:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry.path, "ns", "net").stat().st_ino in inodes:
                found.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def kill_all(names_: Iterable[str], sig: signal.Signals = signal.SIGKILL) -> list[int]:
    """Send sig to every process in the named namespaces; return the pids signalled."""
    targets = pids(names_)
    for pid in targets:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
    return targets
