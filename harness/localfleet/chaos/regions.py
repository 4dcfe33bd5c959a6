"""What a NetworkChaos must name to cut one cluster's app off the rest of the local fleet (a region
partition expressed in Chaos Mesh's terms, applied at the app's pods).

Replication runs pod -> other cluster's ingress -> pod, so the other clusters' segments and pod ranges
stop it. The global load balancer health-checks a cluster through its ingress, which proxies to the pods
from its own address (it is not transparent): dropping the balancer's address at the pods would not stop
the checks, so the partition names the cluster's own ingress too, the region's door to the outside.
What stays reachable: the cluster's control plane and nodes (probes, the API), and the harness's host.
"""

from harness.localfleet.state import FleetState


def partition_targets(state: FleetState, cluster: str) -> tuple[str, ...]:
    """externalTargets for a partition between `cluster`'s pods and everything outside its region."""
    own = state.cluster(cluster)
    others = [state.plan.cluster(c.index) for c in state.clusters if c.name != cluster]
    targets = [str(net) for plan in others for net in (plan.segment.network, plan.pod_cidr)]
    targets += [str(state.plan.global_segment.network), f"{state.plan.cluster(own.index).ingress}/32"]
    return tuple(targets)
