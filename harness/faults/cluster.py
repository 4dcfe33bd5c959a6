"""Losing a whole cluster through the infrastructure provider (the hard loss of a region's cluster)."""

from dataclasses import dataclass

from harness.errors import FleetDrillError
from harness.faults.base import Fault, FaultContext
from harness.infra import Provider


@dataclass(frozen=True)
class ClusterLoss(Fault, kind="cluster-loss"):
    """Every process of the target cluster stops at once; reverting brings it back on its data."""

    def _provider(self, ctx: FaultContext) -> Provider:
        if ctx.infra is None:
            raise FleetDrillError(
                "cluster loss needs an infrastructure provider: set infrastructure.provider"
            )
        return ctx.infra

    def inject(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            self._provider(ctx).lose_cluster(cluster)

    def revert(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            self._provider(ctx).restore_cluster(cluster)
