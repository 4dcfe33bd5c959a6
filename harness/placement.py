"""Where the harness runs, and which selected drill would cut it off: a runner inside a cluster a drill
loses, or inside a region a drill partitions (the fault kind's `cuts_off`), loses the fleet mid-drill and
can no longer revert, probe or judge.

Where it runs is known from the fleet file's `runner` (a cluster and/or a region); else, in a pod
(KUBERNETES_SERVICE_HOST set, a service account mounted), by matching the uid of its own cluster's
kube-system namespace with each fleet cluster's (a cluster's identity; reading it needs get on namespaces,
there and through the kubeconfig). Otherwise it is unknown, and nothing is said rather than a guess.
"""

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from harness import auth
from harness.catalogue import SelectedDrill
from harness.config import Fleet
from harness.faults import all_kinds
from harness.fleet import NETWORK_ERRORS, FleetAccess

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IDENTITY = "kube-system"
"""The namespace whose uid identifies a cluster."""
TIMEOUT_S = 5


@dataclass(frozen=True)
class Location:
    """Where the harness runs: a cluster of the fleet (None: none, or not known), its region (None: not
    known), and how that is known."""

    cluster: str | None
    region: str | None
    how: str


def declared(fleet: Fleet) -> Location | None:
    """The fleet file's `runner`, if it says."""
    runner = fleet.runner
    if runner is None:
        return None
    region = runner.region or fleet.cluster(runner.cluster or "").region
    return Location(runner.cluster, region, "the fleet file's runner")


def cluster_uid(api: client.ApiClient) -> str | None:
    """The uid of the cluster's kube-system namespace; None when it cannot be read."""
    try:
        return client.CoreV1Api(api).read_namespace(IDENTITY, _request_timeout=TIMEOUT_S).metadata.uid
    except (client.ApiException, *NETWORK_ERRORS):
        return None


def own_cluster_uid() -> str | None:
    """The kube-system uid of the cluster this pod runs in, through its service account; None when it
    cannot be read."""
    api = auth.in_cluster()
    if api is None:
        return None
    try:
        return cluster_uid(api)
    finally:
        api.close()


def in_cluster(
    fleet: Fleet,
    access: FleetAccess,
    skip: Collection[str] = (),
    environ: Mapping[str, str] = os.environ,
    account: Path = SERVICE_ACCOUNT,
    own_uid: Callable[[], str | None] = own_cluster_uid,
) -> Location | None:
    """The fleet cluster this pod runs in (those in `skip` are not asked); None outside a pod, in a cluster
    of no fleet, or when a uid cannot be read."""
    if not environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    try:
        namespace = (account / "namespace").read_text().strip()
    except OSError:
        return None
    uid = own_uid()
    if uid is None:
        return None
    for cluster in fleet.clusters:
        if cluster.name not in skip and cluster_uid(access.api_client(cluster.name)) == uid:
            how = f"a pod in namespace {namespace} of cluster {cluster.name}, by its {IDENTITY} uid"
            return Location(cluster.name, cluster.region, how)
    return None


def warnings(fleet: Fleet, where: Location | None, drills: Sequence[SelectedDrill]) -> list[str]:
    """One line per selected drill that would cut the runner off, naming the cut and the fix; none when
    where the runner is is not known."""
    if where is None:
        return []
    kinds, lost, cut_regions = all_kinds(), set(), set()
    found: list[tuple[str, str]] = []  # (what the drill does, what to stay outside of)
    for drill in drills:
        for use in drill.uses:
            reach = kinds[use.part].cuts_off if use.part in kinds else None
            clusters = use.clusters(fleet)
            regions = sorted({fleet.cluster(name).region for name in clusters})
            if reach == "cluster":
                lost |= set(clusters)
                if where.cluster in clusters:
                    found.append((f"{drill.short} loses cluster {where.cluster}", where.cluster))
            elif reach == "region":
                cut_regions |= set(regions)
                if where.region in regions:
                    found.append((f"{drill.short} partitions region {where.region}", where.region))
    safe = [c for c in fleet.clusters if c.name not in lost and c.region not in cut_regions]
    example = (
        f"from cluster {safe[0].name} (region {safe[0].region}), which no selected drill cuts off"
        if safe
        else "from a machine or a cluster outside the fleet"
    )
    return [
        f"WARN runner: {cut}, where the harness runs ({where.how}): it would cut itself off from the fleet "
        f"mid-drill; run the harness from outside {outside}, e.g. {example}"
        for cut, outside in found
    ]
