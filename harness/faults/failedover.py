"""A failover the drill made, as a recovery change in the fault ledger (Fault.recovery).

Pushed before the drill's failover strategy acts, so that whatever happens next (an exception, Ctrl-C,
SIGTERM, a crash and `fleetdrill recover`), the app is failed back to the cluster that was its primary
once every fault is reverted: the GSLB's primary and the data primary where the drill found them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.errors import FleetDrillError
from harness.failover import app_serves, fail_back
from harness.faults.base import Evidence, Fault, FaultContext, Observed
from harness.fleet import FleetAccess
from harness.timeline import Event, Timeline


@dataclass(frozen=True)
class FailedOver(Fault, kind="failover"):
    """App `app` failed over to the target cluster by its fleet file's strategy; revert fails it back to
    `primary` (waiting, at most deadline_s, until the app serves there again)."""

    recovery: ClassVar[bool] = True
    app: str
    primary: str
    deadline_s: float = 120.0

    def inject(self, ctx: FaultContext) -> None:
        """Nothing: the drill's failover strategy acts right after, each step timed on its timeline."""

    def revert(self, ctx: FaultContext) -> None:
        access = _access(ctx)
        fail_back(access, access.fleet.app(self.app), self.primary, Timeline(), self.deadline_s)

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """The app answers in the cluster that took over."""
        serves = app_serves(_access(ctx).fleet.app(self.app), self.targets[0])
        return Evidence(
            serves, f"{self.app} {'answers' if serves else 'does not answer'} in {self.targets[0]}"
        )


def _access(ctx: FaultContext) -> FleetAccess:
    if not isinstance(ctx, FleetAccess):
        raise FleetDrillError(
            "a failover is reverted through the fleet's access (its fleet file and clients)"
        )
    return ctx
