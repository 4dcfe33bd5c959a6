"""Losing a whole cluster through the infrastructure provider (the hard loss of a region's cluster)."""

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar, Literal

from harness.faults.base import Evidence, FaultContext, Observed
from harness.faults.evidence import API_TIMEOUT_S, POLL_S, all_of, api_unreachable, endpoint_down
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
    API server is asked while the endpoint's probes are read: against a lost one the question takes its
    whole timeout, and so do the probes sent since injection, so both show the loss at about the same
    moment instead of one timeout after the other."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        asking = pool.submit(api_unreachable, ctx, cluster)
        down = _endpoint_down_while(asking, observed, cluster, since)
        api_error = asking.result()
    api = f"its API server is unreachable ({api_error})" if api_error else "its API server still answers"
    if down is None:
        return Evidence(api_error is not None, f"{cluster}'s endpoints are not probed; {api}")
    return Evidence(down.effective, f"{down.detail}; {api}")


def _endpoint_down_while(asking: Future, observed: Observed, cluster: str, since: float) -> Evidence | None:
    """The endpoint's evidence, read again until it shows the endpoint down once the API has answered, or
    until API_TIMEOUT_S after that answer (the probes in flight when it came end by their own timeout)."""
    answered_at = None
    while True:
        down = endpoint_down(observed, cluster, since)
        if down is None or (down.effective and asking.done()):
            return down
        if asking.done():
            answered_at = answered_at or time.monotonic()
            if time.monotonic() - answered_at >= API_TIMEOUT_S:
                return down
        time.sleep(POLL_S)
