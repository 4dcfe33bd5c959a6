"""Resources as the kubelet enforces them: memory limits (OOMKilled), node-pressure eviction, the
scheduler's fit against allocatable, and a frozen node."""

import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.utils import parse_quantity

from harness.localfleet import freeze
from harness.localfleet.nodeagent import eviction
from tests.conftest import run_cli, wait_for

CONTEXT = "ap-south"  # the standby cluster: the tests here disturb its nodes the least
LOW_ON_MEMORY = "The node was low on resource: memory. Threshold quantity: 100Mi, available: "
REJECTED = "Pod was rejected: The node had condition: [MemoryPressure]. "
STRESS = "polinux/stress"


@pytest.fixture
def core(api) -> client.CoreV1Api:
    return client.CoreV1Api(api(CONTEXT))


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"resources-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def _pod(name: str, node: str | None = None, **container: object) -> dict:
    """A pod of one container named `name`; pinned to node when given (no scheduler, as with nodeName)."""
    spec: dict = {"terminationGracePeriodSeconds": 1, "containers": [{"name": name, **container}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name}, "spec": spec}


def _quiet_node(core: client.CoreV1Api) -> client.V1Node:
    """The Ready node of the cluster running the fewest pods (ideally none the tests here do not own)."""
    pods = core.list_pod_for_all_namespaces().items
    busy = {
        node.metadata.name: sum(
            p.spec.node_name == node.metadata.name and p.status.phase not in ("Succeeded", "Failed")
            for p in pods
        )
        for node in core.list_node().items
        if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    }
    return core.read_node(min(busy, key=lambda name: (busy[name], name)))


def _condition(node: client.V1Node, kind: str) -> str:
    return next((c.status for c in node.status.conditions or [] if c.type == kind), "")


def _running(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    return core.read_namespaced_pod(name, namespace).status.phase == "Running"


def test_container_over_its_memory_limit_is_oomkilled_and_restarted(core, namespace: str) -> None:
    """The kernel's OOM killer kills stress's memory worker, the largest process of the container (one
    process, as on cgroup v1); stress then ends its failed run, exit code 1, and the kubelet reports the
    container OOMKilled."""
    hog = _pod(
        "hog",
        image=STRESS,
        command=["stress"],
        args=["--vm", "1", "--vm-bytes", "250M", "--vm-hang", "1"],
        resources={"requests": {"memory": "50Mi"}, "limits": {"memory": "100Mi"}},
    )
    core.create_namespaced_pod(namespace, hog)

    def status() -> client.V1ContainerStatus | None:
        statuses = core.read_namespaced_pod("hog", namespace).status.container_statuses
        return statuses[0] if statuses else None

    def oom_killed() -> client.V1ContainerStatus | None:
        found = status()
        last = found and found.last_state and found.last_state.terminated
        return found if last and last.reason == "OOMKilled" and found.restart_count >= 1 else None

    killed = wait_for(oom_killed, 60, "the container to be OOMKilled")
    first_kill = time.monotonic()
    assert killed.last_state.terminated.exit_code == 1
    output = core.read_namespaced_pod_log(
        "hog", namespace, previous=True, _preload_content=False
    ).data.decode()
    assert re.search(r"worker \d+ got signal 9\n", output) and "failed run completed" in output, output
    again = wait_for(
        lambda: (found := status()) and (found.state.running or found.restart_count >= 2),
        30,
        "the OOMKilled container to be restarted (restartPolicy Always)",
    )
    print(f"OOMKilled to running again: {time.monotonic() - first_kill:.1f} s (back-off 10 s)")
    assert again


def test_memory_pressure_evicts_the_pods_over_their_requests(core, namespace: str) -> None:
    node = _quiet_node(core)
    name, allocatable = node.metadata.name, int(parse_quantity(node.status.allocatable["memory"]))
    apps = ("app-a", "app-b")  # BestEffort: over their (zero) requests, so evicted first
    for app in apps:
        core.create_namespaced_pod(namespace, _pod(app, name, image="nginx:1.27"))
    for app in apps:
        wait_for(lambda app=app: _running(core, namespace, app), 60, f"{app} to run")
    mib = 2**20
    stress = _pod(  # under its request (= its limit): evicted only when nothing else is left
        "stress",
        name,
        image=STRESS,
        command=["stress"],
        args=["--vm", "1", "--vm-bytes", f"{(allocatable - 90 * mib) // mib}M", "--vm-hang", "0"],  # held
        resources={"limits": {"memory": f"{(allocatable - 40 * mib) // mib}Mi"}},
    )
    core.create_namespaced_pod(namespace, stress)
    wait_for(lambda: _running(core, namespace, "stress"), 60, "the stress pod to run")
    wait_for(
        lambda: _condition(core.read_node(name), "MemoryPressure") == "True", 30, "MemoryPressure on the node"
    )
    pressure = time.monotonic()
    seen: dict[str, client.V1Pod] = {}

    def all_evicted() -> bool:
        for app in set(apps) - set(seen):
            pod = core.read_namespaced_pod(app, namespace)
            if pod.status.phase == "Failed" and pod.status.reason == "Evicted":
                seen[app] = pod
                print(f"MemoryPressure to {app} evicted: {time.monotonic() - pressure:.1f} s")
        return len(seen) == len(apps)

    wait_for(all_evicted, 60, "both app pods to be evicted")
    core.create_namespaced_pod(namespace, _pod("late", name, image="nginx:1.27"))
    late = wait_for(
        lambda: (pod := core.read_namespaced_pod("late", namespace)).status.phase == "Failed" and pod,
        10,
        "a BestEffort pod to be rejected while the node reports memory pressure",
    )
    assert (late.status.reason, late.status.message) == ("Evicted", REJECTED)
    assert wait_for(
        lambda: any(
            t.key == "node.kubernetes.io/memory-pressure" for t in core.read_node(name).spec.taints or []
        ),
        30,
        "the node lifecycle controller's memory-pressure taint",
    )
    for app, pod in seen.items():
        message = pod.status.message
        assert message.startswith(LOW_ON_MEMORY), message
        assert f"Container {app} was using " in message, message
        assert message.endswith(", request is 0, has larger consumption of memory. "), message
        disruption = next(c for c in pod.status.conditions if c.type == "DisruptionTarget")
        assert (disruption.status, disruption.reason, disruption.message) == (
            "True",
            "TerminationByKubelet",
            message,
        )
        events = core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.uid={pod.metadata.uid},reason=Evicted"
        ).items
        assert [(e.type, e.message, e.source.component) for e in events] == [("Warning", message, "kubelet")]
        annotations = events[0].metadata.annotations
        assert (annotations["offending_containers"], annotations["starved_resource"]) == (app, "memory")
        assert f"was using {annotations['offending_containers_usage']}, " in message
    core.delete_namespaced_pod("stress", namespace, grace_period_seconds=0)
    wait_for(
        lambda: _condition(core.read_node(name), "MemoryPressure") == "False",
        60,
        "the pressure to end after its transition period",
    )


def test_a_pod_bigger_than_any_node_stays_pending(core, namespace: str) -> None:
    core.create_namespaced_pod(
        namespace, _pod("huge", image="nginx:1.27", resources={"requests": {"memory": "64Gi"}})
    )

    def failed_scheduling() -> list[client.CoreV1Event]:
        return core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=huge,reason=FailedScheduling"
        ).items

    event = wait_for(failed_scheduling, 30, "a FailedScheduling event")[0]
    assert "Insufficient memory" in event.message, event.message
    assert core.read_namespaced_pod("huge", namespace).status.phase == "Pending"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def test_a_frozen_node_goes_not_ready_and_thaws(core, namespace: str, fleet_dir: Path) -> None:
    node = _quiet_node(core).metadata.name
    web = _pod("web", node, image="python:3.11", command=["python3", "-m", "http.server", "8080"])
    core.create_namespaced_pod(namespace, web)
    wait_for(lambda: core.read_namespaced_pod("web", namespace).status.pod_ip, 60, "the web pod's address")
    url = f"http://{core.read_namespaced_pod('web', namespace).status.pod_ip}:8080/"
    wait_for(lambda: _answers(url), 30, "the web pod to answer")
    frozen = time.monotonic()
    run_cli("fleet", "freeze", "--dir", fleet_dir, node)
    try:
        assert not _answers(url), "a frozen pod does not answer"
        wait_for(
            lambda: _condition(core.read_node(node), "Ready") != "True", 40, "the frozen node to be NotReady"
        )
        print(f"freeze to NotReady: {time.monotonic() - frozen:.1f} s")
    finally:
        run_cli("fleet", "thaw", "--dir", fleet_dir, node)
    thawed = time.monotonic()
    wait_for(lambda: _condition(core.read_node(node), "Ready") == "True", 30, "the thawed node to be Ready")
    print(f"thaw to Ready: {time.monotonic() - thawed:.1f} s")
    assert wait_for(lambda: _answers(url), 10, "the thawed pod to answer again")


@pytest.mark.parametrize(
    ("value", "printed"),
    [(0, "0"), (1023, "1023"), (104857600, "100Mi"), (73486336, "71764Ki"), (104857601, "104857601")],
)
def test_quantities_print_as_the_kubelet_prints_them(value: int, printed: str) -> None:
    assert eviction.binary(value) == printed


def test_losing_a_cluster_with_a_frozen_node_thaws_it_first(core, fleet_dir: Path) -> None:
    """Frozen processes cannot die: `fleet stop` thaws the cluster's frozen nodes, then kills everything."""
    node = _quiet_node(core).metadata.name
    cluster = core.read_node(node).metadata.labels["topology.kubernetes.io/region"]
    run_cli("fleet", "freeze", "--dir", fleet_dir, node)
    try:
        run_cli("fleet", "stop", cluster, "--dir", fleet_dir)
        assert node not in freeze.frozen(fleet_dir), "the stop thawed the node it killed"
    finally:
        run_cli("fleet", "start", cluster, "--dir", fleet_dir)
    wait_for(
        lambda: _condition(core.read_node(node), "Ready") == "True", 60, "the node back after the return"
    )
