"""Every fault as a Chaos Toolkit action and rollback pair, for experiments that are not pytest drills.

    method:    {type: action, name: lose-a-node, provider: {type: python, module: harness.faults.actions,
                func: inject_fault, arguments: {kind: node-loss, targets: [eu-west], fleet: fleet.yaml,
                params: {nodes: [eu-west-node-2]}}}}
    rollbacks: the same with func: revert_fault

inject_fault writes the fault to the ledger before it acts (so `fleetdrill recover` reverts it after a
crash) and checks the fleet file's safety rules first; revert_fault reverts it and removes it from the
ledger, and is harmless when the fault is not in force.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import paths
from harness.config import load_fleet
from harness.faults.base import Fault
from harness.faults.ledger import Ledger, fault_from_record, new_run_id


def _fault(kind: str, targets: list[str], params: dict[str, Any] | None) -> Fault:
    _load_kinds()
    record = {"kind": kind, "targets": list(targets), "params": dict(params or {})}
    return fault_from_record(record)


def _load_kinds() -> None:
    """Register every built-in kind (importing their modules), so a kind is found by name alone."""
    from harness.faults import cluster, network, nodes, partition, pods, resources, workload  # noqa: F401


@contextmanager
def _access(fleet: str) -> Iterator[Any]:
    from harness.fleet import FleetAccess

    access = FleetAccess(load_fleet(fleet))
    try:
        yield access
    finally:
        access.close()


def inject_fault(
    kind: str,
    targets: list[str],
    fleet: str,
    params: dict[str, Any] | None = None,
    ledger: str | None = None,
    allow_prod: bool = False,
) -> dict[str, Any]:
    """Chaos Toolkit action: apply the fault after the fleet's safety rules allow it; returns its record."""
    from harness.safety import Guard

    fault = _fault(kind, targets, params)
    with _access(fleet) as access:
        Guard(access.fleet, allow_prod=allow_prod)(fault, frozenset())
        book = Ledger(Path(ledger) if ledger else paths.default_ledger())
        entry = book.add(fault, new_run_id())
        try:
            fault.inject(access)
        except BaseException:
            fault.revert(access)
            book.remove(entry.id)
            raise
        book.mark(entry.id, "applied")
    return fault.to_record()


def revert_fault(
    kind: str,
    targets: list[str],
    fleet: str,
    params: dict[str, Any] | None = None,
    ledger: str | None = None,
) -> dict[str, Any]:
    """Chaos Toolkit rollback: revert the fault and drop it from the ledger; returns its record."""
    fault = _fault(kind, targets, params)
    record = fault.to_record()
    with _access(fleet) as access:
        fault.revert(access)
    book = Ledger(Path(ledger) if ledger else paths.default_ledger())
    for entry in book.entries():
        if entry.fault.get("kind") == kind and fault_from_record(entry.fault) == fault:
            book.remove(entry.id)
    return record
