"""Losing a whole cluster through the infrastructure provider (the hard loss of a region's cluster)."""

from dataclasses import dataclass
from typing import ClassVar

from harness.errors import FleetDrillError
from harness.faults.base import Evidence, Fault, FaultContext, Observed
from harness.faults.evidence import all_of, api_unreachable, endpoint_down
from harness.infra import Provider
from harness.timeline import Event


def provider(ctx: FaultContext) -> Provider:
    """The fleet's infrastructure provider; one clear error when the fleet file names none."""
    if ctx.infra is None:
        raise FleetDrillError("this fault needs an infrastructure provider: set infrastructure.provider")
    return ctx.infra


@dataclass(frozen=True)
class ClusterLoss(Fault, kind="cluster-loss"):
    """Every process of the target cluster stops at once; reverting brings it back on its data."""

    cuts_api: ClassVar[bool] = True
    by_provider: ClassVar[bool] = True

    def inject(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            provider(ctx).lose_cluster(cluster)

    def revert(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            provider(ctx).restore_cluster(cluster)

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """Every target's app endpoint stops answering the drill's probes (its API server too when no
        endpoint is probed); the evidence says whether the API server went down as well: a managed
        control plane may stay up while the nodes are gone."""
        return all_of([lost(ctx, observed, cluster, started.t_mono) for cluster in self.targets])


def lost(ctx: FaultContext, observed: Observed, cluster: str, since: float) -> Evidence:
    """The cluster is lost as seen from outside: its endpoint is down (or, unprobed, its API server)."""
    down = endpoint_down(observed, cluster, since)
    api_error = api_unreachable(ctx, cluster)
    api = f"its API server is unreachable ({api_error})" if api_error else "its API server still answers"
    if down is None:
        return Evidence(api_error is not None, f"{cluster}'s endpoints are not probed; {api}")
    return Evidence(down.effective, f"{down.detail}; {api}")
