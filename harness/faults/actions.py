"""Every fault as a Chaos Toolkit action and rollback pair, for experiments that are not pytest drills.

    method:    {type: action, name: lose-a-node, provider: {type: python, module: harness.faults.actions,
                func: inject_fault, arguments: {kind: node-loss, targets: [eu-west], fleet: fleet.yaml,
                params: {nodes: [eu-west-node-2]}}}}
    rollbacks: the same with func: revert_fault

inject_fault enters a drill run (harness.run) as a drill does: the fleet's safety rules and drill leases
first, the fault in the ledger before it acts (`fleetdrill recover` reverts it after a crash), then the
evidence that it took effect (an action whose fault does not show fails, reverted). The run stays open
until revert_fault in the same process reverts the fault, waits for the fleet to be as it was found and
writes the run's record (reports/RUN_ID/action-KIND). revert_fault in another process, or for a fault
not in force, reverts it with what its ledger entries say its steps returned and drops it from the
ledger, harmlessly.
"""

from __future__ import annotations

import atexit
import importlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import paths
from harness.config import load_fleet
from harness.errors import FleetDrillError
from harness.faults.base import Fault
from harness.faults.handover import Handover
from harness.faults.ledger import Ledger, fault_from_record, new_run_id

KIND_MODULES = (
    "chaosmesh",
    "cluster",
    "network",
    "nodes",
    "partition",
    "pods",
    "resources",
    "scratch",
    "workload",
)
"""The modules of harness.faults that define the built-in kinds."""
REPORTS = Path("reports")
"""Where action runs write their records unless `reports` says otherwise (as drills' --report-dir)."""


@dataclass(frozen=True)
class _OpenRun:
    """A drill run an action entered and its rollback will end: the run, its open block, its access."""

    run: Any
    block: ExitStack
    access: Any


_OPEN: dict[str, _OpenRun] = {}
"""The runs of the faults in force that this process injected, by fault key."""


@atexit.register
def _end_left_open() -> None:
    """A process that exits before an action's rollback (an experiment that stopped early, rollbacks
    skipped) still reverts the fault and records the run as an error."""
    while _OPEN:
        _, opened = _OPEN.popitem()
        _end(opened, FleetDrillError("the process exited before the action's rollback ran"))


def _fault(kind: str, targets: list[str], params: dict[str, Any] | None) -> Fault:
    _load_kinds()
    record = {"kind": kind, "targets": list(targets), "params": dict(params or {})}
    return fault_from_record(record)


def _load_kinds() -> None:
    """Register every built-in kind (importing their modules), so a kind is found by name alone."""
    for module in KIND_MODULES:
        importlib.import_module(f"harness.faults.{module}")


def inject_fault(
    kind: str,
    targets: list[str],
    fleet: str,
    params: dict[str, Any] | None = None,
    ledger: str | None = None,
    allow_prod: bool = False,
    reports: str | None = None,
) -> dict[str, Any]:
    """Chaos Toolkit action: apply the fault in a drill run of its own (safety rules, lease, ledger, proof
    that it took effect); returns its record and the evidence."""
    from harness.fleet import FleetAccess
    from harness.run import DrillRun, RunSettings
    from harness.samples import Verdict

    fault = _fault(kind, targets, params)
    loaded, run_id = load_fleet(fleet), new_run_id()
    settings = RunSettings(
        run_id=run_id,
        ledger=Path(ledger) if ledger else paths.default_ledger(),
        folder=Path(reports or REPORTS) / run_id / f"action-{kind}",
        allow_prod=allow_prod,
        fleet_file=Path(fleet),
        title=f"Chaos Toolkit action: {fault.describe()}",
    )
    access = FleetAccess(loaded)
    run, block = DrillRun(f"action-{kind}", loaded, access, settings), ExitStack()
    try:
        drill = block.enter_context(run.running(catch_signals=False))  # chaoslib handles the signals
        injection = drill.inject(fault)
    except BaseException as error:
        _end(_OpenRun(run, block, access), error)
        raise
    seen = f"{fault.describe()} took effect: {injection.evidence}"
    drill.verdicts.append(Verdict("pass", "fault effect", f"{kind} takes effect", "seen", seen, {}))
    _OPEN[fault.key] = _OpenRun(run, block, access)
    return {**fault.to_record(), "evidence": injection.evidence}


def revert_fault(
    kind: str,
    targets: list[str],
    fleet: str,
    params: dict[str, Any] | None = None,
    ledger: str | None = None,
    reports: str | None = None,
) -> dict[str, Any]:
    """Chaos Toolkit rollback: revert the fault and end its drill run (the fleet as found, the record where
    the action said); for a fault this process did not inject, revert it with what its ledger entries kept
    and drop it from the ledger. Takes the action's arguments, so a rollback repeats them (`reports` was the
    action's). Returns its record."""
    fault = _fault(kind, targets, params)
    opened = _OPEN.pop(fault.key, None)
    if opened is not None:
        _end(opened, None)
        return fault.to_record()
    from harness.fleet import FleetAccess

    book = Ledger(Path(ledger) if ledger else paths.default_ledger())
    entries = [
        e for e in book.entries() if e.fault.get("kind") == kind and fault_from_record(e.fault) == fault
    ]
    access = FleetAccess(load_fleet(fleet))
    try:
        fault.revert_handed(access, Handover({k: v for entry in entries for k, v in entry.handles.items()}))
    finally:
        access.close()
    for entry in entries:
        book.remove(entry.id)
    return fault.to_record()


def _end(opened: _OpenRun, error: BaseException | None) -> None:
    """End an action's run: revert what it applied, wait for the fleet as found, write the record (its
    outcome the truth: a failed revert is an error, a fleet not as found a failure; either is raised when
    nothing else was)."""
    outcome, message = ("error", f"{type(error).__name__}: {error}") if error else ("passed", "")
    teardown = ""
    try:
        try:
            if error is None:
                opened.block.close()
            else:
                opened.block.__exit__(type(error), error, error.__traceback__)
        except Exception as failed:
            teardown = f"{type(failed).__name__}: {failed}"
            if error is None:
                raise
        finally:
            recorded, why = opened.run.finish(outcome, message, teardown)
    finally:
        opened.access.close()
    if error is None and recorded != "passed":
        raise FleetDrillError(why)
