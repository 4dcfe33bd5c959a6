"""One drill run, whatever enters it (the pytest drill fixture, a Chaos Toolkit experiment): the ledger,
timeline, leases, guard, fault stack, signal handling, the fleet as found, and the record.

    run = DrillRun(name, fleet, access, settings)
    with run.running() as drill:      # faults reverted and the fleet back as found on every exit path
        ...                           # the drill: observe, inject, judge
    run.finish(outcome, message, teardown)   # the record, its outcome the truth
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from harness import machine, steadystate
from harness.config import Fleet
from harness.drill import Drill, DrillSettings
from harness.faults import FaultStack, Ledger, signals_as_interrupts
from harness.faults.ledger import holder_identity
from harness.fleet import FleetAccess
from harness.gameday import Operators
from harness.lease import ClusterLease, DrillLease, FleetLease, LeasePlaces
from harness.report import record
from harness.safety import Guard
from harness.samples import Verdict
from harness.timeline import Event, Timeline

AS_FOUND = "as found"
"""The objective of the verdict a drill gets when it leaves the fleet other than it found it."""


@dataclass(frozen=True)
class RunSettings:
    """What one run needs to know besides its fleet: where things go and what it may do."""

    run_id: str
    ledger: Path
    folder: Path
    """Where the drill's record and raw data go."""
    allow_prod: bool = False
    destructive: bool = True
    """A destructive run waits, at the end, for the fleet to be as it found it."""
    drill: DrillSettings = field(default_factory=DrillSettings)
    pause_timeout_s: float | None = None
    """Game days: operators confirm each fault and the verdicts, within this long."""
    listeners: tuple[Callable[[Event], None], ...] = ()
    fleet_file: Path | None = None
    """The fleet file the fleet was loaded from: what `fleetdrill recover` loads again to revert a fault that
    needs more than the ledger keeps (a Chaos Toolkit experiment's rollbacks)."""
    title: str = ""
    """The drill in words, for the reports (harness.report.record.title_of); empty: its name in words."""


class DrillRun:
    """A drill's run: `running()` yields the Drill; `finish()` writes its record."""

    def __init__(self, name: str, fleet: Fleet, access: FleetAccess, settings: RunSettings) -> None:
        self.fleet, self.access, self.settings = fleet, access, settings
        timeline = Timeline()
        for listener in settings.listeners:
            timeline.subscribe(listener)
        self.leases = FleetLease()
        self.holder = holder_identity(settings.run_id)
        """Who holds this run's drill leases: its run id, host and pid."""
        rules = Guard(fleet, allow_prod=settings.allow_prod)
        places = LeasePlaces.of(fleet)
        guard = self.leases.guard(places, self._lease_for, then=rules, on_held=self._lease_held)
        stack = FaultStack(
            access, Ledger(settings.ledger), timeline, settings.run_id, guard=guard, rules=rules
        )
        operators = None
        if settings.pause_timeout_s is not None:
            operators = Operators(timeline, settings.pause_timeout_s)
        self.drill = Drill(name, fleet, access, stack, timeline, settings.drill, operators)
        self._cpu_before = machine.cpu_times()
        """The machine's CPU times when the run began: how busy it was during the drill goes in the record."""

    def _lease_for(self, cluster: str, held_in: str) -> DrillLease:
        """The copy, in cluster `held_in`, of the drill lease of `cluster` (harness.lease)."""
        api, duration = self.access.api_client(held_in), self.fleet.safety.lease_duration
        return DrillLease.for_client(cluster, api, self.holder, duration, held_in=held_in)

    def _lease_held(self, lease: ClusterLease) -> None:
        """On the timeline (and so in the record): where the lease of a cluster the drill faults is held."""
        detail = {"where": lease.describe(), "held_in": list(lease.held_in), "holder": self.holder}
        self.drill.timeline.record("lease.held", lease.cluster, detail)

    @contextmanager
    def running(self, catch_signals: bool = True) -> Iterator[Drill]:
        """The drill for the block. On every exit path its faults are reverted and its leases freed (each
        faulted cluster's lease is held until its faults revert); a destructive run then waits until the
        fleet is as it found it, or the drill gets a failed "as found" verdict naming what did not come
        back. catch_signals:
        SIGINT, SIGTERM and SIGHUP interrupt the block (False where the caller, such as chaoslib running
        an action, handles them and ends the block itself)."""
        found = steadystate.take(self.fleet, self.access) if self.settings.destructive else None
        signals = signals_as_interrupts() if catch_signals else nullcontext()
        with self.leases, signals:
            try:
                yield self.drill
            finally:
                self.drill.stack.undo_all()
            if found is not None:
                self._wait_as_found(found)

    def _wait_as_found(self, found: steadystate.Snapshot) -> None:
        """The next drill's steady state must never inherit this one's damage: what did not come back is a
        failed verdict of its own."""
        timeout = self.fleet.safety.as_found_timeout
        with self.drill.timeline.phase("as found"):
            left = steadystate.wait_as_found(self.fleet, self.access, found, timeout)
        if left:
            message = (
                f"the fleet is not as the drill found it {timeout:g} s after its faults were reverted "
                f"(safety.as_found_timeout): {'; '.join(left)}"
            )
            expected = f"as found within {timeout:g} s"
            self.drill.verdicts.append(Verdict("fail", AS_FOUND, expected, "; ".join(left), message, {}))

    def finish(self, outcome: str, message: str, teardown: str = "") -> tuple[str, str]:
        """Write the record; its outcome combines the drill's (passed, failed, error, skipped), its verdicts
        and a teardown's error (record.conclude). Returns the recorded outcome and message."""
        if outcome in ("failed", "error"):  # a drill that failed anyway still names the damage it left
            damage = [v.message for v in self.drill.verdicts if v.objective == AS_FOUND]
            message = "; ".join(filter(None, (message, *damage)))
        outcome, message = record.conclude(self.drill, outcome, message, teardown)
        settings = self.settings
        runner = machine.MachineLoad.since(self._cpu_before)
        record.write(self.drill, settings.folder, settings.run_id, outcome, message, settings.title, runner)
        return outcome, message
