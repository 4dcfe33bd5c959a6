"""Losing a whole cluster through the infrastructure provider (the hard loss of a region's cluster)."""

from dataclasses import dataclass
from typing import ClassVar, Literal

from harness.faults.base import Evidence, FaultContext, Observed
from harness.faults.evidence import all_of, api_unreachable, endpoint_down
from harness.faults.handover import Handover
from harness.faults.provided import HandsOver, provider
from harness.infra.registry import LOSE_CLUSTER, RESTORE_CLUSTER, Target
from harness.timeline import Event


@dataclass(frozen=True)
class ClusterLoss(HandsOver, kind="cluster-loss"):
    """Every process of the target cluster stops at once; reverting brings it back on its data, each
    cluster's restore step given what its lose step returned."""

    cuts_api: ClassVar[bool] = True
    by_provider: ClassVar[bool] = True
    cuts_off: ClassVar[Literal["cluster", "region"] | None] = "cluster"

    def inject_handing(self, ctx: FaultContext, handover: Handover) -> None:
        for cluster in self.targets:
            handover.keep(cluster, provider(ctx).run(LOSE_CLUSTER, Target(cluster=cluster)))

    def revert_handed(self, ctx: FaultContext, handover: Handover) -> None:
        for cluster in self.targets:
            provider(ctx).run(RESTORE_CLUSTER, Target(cluster=cluster), handover.get(cluster))

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """Every target's app endpoint stops answering the drill's probes (its API server too when no
        endpoint is probed); the evidence says whether the API server went down as well: a managed
        control plane may stay up while the nodes are gone."""
        return all_of([lost(ctx, observed, cluster, started.t_mono) for cluster in self.targets])


def lost(ctx: FaultContext, observed: Observed, cluster: str, since: float) -> Evidence:
    """The cluster is lost as seen from outside: its endpoint is down (or, unprobed, its API server). The
    API server is asked first: against a lost one the question takes its whole timeout, during which the
    endpoint's probes fail too, so the answer and the probes are read at the same moment."""
    api_error = api_unreachable(ctx, cluster)
    down = endpoint_down(observed, cluster, since)
    api = f"its API server is unreachable ({api_error})" if api_error else "its API server still answers"
    if down is None:
        return Evidence(api_error is not None, f"{cluster}'s endpoints are not probed; {api}")
    return Evidence(down.effective, f"{down.detail}; {api}")
