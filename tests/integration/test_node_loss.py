"""Losing nodes as the real node lifecycle and taint-eviction controllers handle it: a frozen node goes
Ready=Unknown, its pods are marked not ready and leave the EndpointSlice's ready endpoints, and the
taint manager evicts them once their toleration runs out, so the Deployment replaces them elsewhere;
with every node of a cluster frozen, the controller's full-disruption rule evicts nothing.

Both tests freeze nodes of the shared fleet, thaw them on every exit path and wait until they are Ready
again. Each waits out the fleet's node-monitor grace period (20 s, LocalTimings) at least once."""

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from harness.localfleet import freeze
from harness.localfleet.state import FleetState
from tests.conftest import wait_for
from tests.integration.test_workloads import (
    APP,
    app_container,
    app_status,
    deployment,
    is_ready,
    namespace_in,
    pod_off_the_fleet_app,
)

ONE_NODE_CONTEXT, ALL_NODES_CONTEXT = "eu-west", "ap-south"
UNREACHABLE = "node.kubernetes.io/unreachable"
EVICT_AFTER_S = 2  # the test pods' toleration of a lost node, instead of the fleet's default 30 s
HOLD_S = 18  # full disruption: longer than the test pod's node is tainted before the last goes (4-10 s seen)
NODE_LOST_S = 45  # grace period 20 s, monitor period 2 s, a busy machine
DISRUPTION_MODE = "Controller detected that all Nodes are not-Ready. Entering master disruption mode"


def tolerations(seconds: int) -> list[dict]:
    """Tolerate a not-ready or unreachable node for `seconds`, then be evicted by the taint manager."""
    return [
        {
            "key": f"node.kubernetes.io/{key}",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": seconds,
        }
        for key in ("unreachable", "not-ready")
    ]


def ready_condition(node: client.V1Node) -> str:
    return next((c.status for c in node.status.conditions or [] if c.type == "Ready"), "")


def node_is_ready(core: client.CoreV1Api, node: str) -> Callable[[], bool]:
    return lambda: ready_condition(core.read_node(node)) == "True"


def no_execute(node: client.V1Node) -> set[str]:
    return {t.key for t in node.spec.taints or [] if t.effect == "NoExecute"}


def ready_addresses(discovery: client.DiscoveryV1Api, namespace: str) -> set[str]:
    slices = discovery.list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={APP}"
    )
    return {a for s in slices.items for e in s.endpoints or [] if e.conditions.ready for a in e.addresses}


def live_ready(core: client.CoreV1Api, namespace: str, lost: set[str]) -> Callable[[], list[client.V1Pod]]:
    """A wait_for condition: three Ready app pods, not terminating, none of them a `lost` one."""

    def check() -> list[client.V1Pod]:
        pods = core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items
        live = [p for p in pods if not p.metadata.deletion_timestamp and p.metadata.uid not in lost]
        return live if len(live) == 3 and all(is_ready(p) for p in live) else []

    return check


class FrozenNodes:
    """Nodes this test froze; thaw() lets them run again and waits until each is Ready."""

    def __init__(self, state: FleetState) -> None:
        self.state = state
        self.nodes: list[tuple[client.CoreV1Api, str]] = []

    def freeze(self, core: client.CoreV1Api, node: str) -> None:
        self.nodes.append((core, node))
        freeze.freeze(self.state, node)

    def thaw(self) -> None:
        thawed, self.nodes = self.nodes, []
        for _, node in thawed:
            freeze.thaw(self.state, node)
        for core, node in thawed:
            wait_for(node_is_ready(core, node), 60, f"thawed {node} to be Ready")


@pytest.fixture
def frozen(fleet_dir: Path) -> Iterator[FrozenNodes]:
    """Freeze nodes through this; whatever happens, they are thawed and Ready again when the test ends."""
    nodes = FrozenNodes(FleetState.load(fleet_dir))
    try:
        yield nodes
    finally:
        nodes.thaw()


@pytest.fixture
def one_node(api) -> client.CoreV1Api:
    return client.CoreV1Api(api(ONE_NODE_CONTEXT))


@pytest.fixture
def lost_namespace(one_node: client.CoreV1Api) -> Iterator[str]:
    with namespace_in(one_node, "node-lost") as name:
        yield name


def test_a_frozen_nodes_pods_are_marked_not_ready_evicted_and_replaced(
    api, one_node, lost_namespace: str, frozen: FrozenNodes
) -> None:
    core, namespace, discovery = one_node, lost_namespace, client.DiscoveryV1Api(api(ONE_NODE_CONTEXT))
    spec = deployment(3, app_container(namespace), tolerations=tolerations(EVICT_AFTER_S))
    client.AppsV1Api(api(ONE_NODE_CONTEXT)).create_namespaced_deployment(namespace, spec)
    service = {"selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 8080}]}
    core.create_namespaced_service(namespace, {"metadata": {"name": APP}, "spec": service})
    pods = wait_for(live_ready(core, namespace, set()), 60, "three Ready pods")
    addresses = {p.status.pod_ip for p in pods}
    wait_for(lambda: ready_addresses(discovery, namespace) == addresses, 30, "three ready endpoints")
    victim = pod_off_the_fleet_app(core, pods)
    node, name = victim.spec.node_name, victim.metadata.name
    start = time.monotonic()
    frozen.freeze(core, node)
    wait_for(
        lambda: ready_condition(core.read_node(node)) == "Unknown", NODE_LOST_S, "the node to go Unknown"
    )
    print(f"freeze to Ready=Unknown: {time.monotonic() - start:.1f} s")
    wait_for(
        lambda: not is_ready(core.read_namespaced_pod(name, namespace)), 15, "the pod to be marked not ready"
    )
    wait_for(
        lambda: ready_addresses(discovery, namespace) == addresses - {victim.status.pod_ip},
        15,
        "the EndpointSlice to drop the pod from its ready endpoints",
    )
    wait_for(lambda: UNREACHABLE in no_execute(core.read_node(node)), 15, "the unreachable:NoExecute taint")
    evicted = wait_for(
        lambda: (pod := core.read_namespaced_pod(name, namespace)).metadata.deletion_timestamp and pod,
        EVICT_AFTER_S + 15,
        "the taint manager to evict the pod once its toleration ran out",
    )
    print(f"freeze to eviction: {time.monotonic() - start:.1f} s")
    reason = next(c.reason for c in evicted.status.conditions if c.type == "DisruptionTarget")
    assert reason == "DeletionByTaintManager", reason
    live = wait_for(live_ready(core, namespace, {victim.metadata.uid}), 30, "the replacement to be Ready")
    print(f"freeze to replacement Ready: {time.monotonic() - start:.1f} s")
    assert node not in {p.spec.node_name for p in live}, "the replacement went to the lost node"
    for pod in live:
        assert wait_for(lambda pod=pod: app_status(pod.status.pod_ip), 10, f"{pod.metadata.name} to answer")
    wait_for(
        lambda: ready_addresses(discovery, namespace) == {p.status.pod_ip for p in live},
        15,
        "the EndpointSlice's ready endpoints to be the three live pods",
    )
    print(f"freeze to the EndpointSlice's ready endpoints back to three: {time.monotonic() - start:.1f} s")


@pytest.fixture
def all_nodes(api) -> client.CoreV1Api:
    return client.CoreV1Api(api(ALL_NODES_CONTEXT))


@pytest.fixture
def disrupted_namespace(all_nodes: client.CoreV1Api) -> Iterator[str]:
    with namespace_in(all_nodes, "disruption") as name:
        yield name


def _renewed(leases: client.CoordinationV1Api, node: str) -> float:
    """When the node's agent last renewed its Lease (wall clock, seconds)."""
    return leases.read_namespaced_lease(node, "kube-node-lease").spec.renew_time.timestamp()


def _survivors(core: client.CoreV1Api) -> dict[str, str]:
    """uid -> namespace/name of every pod of the cluster that runs."""
    pods = core.list_pod_for_all_namespaces().items
    return {
        p.metadata.uid: f"{p.metadata.namespace}/{p.metadata.name}"
        for p in pods
        if p.status.phase == "Running" and not p.metadata.deletion_timestamp
    }


def _evicted(core: client.CoreV1Api, before: dict[str, str]) -> list[str]:
    """Those of `before` that are gone, terminating, or marked as a disruption target."""
    pods = {p.metadata.uid: p for p in core.list_pod_for_all_namespaces().items}
    return [
        name
        for uid, name in before.items()
        if uid not in pods
        or pods[uid].metadata.deletion_timestamp
        or any(c.type == "DisruptionTarget" for c in pods[uid].status.conditions or [])
    ]


def _freeze_in_order(
    frozen: FrozenNodes, core: client.CoreV1Api, leases: client.CoordinationV1Api, *nodes: str
) -> None:
    """Freeze the first node now, the second just after its next Lease renewal, the third once it renewed
    2.5 s after that (agent and test share the wall clock): the node monitor (2 s period) then sees the
    third go quiet in a later pass than the others."""
    first, second, third = nodes
    frozen.freeze(core, first)
    renewed = _renewed(leases, second)
    wait_for(lambda: _renewed(leases, second) > renewed, 15, f"{second}'s next Lease renewal")
    frozen.freeze(core, second)
    second_at = time.time()
    wait_for(lambda: _renewed(leases, third) > second_at + 2.5, 15, f"{third} to renew a pass later")
    frozen.freeze(core, third)


def _every_node_unknown(core: client.CoreV1Api, watched: str) -> tuple[float, float | None]:
    """Wait until every node is Ready=Unknown; return when (monotonic), and when `watched` was first seen
    with the unreachable NoExecute taint (None if never)."""
    tainted_at: float | None = None

    def every_node_unknown() -> bool:
        nonlocal tainted_at
        nodes = {n.metadata.name: n for n in core.list_node().items}
        if tainted_at is None and UNREACHABLE in no_execute(nodes[watched]):
            tainted_at = time.monotonic()
        return all(ready_condition(n) == "Unknown" for n in nodes.values())

    wait_for(every_node_unknown, NODE_LOST_S, "every node to go Unknown", interval_s=0.2)
    return time.monotonic(), tainted_at


def test_freezing_every_node_of_a_cluster_evicts_nothing(
    api, all_nodes, disrupted_namespace: str, frozen: FrozenNodes, fleet_dir: Path
) -> None:
    """The node lifecycle controller's full-disruption rule: once no zone has a Ready node it removes the
    NoExecute taints and stops tainting, so the taint manager evicts nothing, however short the pods'
    tolerations. The nodes are frozen so that the node carrying the test pod is not the last to go quiet:
    the node that goes Unknown in the very pass that detects the full disruption can keep its taint
    (kubernetes/kubernetes#111385, a race in the real controller)."""
    core, namespace = all_nodes, disrupted_namespace
    leases = client.CoordinationV1Api(api(ALL_NODES_CONTEXT))
    first, watched, last = sorted(n.metadata.name for n in core.list_node().items)
    pinned = deployment(1, app_container(namespace), nodeName=watched, tolerations=tolerations(HOLD_S))
    pod = {**pinned["spec"]["template"], "metadata": {"name": APP, "labels": {"app": APP}}}
    core.create_namespaced_pod(namespace, pod)
    wait_for(lambda: is_ready(core.read_namespaced_pod(APP, namespace)), 60, "the test pod to be Ready")
    before = _survivors(core)
    log = fleet_dir / "logs" / ALL_NODES_CONTEXT / "kube-controller-manager.log"
    log_offset = log.stat().st_size
    start = time.monotonic()
    _freeze_in_order(frozen, core, leases, first, watched, last)
    all_lost, tainted_at = _every_node_unknown(core, watched)
    exposed = all_lost - (tainted_at or all_lost)
    print(
        f"first freeze to every node Unknown: {all_lost - start:.1f} s; {watched} tainted for {exposed:.1f} s"
    )
    assert exposed < HOLD_S - 3, (
        f"{watched} was tainted {exposed:.1f} s before the last node went quiet: its {HOLD_S} s toleration "
        "may run out before the full disruption, so this run cannot judge the rule"
    )
    assert not is_ready(core.read_namespaced_pod(APP, namespace)), "the controller marks the pods not ready"
    hold_until = all_lost - exposed + HOLD_S + 3  # a taint that stayed would have evicted by then

    def nothing_evicted() -> bool:
        evicted = _evicted(core, before)
        assert not evicted, (
            f"pods evicted although every node of {ALL_NODES_CONTEXT} is down, which the full-disruption "
            f"rule forbids: {evicted}"
        )
        return time.monotonic() > hold_until

    wait_for(nothing_evicted, HOLD_S + 10, f"{HOLD_S} s of tolerations to run out", interval_s=0.5)
    taints = {n.metadata.name: no_execute(n) for n in core.list_node().items}
    print(f"NoExecute taints in full disruption: {taints} ({last} went Unknown last)")
    assert not taints[first] | taints[watched], (
        f"the controller keeps NoExecute taints although every node is down: {taints}"
    )
    with log.open() as lines:
        lines.seek(log_offset)
        assert DISRUPTION_MODE in lines.read(), f"kube-controller-manager did not log {DISRUPTION_MODE!r}"
    frozen.thaw()  # and wait until every node is Ready again
    thawed = time.monotonic()
    wait_for(lambda: is_ready(core.read_namespaced_pod(APP, namespace)), 30, "the test pod to be Ready again")
    print(f"thaw to the test pod Ready again: {time.monotonic() - thawed:.1f} s")
    assert not _evicted(core, before), f"evicted after the thaw: {_evicted(core, before)}"
    restarts = core.read_namespaced_pod(APP, namespace).status.container_statuses[0].restart_count
    assert restarts == 0, "the frozen pod resumes where it stopped: no restart"
