"""The dry run: each drill's own code, run with a fault stack that only plans.

A drill under `--dry-run` gets a PlannedDrill and a PlannedFailover instead of the real ones. Its faults go
through the real FaultStack in dry-run mode, so each is checked by the same safety rules (allowlist, prod,
blast radius with what is already planned) and kept in order, never applied; its failovers are planned
the same way, and the velero CLI it drives itself is a PlannedVelero. Nothing probes, writes, fails over,
backs up or restores. Where the drill would judge, all its faults are planned: PlanComplete ends it there,
and the plugin prints the plan.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from harness.config import App
from harness.data import SentinelWrite
from harness.drill import Drill, Observation
from harness.failover import BackupPoint, Failover
from harness.faults.base import Fault
from harness.faults.evidence import Injection
from harness.faults.failedover import FailedOver
from harness.samples import Verdict
from harness.velero import Velero


class PlanComplete(Exception):
    """The drill reached its verdicts: every fault it would inject is planned."""


class PlannedWriter:
    """A sentinel writer that writes nothing."""

    def writes(self) -> list[SentinelWrite]:
        return []


class PlannedDrill(Drill):
    """A drill that plans its faults and failovers (guarded, in order) and changes nothing."""

    def plan_lines(self) -> list[str]:
        """One numbered line per planned fault (allowed by the safety rules, with the clusters faulted at
        once) or failover (a recovery change: not a fault, not guarded)."""
        lines, faulted = [], set()
        for number, fault in enumerate(self.stack.planned, 1):
            if fault.recovery:
                lines.append(f"{number}. {fault.describe()}")
                continue
            faulted |= set(fault.targets)
            lines.append(
                f"{number}. {fault.describe()}: allowed; faulted at once: {', '.join(sorted(faulted))}"
            )
        return lines

    @contextmanager
    def observe(self, app: App) -> Iterator[Observation]:
        yield Observation(app)

    @contextmanager
    def observe_restored(self, app: App, proxy: Any) -> Iterator[None]:
        yield

    @contextmanager
    def direct_writes(self, app: App, cluster: str) -> Iterator[Any]:
        yield PlannedWriter()

    def inject(self, fault: Fault) -> Injection:
        planned = self.stack.push(fault)
        return Injection(fault, planned.t_mono, planned.t_mono, planned.t_mono, "planned, not injected")

    def revert_all(self) -> None:
        """Nothing was applied."""

    def steady(self, app: App, cluster: str | None, hold_s: float, deadline_s: float) -> bool:
        return True

    def soak(self, seconds: float | None = None) -> None:
        """Nothing to measure."""

    def wait_served_by(
        self, app: App, cluster: str | None, deadline_s: float, besides: str | None = None
    ) -> None:
        """Nothing to wait for."""

    def wait_restored_serves(self, app: App, deadline_s: float) -> None:
        """Nothing to wait for."""

    def wait_restored_data(self, app: App, proxy: Any, cluster: str, deadline_s: float) -> None:
        """Nothing was restored."""

    def wait_fenced(self, writer: Any, deadline_s: float) -> bool:
        return True

    def writes_acked_since(self, app: App, since: float) -> int:
        return sys.maxsize

    def judge(self, *args: Any, **kwargs: Any) -> list[Verdict]:
        raise PlanComplete

    judge_restore = judge_split_brain = judge_return = judge_drift = judge_isolation = judge


class PlannedFailover(Failover):
    """Failovers planned on the dry-run stack; nothing fails over, backs up or restores."""

    def fail_over(self, app: App, cluster: str) -> None:
        primary = self.access.fleet.primary().name
        self.stack.push(FailedOver(targets=(cluster,), app=app.name, primary=primary))

    def promote(self, app: App, cluster: str) -> None:
        """Planned with the failover."""

    def fail_back(self, app: App, cluster: str, deadline_s: float) -> None:
        """Planned with the failover."""

    def back_up(self, app: App, source: str, target: str, name: str, deadline_s: float) -> BackupPoint:
        now = time.monotonic()
        return BackupPoint(name, now, now)

    def restore_to_standby(
        self, app: App, backup: str, cluster: str, into: Mapping[str, str], deadline_s: float
    ) -> None:
        """Planned with the cluster loss before it."""


PLANNED_PHASES = {
    "backup": "Completed",
    "restore": "Completed",
    "schedule": "Enabled",
    "backup-location": "Available",
}
"""What a planned `velero KIND get NAME` says of each object it is asked about."""


class PlannedVelero(Velero):
    """The velero CLI a drill drives itself, in a dry run: nothing runs; a backup, restore or schedule
    asked about by name is there and done now, so the drill goes on to plan its next fault."""

    def run(self, *args: str, timeout: float | None = None) -> str:
        if len(args) < 2 or args[1] != "get":
            return ""
        names = args[2 : args.index("-o")] if "-o" in args else args[2:]
        now = datetime.now(UTC).isoformat()
        status = {"phase": PLANNED_PHASES.get(args[0], ""), "startTimestamp": now, "completionTimestamp": now}
        return json.dumps({"items": [{"metadata": {"name": name}, "status": status} for name in names]})
