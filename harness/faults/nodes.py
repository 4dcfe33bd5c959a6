"""Node faults: drain (cordon, then evictions that honour PodDisruptionBudgets) and loss (the provider's)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from kubernetes.client import V1DeleteOptions, V1Eviction, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from harness.errors import FleetDrillError
from harness.faults import kube
from harness.faults.base import Evidence, Fault, FaultContext, Observed, are_names
from harness.faults.evidence import all_of
from harness.faults.handover import Handover
from harness.faults.provided import HandsOver, provider
from harness.infra.registry import LOSE_NODE, RESTORE_NODE, Target
from harness.permissions import EVERY, Permission, verbs
from harness.timeline import Event

MIRROR = "kubernetes.io/config.mirror"
NODE_LEASES = "kube-node-lease"


def evictable(pod: Any) -> bool:
    """What `kubectl drain` evicts: pods not yet ending, not mirror pods, not DaemonSet pods."""
    if pod.metadata.deletion_timestamp is not None or pod.status.phase in ("Succeeded", "Failed"):
        return False
    if MIRROR in (pod.metadata.annotations or {}):
        return False
    return not any(owner.kind == "DaemonSet" for owner in pod.metadata.owner_references or [])


@dataclass(frozen=True)
class NodeDrain(Fault, kind="node-drain"):
    """Cordon the nodes (named, or matching `selector`) of each target cluster and evict their pods through
    the Eviction API, as `kubectl drain` does: a PodDisruptionBudget that allows no disruption makes the
    eviction wait, and the drain fails when pods are still there after timeout_s. Revert uncordons the
    nodes this fault cordoned (evicted pods come back through their controllers, elsewhere)."""

    permissions: ClassVar[tuple[Permission, ...]] = (
        *verbs("list get patch", "nodes"),
        Permission("list", "pods", namespace=EVERY),
        Permission("create", "pods/eviction", namespace=EVERY),
    )
    nodes: tuple[str, ...] = ()
    selector: str = ""
    grace_period_s: int | None = None
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.nodes or self.selector):
            raise ValueError("node-drain: expected nodes or a node selector, got neither")
        kube.parse_selector(self.selector)

    def inject(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            try:
                names = kube.node_names(api, self.nodes, self.selector)
            except FleetDrillError as exc:
                raise FleetDrillError(f"node-drain in cluster {cluster}: {exc}") from None
            for node in names:
                kube.cordon(api, node, self.key)
            for node in names:
                self._drain(api, cluster, node)

    def revert(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            kube.uncordon_owned(kube.core(ctx.api_client(cluster)), self.key)

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """Every chosen node is unschedulable and runs no pod a drain evicts."""
        found = []
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            for node in kube.node_names(api, self.nodes, self.selector):
                cordoned = bool(
                    api.read_node(node, _request_timeout=kube.REQUEST_TIMEOUT_S).spec.unschedulable
                )
                pods = api.list_pod_for_all_namespaces(
                    field_selector=f"spec.nodeName={node}", _request_timeout=kube.REQUEST_TIMEOUT_S
                ).items
                left = sum(1 for pod in pods if evictable(pod))
                state = "cordoned" if cordoned else "schedulable"
                found.append(
                    Evidence(cordoned and not left, f"{cluster}/{node} {state}, {left} pod(s) to evict")
                )
        return all_of(found)

    def _drain(self, api: Any, cluster: str, node: str) -> None:
        """Evict every evictable pod of the node, retrying those a budget protects, until all are gone."""
        deadline = time.monotonic() + self.timeout_s
        blocked: dict[str, str] = {}
        while True:
            pods = [
                pod
                for pod in api.list_pod_for_all_namespaces(
                    field_selector=f"spec.nodeName={node}", _request_timeout=kube.REQUEST_TIMEOUT_S
                ).items
                if evictable(pod) or pod.metadata.deletion_timestamp is not None
            ]
            if not pods:
                return
            blocked = {}
            for pod in pods:
                if pod.metadata.deletion_timestamp is None:
                    reason = self._evict(api, pod)
                    if reason:
                        blocked[f"{pod.metadata.namespace}/{pod.metadata.name}"] = reason
            if time.monotonic() > deadline:
                left = ", ".join(f"{name} ({why})" for name, why in self._left(pods, blocked).items())
                raise FleetDrillError(
                    f"node-drain in cluster {cluster}: node {node} still runs {left} "
                    f"after {self.timeout_s:.0f} s"
                )
            time.sleep(1.0 if blocked else kube.POLL_S)

    @staticmethod
    def _left(pods: list[Any], blocked: dict[str, str]) -> dict[str, str]:
        """Each pod still on the node, with why: the eviction's refusal, or still terminating."""
        names = [f"{pod.metadata.namespace}/{pod.metadata.name}" for pod in pods]
        return {name: blocked.get(name, "terminating") for name in names}

    def _evict(self, api: Any, pod: Any) -> str:
        """Ask the Eviction API to evict the pod; the reason it refused ("" when it accepted)."""
        meta = V1ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace)
        options = V1DeleteOptions(grace_period_seconds=self.grace_period_s)
        try:
            api.create_namespaced_pod_eviction(
                pod.metadata.name,
                pod.metadata.namespace,
                V1Eviction(metadata=meta, delete_options=options),
                _request_timeout=kube.REQUEST_TIMEOUT_S,
            )
        except ApiException as exc:
            if exc.status == 404:
                return ""
            if exc.status == 429:
                return "a PodDisruptionBudget allows no disruption"
            raise
        return ""


@dataclass(frozen=True)
class NodeLoss(HandsOver, kind="node-loss"):
    """The nodes stop dead through the infrastructure provider (the machine hangs or loses power): the
    Node goes NotReady once the node monitor grace period passes. Revert brings them back, each node's
    restore step given what its lose step returned."""

    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission("get", "leases", "coordination.k8s.io", NODE_LEASES),
    )
    nodes: tuple[str, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        if not are_names(self.nodes):
            raise ValueError(f"node-loss: expected node names, got {self.nodes!r}")
        if len(self.targets) != 1:
            raise ValueError(f"node-loss: expected the one cluster the nodes are in, got {self.targets!r}")

    def inject_handing(self, ctx: FaultContext, handover: Handover) -> None:
        for node in self.nodes:
            handover.keep(node, provider(ctx).run(LOSE_NODE, Target(cluster=self.targets[0], node=node)))

    def revert_handed(self, ctx: FaultContext, handover: Handover) -> None:
        for node in self.nodes:
            on = Target(cluster=self.targets[0], node=node)
            provider(ctx).run(RESTORE_NODE, on, handover.get(node))

    effect_deadline_s = 90.0  # a kubelet renews its Lease every leaseDurationSeconds / 4 (10 s by default)

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """Each node's heartbeat Lease goes stale: not renewed since injection began, for two of its renew
        intervals (a quarter of its duration, as the kubelet renews)."""
        api = kube.coordination(ctx.api_client(self.targets[0]))
        return all_of([_lease_stale(api, node, started.t_wall) for node in self.nodes])


def _lease_stale(api: Any, node: str, started_wall: float) -> Evidence:
    lease = api.read_namespaced_lease(node, NODE_LEASES, _request_timeout=kube.REQUEST_TIMEOUT_S)
    renewed = lease.spec.renew_time.timestamp() if lease.spec.renew_time else 0.0
    interval = (lease.spec.lease_duration_seconds or 40) / 4
    silent = time.time() - max(renewed, started_wall)
    if renewed >= started_wall:
        return Evidence(False, f"node {node} renewed its Lease after the fault began")
    stale = silent >= 2 * interval
    return Evidence(stale, f"node {node}'s Lease not renewed for {time.time() - renewed:.1f} s")
