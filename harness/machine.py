"""How busy the machine running the harness was during a drill: its probes and sentinel writes are timed
there, so a verdict measured on a saturated runner says so.

    before = cpu_times()
    ...                                   # the drill
    load = MachineLoad.since(before)      # CPUs, the share of their time busy, the load average
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
LOADED_BUSY = 0.9
"""A runner whose CPUs were busy this share of the drill (other processes' time and the hypervisor's steal
included) is loaded: a missed latency, availability or recovery time may be the runner's, not the fleet's."""


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU time of all CPUs since boot, in clock ticks: busy (steal included) and all of it."""

    busy: int
    total: int


def cpu_times(stat: Path = PROC_STAT) -> CpuTimes | None:
    """The machine's CPU times now (Linux's /proc/stat); None where it cannot be read."""
    try:
        first = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not first or first[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user and nice)
    ticks = [int(value) for value in first[1:9]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return CpuTimes(sum(ticks) - idle, sum(ticks))


@dataclass(frozen=True)
class MachineLoad:
    """The runner's load over a drill: `busy` the share of all CPUs' time not idle (None: unknown),
    `load1` the one-minute load average at its end."""

    cpus: int
    busy: float | None
    load1: float | None

    @classmethod
    def since(cls, before: CpuTimes | None, stat: Path = PROC_STAT) -> MachineLoad:
        now = cpu_times(stat)
        busy = None
        if before is not None and now is not None and now.total > before.total:
            busy = (now.busy - before.busy) / (now.total - before.total)
        try:
            load1: float | None = os.getloadavg()[0]
        except OSError:
            load1 = None
        return cls(os.cpu_count() or 1, busy, load1)

    @property
    def loaded(self) -> bool:
        return self.busy is not None and self.busy >= LOADED_BUSY

    def describe(self) -> str:
        """ "2 CPUs, 97% busy, load average 4.1"."""
        parts = [f"{self.cpus} CPU{'s' if self.cpus != 1 else ''}"]
        parts.append(f"{self.busy:.0%} busy" if self.busy is not None else "busy share unknown")
        if self.load1 is not None:
            parts.append(f"load average {self.load1:.1f}")
        return ", ".join(parts)
