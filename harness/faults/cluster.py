"""Losing a whole cluster through the infrastructure provider (the hard loss of a region's cluster)."""

from dataclasses import dataclass

from harness.errors import FleetDrillError
from harness.faults.base import Fault, FaultContext
from harness.infra import Provider


def provider(ctx: FaultContext) -> Provider:
    """The fleet's infrastructure provider; one clear error when the fleet file names none."""
    if ctx.infra is None:
        raise FleetDrillError("this fault needs an infrastructure provider: set infrastructure.provider")
    return ctx.infra


@dataclass(frozen=True)
class ClusterLoss(Fault, kind="cluster-loss"):
    """Every process of the target cluster stops at once; reverting brings it back on its data."""

    def inject(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            provider(ctx).lose_cluster(cluster)

    def revert(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            provider(ctx).restore_cluster(cluster)
