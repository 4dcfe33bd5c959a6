"""Faults with a guaranteed revert: the protocol and stack (base), the on-disk ledger and recover (ledger).

One module per family: pods (pod-kill), nodes (node-drain, node-loss), workload (soft-cluster-loss),
resources (node-stress, quota-squeeze), network (deny-all-policy), cluster (cluster-loss), partition
(wan-partition), scratch (scratch-namespace), experiment (chaostoolkit-experiment: what a Chaos Toolkit
experiment changes); kube holds what the API faults share, provided what the provider's faults share,
handover what their lose steps hand to their restore steps; actions makes any kind a Chaos Toolkit action.
"""

import importlib
import pkgutil

from harness.faults.base import (
    KINDS,
    Evidence,
    Fault,
    FaultContext,
    FaultStack,
    Guard,
    KubeContext,
    Observed,
    RevertError,
    interrupt_main_thread,
    signals_as_interrupts,
)
from harness.faults.ledger import (
    Ledger,
    LedgerEntry,
    LedgerError,
    Recovered,
    RecoverError,
    fault_from_record,
    new_run_id,
    recover,
)


def all_kinds() -> dict[str, type[Fault]]:
    """Every fault kind, each family's module imported (KINDS holds those of the modules imported so far)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(KINDS)


__all__ = [
    "KINDS",
    "Evidence",
    "Fault",
    "FaultContext",
    "FaultStack",
    "Guard",
    "KubeContext",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "Observed",
    "RecoverError",
    "Recovered",
    "RevertError",
    "all_kinds",
    "fault_from_record",
    "interrupt_main_thread",
    "new_run_id",
    "recover",
    "signals_as_interrupts",
]
