"""CPU and memory usage of a cgroup (cgroup v1), read as cadvisor reads it for the kubelet.

CPU: cpuacct.usage, the CPU time in ns the cgroup has used since it was made, and the rate since the
previous read of the same cgroup (cadvisor keeps each container's last sample); a cgroup made anew at
the same path (a restarted container) starts without a rate. Memory: memory.usage_in_bytes; the working
set is the usage minus total_inactive_file of memory.stat (file pages the kernel can drop at once); what
is available is the limit minus the working set, and nothing when the cgroup has no limit. A cgroup that
is gone or unreadable reads as None.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

UNLIMITED = 1 << 62  # a memory limit above this is none (cadvisor's bound: the kernel rounds 2^63 down)
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class CpuUsage:
    """cpuacct.usage at `time` (epoch seconds), and the rate since the previous read in ns per second."""

    time: float
    usage_core_ns: int
    nano_cores: int | None


@dataclass(frozen=True)
class MemoryUsage:
    """A cgroup's memory at `time` (epoch seconds), in bytes; available is None without a limit."""

    time: float
    usage_bytes: int
    working_set_bytes: int
    rss_bytes: int
    available_bytes: int | None


@dataclass(frozen=True)
class _Sample:
    """One read of cpuacct.usage: which cgroup it was (its inode), when (monotonic ns), how much."""

    inode: int
    at_ns: int
    usage_core_ns: int


def read_memory(folder: Path) -> MemoryUsage | None:
    """The memory of the cgroup in `folder` (a memory hierarchy's folder)."""
    try:
        usage = int((folder / "memory.usage_in_bytes").read_text())
        limit = int((folder / "memory.limit_in_bytes").read_text())
        lines = (folder / "memory.stat").read_text().splitlines()
        counts = {name: int(value) for name, value in (line.split() for line in lines if line.strip())}
    except (OSError, ValueError):
        return None
    working_set = max(0, usage - counts.get("total_inactive_file", 0))
    available = max(0, limit - working_set) if limit <= UNLIMITED else None
    return MemoryUsage(time.time(), usage, working_set, counts.get("total_rss", 0), available)


class CpuReader:
    """Reads cpuacct.usage of cgroups, keeping the last sample of each for the rate."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock = clock
        self.last: dict[Path, _Sample] = {}

    def read(self, folder: Path) -> CpuUsage | None:
        """The CPU usage of the cgroup in `folder` (a cpuacct hierarchy's folder)."""
        try:
            inode = folder.stat().st_ino
            usage = int((folder / "cpuacct.usage").read_text())
        except (OSError, ValueError):
            self.last.pop(folder, None)
            return None
        sample = _Sample(inode, self.clock(), usage)
        before = self.last.get(folder)
        self.last[folder] = sample
        rate = None
        if before and before.inode == inode and sample.at_ns > before.at_ns and usage >= before.usage_core_ns:
            rate = (usage - before.usage_core_ns) * NS_PER_S // (sample.at_ns - before.at_ns)
        return CpuUsage(time.time(), usage, rate)

    def retain(self, folders: set[Path]) -> None:
        """Forget the samples of every cgroup not in `folders` (pods and containers that are gone)."""
        self.last = {folder: sample for folder, sample in self.last.items() if folder in folders}
